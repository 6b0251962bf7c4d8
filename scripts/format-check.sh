#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fails if any C++/CUDA source differs from what clang-format (.clang-format) would write.
# To fix: scripts/format-check.sh --fix
set -euo pipefail
cd "$(dirname "$0")/.."

clang_format=${CLANG_FORMAT:-clang-format}
mode=(--dry-run -Werror)
if [[ ${1:-} == --fix ]]; then
  mode=(-i)
fi

dirs=()
for dir in include src tests examples bench; do
  [[ -d $dir ]] && dirs+=("$dir")
done
[[ ${#dirs[@]} -eq 0 ]] && exit 0
find "${dirs[@]}" -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) -print0 |
  xargs -0 --no-run-if-empty "$clang_format" "${mode[@]}"
