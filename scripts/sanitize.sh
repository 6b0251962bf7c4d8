#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The sanitizer build, run before each submission: tandem_tests (host backend) built twice more,
# with AddressSanitizer + UBSan and with ThreadSanitizer, each running the unit and stress tests with
# TANDEM_HOST_EXECUTION=automatic and =workers. Any report fails the script. Build trees:
# build-asan/ and build-tsan/ (override the prefix with TANDEM_SANITIZE_DIR); extra arguments go to
# tandem_tests (e.g. -tc="*destruction*").
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${TANDEM_SANITIZE_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

# halt_on_error: the first report fails the run. allocator_may_return_null: the stress tests ask
# for far more memory than exists and expect the library's Error, not the sanitizer's abort.
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:allocator_may_return_null=1:second_deadlock_stack=1

run() { # <name> <flags>
  local name=$1 flags=$2 dir=${prefix}-$1
  shift 2
  local args=(-S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_ENABLE_CUDA=OFF
              "-DCMAKE_CXX_FLAGS=$flags -fno-omit-frame-pointer")
  [[ -f $dir/CMakeCache.txt ]] || args+=("${generator[@]}")
  cmake "${args[@]}" >/dev/null
  cmake --build "$dir" --target tandem_tests --parallel "$jobs"
  for mode in automatic workers; do
    echo "sanitize.sh: $name, TANDEM_HOST_EXECUTION=$mode"
    TANDEM_HOST_EXECUTION=$mode MALLOC_PERTURB_=165 "$dir/tandem_tests" --no-intro "$@"
  done
}

start=$SECONDS
run asan "-fsanitize=address,undefined -fno-sanitize-recover=all" "$@"
run tsan "-fsanitize=thread" "$@"
echo "sanitize.sh: AddressSanitizer + UBSan and ThreadSanitizer clean in $((SECONDS - start)) s"
