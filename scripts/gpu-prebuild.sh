#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds, on a machine without a GPU, everything scripts/gpu-check.sh runs on one: the targets of the
# tests labelled gpu, example 01's CUDA build and the step benchmarks, for sm_90, in build/gpu. Lent
# GPU time is short and compile time here is not, so the folder is compiled here and carried:
#
#   scripts/gpu-prebuild.sh                       (here; prints the size that will travel)
#   GPU_CHECK_PREBUILT=1 scripts/gpu-check.sh build/gpu     (there, with build/gpu carried)
#
# The reference tests call `python3` from PATH, which on the GPU machine is the one with PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/gpu
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# Host products on Eigen: the binaries travel to a machine that may have no OpenBLAS.
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DTANDEM_TORCH_PYTHON=python3 -DTANDEM_HOST_BLAS=OFF >/dev/null
targets=(tandem_cuda_tests example_01_seed_model_parallel_cuda tandem_reference_cuda bench_gpu_step
  bench_host_seed_step)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
# What travels: the binaries and CTest's files; the object files stay behind (see the carry note in
# gpu-check.sh's usage). Report the size against the 64 MiB a call may carry.
du -sh "$build"
