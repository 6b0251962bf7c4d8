#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A compiler launcher that logs each compile's CPU seconds, steadier than ninja's wall times when
# other work shares the cores. Configure with
#   -DCMAKE_CXX_COMPILER_LAUNCHER="scripts/cpu-time-launcher.sh;LOG" (and CMAKE_CUDA_COMPILER_LAUNCHER)
# and each compile appends "<object> <user+sys seconds> <wall seconds>" to LOG.
log=$1
shift
out=?
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do
  [[ ${args[$i]} == -o ]] && out=${args[$((i + 1))]}
done
times=$(mktemp)
/usr/bin/time -f "%U %S %e" -o "$times" "$@"
rc=$?
awk -v o="$out" '{ printf "%s %.2f %.2f\n", o, $1 + $2, $3 }' "$times" >>"$log"
rm -f "$times"
exit $rc
