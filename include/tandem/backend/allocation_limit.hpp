// SPDX-License-Identifier: Apache-2.0
// backend::set_allocation_limit and backend::fail_allocation_after: out of memory on demand, so
// that tests can make any allocation fail without exhausting a real device.
#pragma once

#include <atomic>
#include <cstddef>
#include <limits>
#include <string>

#include "tandem/error.hpp"

namespace tandem::detail {
inline std::atomic<std::size_t> &allocation_limit_bytes() {
  static std::atomic<std::size_t> limit{std::numeric_limits<std::size_t>::max()};
  return limit;
}
// Allocations left before one fails; 0: none is made to fail.
inline std::atomic<std::size_t> &allocations_before_failure() {
  static std::atomic<std::size_t> left{0};
  return left;
}
} // namespace tandem::detail

namespace tandem::backend {

// Process-wide, for every executor of every backend and the library's host staging copies: an
// allocation of more than `bytes` fails with the Error a real out-of-memory gives. The default,
// std::size_t's maximum, limits nothing.
inline void set_allocation_limit(std::size_t bytes) { tandem::detail::allocation_limit_bytes().store(bytes); }
inline std::size_t allocation_limit() { return tandem::detail::allocation_limit_bytes().load(); }
// The n-th allocation from now (n >= 1) fails as if out of memory, and the ones after it succeed
// again: a test walks n = 1, 2, ... to fail each allocation of a call in turn. 0 cancels.
inline void fail_allocation_after(std::size_t n) { tandem::detail::allocations_before_failure().store(n); }

// Sets the limit for a scope and restores the one before.
class ScopedAllocationLimit {
public:
  explicit ScopedAllocationLimit(std::size_t bytes) : before_(allocation_limit()) { set_allocation_limit(bytes); }
  ScopedAllocationLimit(const ScopedAllocationLimit &) = delete;
  ScopedAllocationLimit &operator=(const ScopedAllocationLimit &) = delete;
  ~ScopedAllocationLimit() { set_allocation_limit(before_); }

private:
  std::size_t before_;
};

} // namespace tandem::backend

namespace tandem::detail {
// Called by every allocation before it is made: throws the out-of-memory Error where the limit or
// the countdown says so. `where` names the device ("host:0", "cuda:1") or the host copy.
inline void check_allocation(std::size_t bytes, const std::string &where) {
  const std::size_t limit = allocation_limit_bytes().load();
  if (bytes > limit)
    fail("out of memory: allocating ", bytes, " bytes on ", where, " (allocation limit ", limit, " bytes)");
  auto &left = allocations_before_failure();
  for (std::size_t n = left.load(); n != 0;)
    if (left.compare_exchange_weak(n, n - 1)) {
      if (n == 1) fail("out of memory: allocating ", bytes, " bytes on ", where, " (injected failure)");
      break;
    }
}
} // namespace tandem::detail
