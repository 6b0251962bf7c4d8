// SPDX-License-Identifier: Apache-2.0
// detail::receive: one micro-batch's boundary crossing - activations forward, their gradient
// backward - over the link between two neighbouring stages (backend::Link: a copy between
// devices; none where the two read each other's memory in place).
#pragma once

#include <cstddef>
#include <span>

#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_trace.hpp"

namespace tandem::detail {

// Copies micro-batch k's boundary from stage `from` to its neighbour `to` and returns the bytes
// moved (0 where no link is needed). The pipeline issues it just before `to` needs it rather than
// as soon as `from` has made it: the host backend runs a link's copy on the destination's worker,
// where a copy issued early would make the destination wait for the source's later micro-batches
// before its own work. On a GPU the copy has a stream of its own and the issue order does not matter.
template <class T>
std::size_t receive(std::span<StageState<T>> stages, std::size_t from, std::size_t to, std::size_t k, std::size_t rows,
                    StepTrace &trace) {
  StageState<T> &src = stages[from];
  Slot<T> &in = src.slots[k], &out = stages[to].slots[k];
  if (to > from && src.to_next) {
    const std::size_t bytes = rows * src.widths.back() * sizeof(T);
    trace.copy(*src.to_next, from, to, k, in.out.data(), out.input_own.data(), bytes, *in.forward_done,
               *out.input_ready);
    return bytes;
  }
  if (to < from && src.to_prev) {
    const std::size_t bytes = rows * src.widths.front() * sizeof(T);
    trace.copy(*src.to_prev, from, to, k, in.dx.data(), out.dy_own.data(), bytes, *in.backward_done, *out.dy_ready);
    return bytes;
  }
  return 0;
}

} // namespace tandem::detail
