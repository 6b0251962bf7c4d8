// SPDX-License-Identifier: Apache-2.0
// What a step reads and writes: its input and targets (detail::Source), inference's output
// (detail::Sink), and forward_backward's absent optimizer (detail::NoOptimizer).
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>

namespace tandem::detail {

// Where a step's data lives: host memory (copied in) or the device of the stage that reads it.
template <class U> struct Source {
  const U *host = nullptr, *device = nullptr;
  std::size_t size = 0;
  std::span<const U> host_span() const { return {host, size}; }
};
template <class U> struct Sink { U *host = nullptr, *device = nullptr; };

// forward_backward's "optimizer": none.
struct NoOptimizer {};
inline NoOptimizer *no_optimizer() { return nullptr; }
template <class Opt> inline constexpr bool optimizing_v = !std::is_same_v<Opt, NoOptimizer>;

} // namespace tandem::detail
