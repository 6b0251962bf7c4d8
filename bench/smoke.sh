#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The benchmark harness end to end on the host, in seconds: bench_gpu_step on the host backend
# (--allow-host), bench/torch_gpu_step.py on the CPU and bench/compare.py over both, as
# scripts/gpu-check.sh runs them on a GPU, so that a lent GPU is not the first to find the harness
# broken. No timing is judged: the test asks for a ratio on every row.
#
#   bench/smoke.sh BENCH_GPU_STEP PYTHON_WITH_TORCH OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=$1 py=$2 out=$3
if [[ -z $py || $py == *NOTFOUND ]]; then
  echo "bench smoke: skipped: no Python with torch (install python3-torch, or set TANDEM_TORCH_PYTHON)"
  exit 77
fi
mkdir -p "$out"
ids=seed,seed_gpipe4,mlp256
small=(--only "$ids" --steps 5 --warmup 1 --seconds 1 --batch-div 8)
"$bench" --allow-host "${small[@]}" --repeat 2 --json "$out/tandem.json"
"$py" "$here/torch_gpu_step.py" --device cpu "${small[@]}" --json "$out/torch.json"
"$py" "$here/compare.py" "$out/tandem.json" "$out/torch.json" --markdown "$out/table.md"
# Three workloads, each issued and captured: six rows, each with PyTorch's eager step beside it.
rows=$(awk -F'|' '/^\| (seed|MLP)/ && $8 ~ /[0-9.]+x/ {n++} END {print n + 0}' "$out/table.md")
if [[ $rows != 6 ]]; then
  echo "bench smoke: $rows of 6 rows have a ratio in $out/table.md" >&2
  exit 1
fi
echo "bench smoke: 6 rows, each with its ratio"
