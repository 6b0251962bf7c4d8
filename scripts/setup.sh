#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages the build and the tests need; does nothing when all are present.
set -euo pipefail

# Open MPI: the tests of stages across processes (label mpi) and <tandem/distributed.hpp>.
packages=(cmake g++ doctest-dev libeigen3-dev python3-torch python3-numpy clang-format libopenmpi-dev openmpi-bin)

if ! command -v dpkg >/dev/null 2>&1; then
  echo "setup.sh: no dpkg here; install these yourself: ${packages[*]}" >&2
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  # `dpkg -s` also succeeds for removed packages that left config files: check the status line.
  dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: missing ${missing[*]}, and neither root nor sudo is available to install them" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
