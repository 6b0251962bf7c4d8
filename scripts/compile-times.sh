#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Compile times of tandem against Eigen, side by side, best of N (default 3) runs of each:
#   include    a file holding only #include <tandem/tandem.hpp>, g++ -fsyntax-only, over one
#              holding only #include <Eigen/Core>
#   example01  examples/01_seed_model_parallel/main.cpp at g++ -O2 -c, over bench/one_gemm.cpp
#   example01c the same as a program linked with tandem::compiled compiles it (-DTANDEM_COMPILED),
#              over bench/one_gemm.cpp (src/compiled.cpp, compiled once, is not counted)
#   nvcc01     examples/01_seed_model_parallel/main.cu with the flags CMake gives it (no ratio:
#              compare it with another tree's); nvcc01c the same with -DTANDEM_COMPILED
# Usage: scripts/compile-times.sh [OTHER_TREE...]   e.g. scripts/compile-times.sh ../base
# Each tree given (the working tree first) is measured in the same rounds, runs interleaved, so a
# busy machine slows all alike. Wall seconds and CPU seconds (user + sys; steadier when other
# work shares the cores) are printed; ratios use the best of each. RUNS=N, NVCC=0 skip nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
trees=("$here" "$@")
runs=${RUNS:-3}
eigen=${EIGEN_INCLUDE:-/usr/include/eigen3}
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ ${NVCC:-} == 0 || ! -x $nvcc ]] && nvcc=""
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo '#include <tandem/tandem.hpp>' >"$scratch/tandem.cpp"
echo '#include <Eigen/Core>' >"$scratch/eigen.cpp"

# time_of NAME COMMAND...: one run; appends "NAME wall cpu" to the results.
time_of() {
  local name=$1
  shift
  /usr/bin/time -f "$name %e %U %S" -o "$scratch/t" "$@" >/dev/null 2>"$scratch/err" || {
    cat "$scratch/err" >&2
    echo "compile-times.sh: $name failed" >&2
    exit 1
  }
  awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$scratch/t" >>"$scratch/results"
}

gxx=(g++ -std=c++20 -isystem "$eigen")
for ((r = 1; r <= runs; ++r)); do
  time_of eigen.core "${gxx[@]}" -fsyntax-only "$scratch/eigen.cpp"
  time_of eigen.gemm "${gxx[@]}" -O2 -c bench/one_gemm.cpp -o "$scratch/o"
  for i in "${!trees[@]}"; do
    t=${trees[$i]}
    time_of "tree$i.include" "${gxx[@]}" -I "$t/include" -fsyntax-only "$scratch/tandem.cpp"
    time_of "tree$i.example01" "${gxx[@]}" -I "$t/include" -O2 -c "$t/examples/01_seed_model_parallel/main.cpp" -o "$scratch/o"
    if [[ -f $t/src/compiled.cpp ]]; then
      time_of "tree$i.example01c" "${gxx[@]}" -I "$t/include" -DTANDEM_COMPILED -O2 -c \
        "$t/examples/01_seed_model_parallel/main.cpp" -o "$scratch/o"
    fi
    if [[ -n $nvcc ]]; then
      # As CMakeLists.txt and cmake/TandemTesting.cmake compile a .cu example (Release, sm_90).
      time_of "tree$i.nvcc01" "$nvcc" -DEIGEN_NO_CUDA -I "$t/include" -isystem="$eigen" -O3 -DNDEBUG \
        --generate-code=arch=compute_90,code=[compute_90,sm_90] -Xcompiler=-Wall -std=c++20 \
        --expt-relaxed-constexpr --extended-lambda -c "$t/examples/01_seed_model_parallel/main.cu" -o "$scratch/o"
      if [[ -f $t/src/compiled.cpp ]]; then
        time_of "tree$i.nvcc01c" "$nvcc" -DEIGEN_NO_CUDA -DTANDEM_COMPILED -I "$t/include" -isystem="$eigen" -O3 \
          -DNDEBUG --generate-code=arch=compute_90,code=[compute_90,sm_90] -Xcompiler=-Wall -std=c++20 \
          --expt-relaxed-constexpr --extended-lambda -c "$t/examples/01_seed_model_parallel/main.cu" -o "$scratch/o"
      fi
    fi
  done
done

# best NAME FIELD (2 wall, 3 cpu)
best() { awk -v n="$1" -v f="$2" '$1 == n { if (b == "" || $f < b) b = $f } END { print b }' "$scratch/results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-52s %9s %9s\n' "best of $runs (seconds)" wall cpu
printf '%-52s %9s %9s\n' "#include <Eigen/Core>, -fsyntax-only" "$(best eigen.core 2)" "$(best eigen.core 3)"
printf '%-52s %9s %9s\n' "bench/one_gemm.cpp, -O2 -c" "$(best eigen.gemm 2)" "$(best eigen.gemm 3)"
for i in "${!trees[@]}"; do
  echo "${trees[$i]} ($(git -C "${trees[$i]}" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  for m in include example01 example01c nvcc01 nvcc01c; do
    w=$(best "tree$i.$m" 2)
    [[ -z $w ]] && continue
    c=$(best "tree$i.$m" 3)
    case $m in
    include) what="  #include <tandem/tandem.hpp>, -fsyntax-only" base=eigen.core ;;
    example01) what="  example 01, -O2 -c" base=eigen.gemm ;;
    example01c) what="  example 01, -O2 -c, with tandem::compiled" base=eigen.gemm ;;
    nvcc01) what="  example 01, nvcc" base="" ;;
    nvcc01c) what="  example 01, nvcc, with tandem::compiled" base="" ;;
    esac
    line=$(printf '%-52s %9s %9s' "$what" "$w" "$c")
    if [[ -n $base ]]; then
      line+="   ratio wall $(ratio "$w" "$(best $base 2)")x, cpu $(ratio "$c" "$(best $base 3)")x"
    fi
    echo "$line"
  done
done
