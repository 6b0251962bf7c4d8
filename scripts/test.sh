#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: set up, configure, build everything, run every test this machine can run
# (all of them with a GPU, all but label gpu without). Extra arguments go to ctest, e.g. -L compile_fail.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/configure.sh
build_dir=${TANDEM_BUILD_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build "$build_dir" --parallel "$jobs"

ctest_args=(--test-dir "$build_dir" --output-on-failure --parallel "$jobs")
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test.sh: no GPU (nvidia-smi -L failed): skipping tests labelled gpu"
  ctest_args+=(-LE gpu)
fi
ctest "${ctest_args[@]}" "$@"
