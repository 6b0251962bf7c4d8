#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Everything a GPU can check, in one call, on a machine that may be offline: configure and build for
# sm_90 with all cores, run every test (the `gpu` label included), run compute-sanitizer (memcheck
# and racecheck) on the GPU tests and on example 01, run the benchmarks if any, and print a short
# table last. Needs the CUDA toolkit and CMake; Eigen and doctest come from .deb/ (fetched
# beforehand by scripts/fetch-debs.sh) when they are not installed.
#
#   scripts/gpu-check.sh [build-dir]      (default: build-gpu)
#
# Every step runs under a time limit and the script carries on after a failure, so the table
# reports all of them; the exit status is 0 only if every step passed. The whole run stays within
# 9 minutes: a step left without time is reported as failed (skipped). Environment:
#   GPU_CHECK_TIME_SCALE=N   multiply every time limit by N (a machine slower than 16 cores)
#   GPU_CHECK_USE_DEBS=1     unpack .deb/ even where Eigen and doctest are installed
#   GPU_CHECK_BUDGET=S       seconds for the whole run (default 540)
#   GPU_CHECK_BENCH_SECONDS=S  cap on each benchmark workload's timed steps (default 10), shared by
#                            its runs
#   GPU_CHECK_BENCH_REPEAT=N runs of each GPU workload, taking turns (default 3): the table shows the
#                            median run and every run's median
#   GPU_CHECK_SANITIZERS="memcheck racecheck"  the compute-sanitizer tools to run (default both)
#   GPU_CHECK_PREBUILT=1     the build folder was built elsewhere (scripts/gpu-prebuild.sh, on a machine
#                            without a GPU) and carried here: skip configure and build, run its gpu tests,
#                            examples, sanitizers and benchmarks. Device time is scarce; compile time is not.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
build=${1:-build-gpu}
[[ $build == /* ]] || build=$root/$build
logs=$build/gpu-check-logs
mkdir -p "$logs"
jobs=$(nproc 2>/dev/null || echo 4)
# Time limits fit a 16-core machine; GPU_CHECK_TIME_SCALE multiplies them all on a slower one.
scale=${GPU_CHECK_TIME_SCALE:-1}
budget=$((${GPU_CHECK_BUDGET:-540} * scale)) # seconds for the whole run
bench_seconds=${GPU_CHECK_BENCH_SECONDS:-10}
bench_repeat=${GPU_CHECK_BENCH_REPEAT:-3}
bench_run_seconds=$(awk -v s="$bench_seconds" -v r="$bench_repeat" 'BEGIN { printf "%.3g", s / (r > 0 ? r : 1) }')
# bench_gpu_step times 9 workloads, each issued and captured, each capped at bench_seconds in all;
# the rest is warm-up, set-up and tuning.
bench_limit=$(awk -v s="$bench_seconds" 'BEGIN { printf "%d", 60 + 18 * s }')
declare -a rows=()
status=0

row() { rows+=("$(printf '%-28s %s' "$1" "$2")"); }
fail() {
  row "$1" "FAIL: $2"
  status=1
}
left() { echo $((budget - SECONDS)); }
# Runs "$@" with at most $1 seconds (less if the budget is nearly spent); logs to $logs/$name.log.
step() {
  local name=$1 limit=$(($2 * scale))
  shift 2
  local remaining
  remaining=$(left)
  ((remaining < limit)) && limit=$remaining
  if ((limit < 10)); then
    echo "gpu-check: skipping $name (time budget spent)" | tee "$logs/$name.log"
    return 124
  fi
  echo "gpu-check: $name (at most ${limit}s; log $logs/$name.log)"
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.log" 2>&1
}

# --- the machine ---------------------------------------------------------------------------------
device="none found"
if command -v nvidia-smi >/dev/null 2>&1; then
  names=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)
  if [[ -n $names ]]; then
    device="$(head -n1 <<<"$names") x $(wc -l <<<"$names")"
  fi
fi
echo "gpu-check: device: $device; $jobs cores"

nvcc=""
for candidate in "${CUDACXX:-}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc; do
  if [[ -n $candidate && -x $candidate ]]; then
    nvcc=$candidate
    break
  fi
done
sanitizer=""
for candidate in "$(command -v compute-sanitizer 2>/dev/null)" "${nvcc:+$(dirname "$nvcc")/compute-sanitizer}" \
  /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  if [[ -n $candidate && -x $candidate ]]; then
    sanitizer=$candidate
    break
  fi
done

# --- a prebuilt folder: its CTest files name the paths it was built under ---------------------------
prebuilt=0
if [[ -n ${GPU_CHECK_PREBUILT:-} ]]; then
  prebuilt=1
  built_at=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
  source_at=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
  if [[ -z $built_at || -z $source_at ]]; then
    fail "prebuilt" "$build has no CMakeCache.txt (build it with scripts/gpu-prebuild.sh and carry it)"
    prebuilt=2
  else
    # The build folder must sit at the same place relative to the sources, as it does when carried.
    # Where the original source path does not exist here, a link makes every absolute path resolve.
    if [[ ! -e $source_at ]]; then mkdir -p "$(dirname "$source_at")" && ln -s "$root" "$source_at"; fi
    if [[ $(cd "$built_at" 2>/dev/null && pwd -P) == $(cd "$build" && pwd -P) ]]; then
      row "build" "prebuilt, carried ($built_at)"
    else
      fail "prebuilt" "$built_at does not lead to $build"
      prebuilt=2
    fi
  fi
fi

# --- dependencies: installed, or unpacked from .deb/ into a local prefix -------------------------
prefix=$build/deps
have_eigen() { [[ -f /usr/include/eigen3/Eigen/Core || -f /usr/local/include/eigen3/Eigen/Core ]]; }
have_doctest() { [[ -f /usr/include/doctest/doctest.h || -f /usr/local/include/doctest/doctest.h ]]; }
prefix_path=""
# GPU_CHECK_USE_DEBS=1 takes the .deb/ route even where both are installed (to test it).
if ((prebuilt)); then
  : # compiled elsewhere: nothing here needs Eigen or doctest
elif [[ -z ${GPU_CHECK_USE_DEBS:-} ]] && have_eigen && have_doctest; then
  row "dependencies" "installed"
else
  shopt -s nullglob
  debs=("$root"/.deb/*.deb)
  shopt -u nullglob
  if ((${#debs[@]} == 0)); then
    fail "dependencies" "Eigen or doctest missing and no .deb/ (run scripts/fetch-debs.sh online)"
  else
    rm -rf "$prefix" && mkdir -p "$prefix"
    ok=1
    for deb in "${debs[@]}"; do dpkg -x "$deb" "$prefix" || ok=0; done
    # Debian's doctestTargets.cmake hard-codes /usr as its prefix (Eigen's is relative): point it here.
    targets=$prefix/usr/lib/cmake/doctest/doctestTargets.cmake
    [[ -f $targets ]] && sed -i "s|set(_IMPORT_PREFIX \"/usr\")|set(_IMPORT_PREFIX \"$prefix/usr\")|" "$targets"
    prefix_path=$prefix/usr
    if ((ok)); then row "dependencies" "unpacked from .deb/ into $prefix"; else fail "dependencies" "dpkg -x"; fi
  fi
fi

# --- configure and build -------------------------------------------------------------------------
configure=(cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90)
command -v ninja >/dev/null 2>&1 && configure+=(-G Ninja)
[[ -n $nvcc ]] && configure+=(-DCMAKE_CUDA_COMPILER="$nvcc")
[[ -n $prefix_path ]] && configure+=(-DCMAKE_PREFIX_PATH="$prefix_path")
built=0
if ((prebuilt == 1)); then
  built=1
elif ((prebuilt)); then
  :
elif step configure 120 "${configure[@]}"; then
  if step build 330 cmake --build "$build" -j "$jobs" --target all benchmarks; then
    built=1
    row "build" "ok (sm_90, $jobs jobs, $((SECONDS))s so far)"
  else
    fail "build" "see $logs/build.log"
    tail -n 30 "$logs/build.log"
  fi
else
  fail "configure" "see $logs/configure.log"
  tail -n 30 "$logs/configure.log"
fi
# CMakeLists.txt sets CMAKE_CUDA_COMPILER as a plain variable, so the cache may not name it: look
# for the CUDA test binary instead.
if ((built)) && [[ ! -x $build/tandem_cuda_tests ]]; then
  fail "cuda" "CMake did not enable CUDA: the gpu tests were not built"
fi

# --- tests ---------------------------------------------------------------------------------------
# Sums up ctest's log: "N% tests passed, F tests failed out of T".
tests_row() {
  local label=$1 log=$2 rc=$3 summary
  # CTest says "N tests failed out of T", or, when none failed, "100% tests passed out of T".
  summary=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$log" | tail -n1)
  [[ -z $summary ]] && summary=$(grep -Eo '100% tests passed out of [0-9]+' "$log" | tail -n1 | sed 's/^100% tests passed/0 tests failed/')
  if [[ -z $summary ]]; then
    if grep -q 'No tests were found' "$log"; then fail "$label" "no tests found"; else fail "$label" "no summary (rc $rc)"; fi
    return
  fi
  local failed total
  failed=$(awk '{print $1}' <<<"$summary")
  total=$(awk '{print $NF}' <<<"$summary")
  if ((failed == 0 && rc == 0)); then
    row "$label" "$((total - failed)) passed, 0 failed"
  else
    fail "$label" "$((total - failed)) passed, $failed failed"
    grep -E '^\s+[0-9]+ - ' "$log" | head -n 20
  fi
}
if ((built)); then
  # Everything but the GPU label in parallel; the GPU tests and examples next, two at a time, so
  # that timings are not made up of sixteen processes fighting over one GPU.
  if ((!prebuilt)); then # a prebuilt folder holds only the GPU targets; CI runs the rest
    step tests 200 ctest --test-dir "$build" -LE gpu -j "$jobs" --output-on-failure --timeout 180
    tests_row "tests (not gpu)" "$logs/tests.log" $?
  fi
  step tests-gpu 150 ctest --test-dir "$build" -L gpu -j 2 --output-on-failure --timeout 120
  tests_row "tests (gpu)" "$logs/tests-gpu.log" $?
  # The GPU tests pass by skipping where the CUDA runtime sees no GPU: make sure it sees one. The
  # CUDA build of example 01 says so on stderr when it falls back to the host backend.
  example=$build/example_01_seed_model_parallel_cuda
  if [[ -x $example ]]; then
    (cd examples/01_seed_model_parallel && step example01-cuda 60 "$example")
    rc=$?
    if grep -q 'no CUDA GPU in use' "$logs/example01-cuda.log"; then
      fail "cuda runtime" "sees no GPU: the gpu tests only skipped (driver missing or too old?)"
    elif ((rc != 0)); then
      fail "example 01 (cuda)" "rc $rc, see $logs/example01-cuda.log"
    else
      row "example 01 (cuda)" "ran on the GPU backend"
    fi
  fi
fi

# --- one training step beside PyTorch (issue 6; best effort: printed, not judged) ----------------
# Right after the tests, before the sanitizers, so that a tight budget cannot leave the run
# without its comparison. bench_gpu_step and bench/torch_gpu_step.py time the same workloads and
# write JSON that bench/compare.py puts side by side (and draws, where matplotlib is installed);
# bench_host_seed_step and bench/torch_seed_step.py do the same for the host backend and the CPU.
# Each step is capped, and --seconds caps each workload's timed steps inside it.
# The python3 for PyTorch: $TORCH_PYTHON, else the first that imports torch with CUDA, else the
# first that imports torch at all.
torch_python() {
  local want=$1 candidate
  for candidate in "${TORCH_PYTHON:-}" /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
    [[ -n $candidate && -x $candidate ]] || continue
    if timeout 60 "$candidate" -c "import sys, torch; sys.exit(0 if $want else 1)" >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
compare_tables=""
if ((built)); then
  py=$(torch_python 'torch.cuda.is_available()' || torch_python True || command -v python3 || echo python3)
  have_torch=0
  "$py" -c 'import torch' >/dev/null 2>&1 && have_torch=1
  # pair NAME TITLE TANDEM-COMMAND... -- TORCH-SCRIPT...: runs both with --json, then compare.py.
  pair() {
    local name=$1 title=$2 tandem_json=$logs/bench-$1-tandem.json torch_json=$logs/bench-$1-torch.json
    shift 2
    local -a ours=() theirs=()
    while (($#)) && [[ $1 != -- ]]; do
      ours+=("$1")
      shift
    done
    shift
    theirs=("$@")
    rm -f "$tandem_json" "$torch_json" "$logs/bench-$name.png"
    local tandem_rc=0 torch_rc=0 note=""
    if [[ -x ${ours[0]} ]]; then
      step "bench-$name-tandem" "$bench_limit" "${ours[@]}" --json "$tandem_json" || tandem_rc=$?
    else
      tandem_rc="${ours[0]##*/} not built"
    fi
    if ((have_torch)); then
      step "bench-$name-torch" 120 "$py" "${theirs[@]}" --json "$torch_json" || torch_rc=$?
    else
      torch_rc="no python3 with torch"
    fi
    step "bench-$name-compare" 30 "$py" bench/compare.py "$tandem_json" "$torch_json" --title "$title" \
      --png "$logs/bench-$name.png" --markdown "$logs/bench-$name.md"
    cat "$logs/bench-$name-compare.log"
    compare_tables+=$'\n'$(cat "$logs/bench-$name-compare.log")$'\n'
    local side rc
    for side in tandem torch; do
      [[ $side == tandem ]] && rc=$tandem_rc || rc=$torch_rc
      case $rc in
      0) ;;
      124) note+=" $side: timed out;" ;;
      [0-9]*) note+=" $side: rc $rc (see $logs/bench-$name-$side.log);" ;;
      *) note+=" $side: $rc;" ;;
      esac
    done
    note=${note# }
    row "bench $name vs torch" "${note:-both ran;} table above the summary; $logs/bench-$name.md (and .png)"
  }
  pair gpu "one training step on the GPU ($device): tandem vs PyTorch" \
    "$build/bench/bench_gpu_step" --seconds "$bench_run_seconds" --repeat "$bench_repeat" -- \
    bench/torch_gpu_step.py --seconds "$bench_seconds"
  pair host "one training step on the host ($jobs cores): tandem's host backend vs PyTorch on the CPU" \
    "$build/bench/bench_host_seed_step" -- bench/torch_seed_step.py
