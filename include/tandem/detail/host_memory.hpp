// SPDX-License-Identifier: Apache-2.0
// detail::host_vector and detail::checked_product: host allocations and size products that fail
// as tandem::Error, never as std::bad_alloc, std::length_error or a wrapped count.
#pragma once

#include <cstddef>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "tandem/backend/allocation_limit.hpp"
#include "tandem/error.hpp"

namespace tandem::detail {

// a * b, or Error naming both factors and `what` where the product does not fit a std::size_t.
constexpr std::size_t checked_product(std::size_t a, std::size_t b, const char *what) {
  if (b != 0 && a > std::numeric_limits<std::size_t>::max() / b)
    fail(what, ": ", a, " x ", b, " overflows a std::size_t (the largest is ", std::numeric_limits<std::size_t>::max(),
         ")");
  return a * b;
}

// Runs `make`, which allocates `bytes` of host memory for `what`, subject to
// backend::set_allocation_limit like a device's allocation; out of memory is an Error naming the
// bytes and `what`.
template <class Make> auto allocating(std::size_t bytes, const char *what, Make &&make) -> decltype(make()) {
  check_allocation(bytes, std::string("the host (") + what + ")");
  try {
    return make();
  } catch (const std::bad_alloc &) {
  } catch (const std::length_error &) {
  }
  fail("out of memory: allocating ", bytes, " bytes on the host (", what, ")");
}

// A host vector of n values, allocated as allocating() says.
template <class T> std::vector<T> host_vector(std::size_t n, const char *what) {
  return allocating(checked_product(n, sizeof(T), what), what, [&] { return std::vector<T>(n); });
}

} // namespace tandem::detail
