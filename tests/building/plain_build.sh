#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds a user program without CMake, with the command lines docs/building.md
# gives, and fails on any warning from tandem's headers (g++: on any warning at all, -Werror).
#   plain_build.sh gxx  <g++>     <tandem include dir> <Eigen include dir> <source> <work dir>
#   plain_build.sh nvcc <nvcc>    <tandem include dir> <Eigen include dir> <source> <work dir>
#   plain_build.sh mpi  <mpiexec> <tandem include dir> <Eigen include dir> <source> <work dir>
# g++ builds, links and runs the program; nvcc builds and links it (running needs a GPU or falls
# back to the host, which the g++ run already covers); mpi builds it with g++ and the flags
# `mpicxx --showme` gives, and runs it on 2 ranks.
set -euo pipefail
kind=$1 compiler=$2 tandem=$3 eigen=$4 source=$5 work=$6
mkdir -p "$work"
log=$work/$kind.log
case $kind in
gxx)
  # The documented line: -isystem keeps Eigen's own warnings out of -Werror.
  "$compiler" -std=c++20 -O2 -Wall -Wextra -Wpedantic -Werror -I "$tandem" -isystem "$eigen" "$source" \
    -o "$work/program_gxx" -pthread 2>&1 | tee "$log"
  "$work/program_gxx" "$work/checkpoint_gxx"
  ;;
mpi)
  # shellcheck disable=SC2046 # mpicxx's flags are words
  g++ -std=c++20 -O2 -Wall -Wextra -Wpedantic -Werror -I "$tandem" -isystem "$eigen" $(mpicxx --showme:compile) \
    "$source" -o "$work/program_mpi" -pthread $(mpicxx --showme:link) 2>&1 | tee "$log"
  "$compiler" -n 2 "$work/program_mpi"
  ;;
nvcc)
  "$compiler" -std=c++20 -O3 -Xcompiler -O3 -arch=sm_90 -x cu -DEIGEN_NO_CUDA -I "$tandem" -isystem "$eigen" \
    "$source" -o "$work/program_nvcc" -lcublas -lcublasLt 2>&1 | tee "$log"
  if grep -n "warning" "$log" | grep -q "$tandem"; then
    echo "FAILED: warnings from tandem's headers (above)" >&2
    exit 1
  fi
  ;;
*)
  echo "unknown kind '$kind'" >&2
  exit 2
  ;;
esac
echo "built without CMake: $kind"