fi

# --- where the seed step's time goes (issue 6 asks for the profile) -------------------------------
# Nsight Systems, where the GPU machine has it: every kernel of the captured seed step (graph nodes
# traced one by one) with its time, and the CUDA API calls around them. Best effort: a missing
# profiler is a row, not a failure.
profiler=""
for candidate in "$(command -v nsys 2>/dev/null)" /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys; do
  if [[ -n $candidate && -x $candidate ]]; then
    profiler=$candidate
    break
  fi
done
if ((built)) && [[ -n $profiler && -x $build/bench/bench_gpu_step ]]; then
  if step profile-seed 120 "$profiler" profile --stats=true --force-overwrite=true --cuda-graph-trace=node \
    --output "$logs/profile-seed" "$build/bench/bench_gpu_step" --only seed --steps 500 --seconds 2; then
    # The kernel summary (its name changed across nsys versions), at most 25 lines of it.
    awk '/cuda_gpu_kern_sum|gpukernsum/ {on = 1} on && n++ < 25' "$logs/profile-seed.log"
    row "profile seed (nsys)" "kernel summary above; $logs/profile-seed.log, $logs/profile-seed.nsys-rep"
  else
    row "profile seed (nsys)" "did not finish (see $logs/profile-seed.log)"
  fi
