// SPDX-License-Identifier: Apache-2.0
// schedule::GPipe: every micro-batch forward, then every micro-batch backward (fill and drain).
#pragma once

#include <cstddef>
#include <vector>

#include "tandem/schedule/schedule.hpp"

namespace tandem::schedule {

// GPipe (Huang et al., 2019): stage s runs F0..F(m-1), then B(m-1)..B0. While stage s works on
// micro-batch k, stage s+1 works on k-1, so n stages are busy at once after n-1 steps of fill.
// Each stage keeps the activations of all m micro-batches until its backward begins; 1F1B keeps
// fewer. Backward runs in reverse so the last stage starts with the micro-batch it just finished.
struct GPipe {
  std::size_t micro_batches = 1;

  constexpr std::size_t count(std::size_t /*batch*/) const { return micro_batches; }
  constexpr std::vector<Task> order(std::size_t /*stage*/, std::size_t /*stages*/, std::size_t m) const {
    return detail::all_forward_then_backward(m);
  }
};

} // namespace tandem::schedule
