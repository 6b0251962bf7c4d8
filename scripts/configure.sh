#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures the build tree (default build/) the way the test and example scripts expect:
# Release, Ninja when available, CUDA architecture 90 (override with CUDA_ARCHITECTURES) when
# nvcc exists. Extra arguments go to cmake, e.g. scripts/configure.sh -DTANDEM_ENABLE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${TANDEM_BUILD_DIR:-build}
args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release)
# The generator is fixed when a build tree is created; naming it again for another would fail.
if [[ ! -f $build_dir/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1; then
  args+=(-G Ninja)
fi
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  args+=("-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90}")
fi
# In CI the PyTorch parity tests must run, never quietly skip for want of torch, and a warning in
# tandem's own code fails the build.
if [[ ${CI:-} == true ]]; then
  args+=(-DTANDEM_REQUIRE_TORCH=ON -DTANDEM_WARNINGS_AS_ERRORS=ON)
fi
cmake "${args[@]}" "$@"
