// SPDX-License-Identifier: Apache-2.0
// The notice that a program including tandem was compiled without optimisation.
#pragma once

#include <cstdio>

namespace tandem::detail {

// Said once per process, however many unoptimised translation units include tandem.
inline bool notice_unoptimized() {
  static const bool once = [] {
    std::fputs("tandem: this program was compiled without optimisation (no -O); tandem's steps run many "
               "times slower: build with -O2 or -O3 (CMake: -DCMAKE_BUILD_TYPE=Release; nvcc: -O3, which "
               "also optimises the host code). Define TANDEM_NO_OPTIMIZATION_NOTICE to silence this\n",
               stderr);
    return true;
  }();
  return once;
}

} // namespace tandem::detail

// g++ and clang define __OPTIMIZE__ at -O1 and above; nvcc's host pass does when it hands the host
// compiler an -O (nvcc -O3, or -Xcompiler -O2). A debug build sees this at start-up, before main.
// Internal linkage: only unoptimised translation units carry the variable.
#if !defined(__OPTIMIZE__) && !defined(TANDEM_NO_OPTIMIZATION_NOTICE) && !defined(__CUDA_ARCH__)
namespace tandem::detail {
namespace {
[[maybe_unused]] const bool unoptimized_notice = notice_unoptimized();
} // namespace
} // namespace tandem::detail
#endif
