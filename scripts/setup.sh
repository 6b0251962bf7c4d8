#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages the build and the tests need, and the Python package safetensors
# (PyPI: Debian bookworm has none) for the checkpoint reference tests; does nothing when all are present.
set -euo pipefail

packages=(cmake g++ doctest-dev libeigen3-dev python3-torch python3-numpy clang-format
          nlohmann-json3-dev zlib1g-dev python3-sklearn python3-pip
          libopenmpi-dev openmpi-bin # Open MPI: <tandem/distributed.hpp> and the tests labelled mpi
          fortunes               # example 06 trains a character-level GPT on its English text
          libopenblas-dev)       # the host backend's products (TANDEM_HOST_BLAS), and PyTorch's: Debian's torch
                                 # uses libblas.so.3, which this makes OpenBLAS instead of the reference BLAS
# The version the reference tests were checked with (torch 1.13, numpy 1.24).
safetensors_version=0.8.0

if ! command -v dpkg >/dev/null 2>&1; then
  echo "setup.sh: no dpkg here; install these yourself: ${packages[*]}" >&2
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  # `dpkg -s` also succeeds for removed packages that left config files: check the status line.
  dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$package")
done
# Debian's Python, the one with python3-torch (a pyenv python3 on PATH may lack it).
python=/usr/bin/python3
need_safetensors=false
if ! "$python" -c 'import safetensors.torch' >/dev/null 2>&1; then
  need_safetensors=true
fi
if [[ ${#missing[@]} -eq 0 && $need_safetensors == false ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  wanted=("${missing[@]}")
  [[ $need_safetensors == true ]] && wanted+=("safetensors (PyPI)")
  echo "setup.sh: missing ${wanted[*]}, and neither root nor sudo is available to install them" >&2
  exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup.sh: installing ${missing[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [[ $need_safetensors == true ]]; then
  # Into Debian's Python beside python3-torch; PEP 668 makes pip ask for that explicitly.
  echo "setup.sh: installing safetensors==$safetensors_version from PyPI for $python"
  "${as_root[@]}" env PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --no-cache-dir --disable-pip-version-check \
    "safetensors==$safetensors_version"
fi