elif ((built)); then
  row "profile seed" "no nsys on this machine (tandem's own task timings: profile-seed-timeline)"
fi
# tandem's own: every task of an issued seed step timed by events on its stream (bench_gpu_step
# --profile), beside the step's wall time. Needs no Nsight tools.
if ((built)) && [[ -x $build/bench/bench_gpu_step ]]; then
  if step profile-seed-timeline 60 "$build/bench/bench_gpu_step" --only seed,seed_stages,seed_gpipe4 --profile \
    --steps 200 --seconds 1; then
    grep -A12 '^profile:' "$logs/profile-seed-timeline.log" | grep -v '^--$' | head -40
    row "profile seed (timeline)" "task timings above; $logs/profile-seed-timeline.log"
  else
    row "profile seed (timeline)" "did not finish (see $logs/profile-seed-timeline.log)"
  fi
fi

# --- compute-sanitizer ---------------------------------------------------------------------------
# API errors are not reported (--report-api-errors no): the tests provoke some on purpose (an
# out-of-memory cudaMalloc, peer access already enabled), and the library turns every unexpected
# one into an exception, which fails a test.
sanitize() {
  local tool=$1 name=$2 dir=$3
  shift 3
  local log=$logs/sanitizer-$tool-$name.log rc
  if [[ ! -x ${1:-} ]]; then
    fail "$tool $name" "binary $1 not built"
    return
  fi
  (cd "$dir" && step "sanitizer-$tool-$name" 150 "$sanitizer" --tool "$tool" --report-api-errors no \
    --print-limit 20 --error-exitcode 99 "$@")
  rc=$?
  local errors
  # memcheck ends with "ERROR SUMMARY: N errors", racecheck with "RACECHECK SUMMARY: ... (N errors, ...)".
  errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$log" | tail -n1 | awk '{print $3}')
  [[ -z $errors ]] && errors=$(grep -Eo 'RACECHECK SUMMARY: .*\(([0-9]+) errors' "$log" | tail -n1 | grep -Eo '[0-9]+ errors' | awk '{print $1}')
  if [[ -z $errors ]]; then
    fail "$tool $name" "no error summary (rc $rc; timed out or crashed?)"
  elif ((errors > 0)); then
    fail "$tool $name" "$errors error(s), see $log"
  elif ((rc != 0)); then
    fail "$tool $name" "0 sanitizer errors but the program failed (rc $rc)"
  else
    row "$tool $name" "0 errors"
  fi
}
if ((built)) && [[ -n $sanitizer ]]; then
  for tool in ${GPU_CHECK_SANITIZERS:-memcheck racecheck}; do
    sanitize "$tool" tests "$root" "$build/tandem_cuda_tests"
    sanitize "$tool" example01 "$root/examples/01_seed_model_parallel" \
      "$build/example_01_seed_model_parallel_cuda"
  done
