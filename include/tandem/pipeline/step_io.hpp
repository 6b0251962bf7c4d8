// SPDX-License-Identifier: Apache-2.0
// What a step reads and writes: its input and targets (detail::Source), inference's output
// (detail::Sink), and forward_backward's absent optimizer (detail::NoOptimizer).
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>

#include "tandem/backend/executor.hpp"
#include "tandem/detail/host_memory.hpp"

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

// Reads targets on the device (`last`, the last stage's) back and checks them on the host; throws
// the loss's Error.
template <class Loss, class U>
void validate_device_targets(backend::Executor &last, const Source<U> &y, std::size_t batch, std::size_t out_features) {
  auto host = host_vector<U>(y.size, "a copy of the targets");
  last.download(host.data(), y.device, y.size * sizeof(U));
  last.synchronize();
  Loss::validate(std::span<const U>(host), batch, out_features);
}
template <class Opt> inline constexpr bool optimizing_v = !std::is_same_v<Opt, NoOptimizer>;

} // namespace tandem::detail
