#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds and runs example 01, the seed's model-parallel experiment. Arguments go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/configure.sh
build_dir=${TANDEM_BUILD_DIR:-build}
cmake --build "$build_dir" --parallel "$(nproc 2>/dev/null || echo 2)" --target example_01_seed_model_parallel
exec "$build_dir/example_01_seed_model_parallel" "$@"