elif ((built)); then
  fail "compute-sanitizer" "not found (looked on PATH and next to nvcc)"
fi

# --- benchmarks (best effort: timings are printed, not judged) -----------------------------------
benches=()
if [[ -d $build ]]; then
  while IFS= read -r bench; do benches+=("$bench"); done < <(find "$build" -maxdepth 2 -type f -perm -u+x -name 'bench_*' \
    ! -name bench_gpu_step ! -name bench_host_seed_step ! -name bench_host_execution | sort)
  # (the first two ran beside PyTorch above; bench_host_execution is a host-only sweep)
fi
if ((built)) && ((${#benches[@]} > 0)); then
  ran=0
  for bench in "${benches[@]}"; do
    name=$(basename "$bench")
    if step "$name" 60 "$bench"; then ran=$((ran + 1)); else echo "gpu-check: $name did not finish"; fi
    cat "$logs/$name.log"
  done
  row "benchmarks" "$ran of ${#benches[@]} ran (logs in $logs)"
else
  row "benchmarks" "none built"
fi

# --- the table -----------------------------------------------------------------------------------
[[ -n $compare_tables ]] && printf '%s' "$compare_tables"
echo
echo "gpu-check summary ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS}s)"
printf '%-28s %s\n' "device" "$device"
printf '%s\n' "${rows[@]}"
printf '%-28s %s\n' "result" "$([[ $status == 0 ]] && echo PASS || echo FAIL)"
exit $status
