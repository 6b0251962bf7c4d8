// SPDX-License-Identifier: Apache-2.0
// schedule::ZeroBubbleH1: 1F1B with each backward split in two, the weight gradients deferred.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "tandem/schedule/one_f_one_b.hpp"
#include "tandem/schedule/schedule.hpp"

namespace tandem::schedule {

// ZB-H1 (Qi et al., 2024, "Zero Bubble Pipeline Parallelism"): 1F1B's warm-up and steady state
// (schedule::OneFOneB), with backward_input in place of each backward, so that the input gradient
// the stage before waits for comes sooner, and backward_weights run later: stage s of n lets s of
// them wait, then runs one after each backward_input, and the s left at the end, where 1F1B's
// cool-down would leave the stage idle. With F, B and W of equal cost, each device idles for
// about (n - 1) of them per step, where 1F1B idles for 3 (n - 1).
// Memory: a micro-batch's activations are held from its forward to its backward_weights (which
// reads the layers' inputs, and the output gradients backward_input keeps), so stage s holds up to
// min(n, m) micro-batches where 1F1B's holds min(n - s, m): every stage as many as 1F1B's stage 0,
// the largest (plus, per micro-batch, the output gradient of each split layer but the last).
struct ZeroBubbleH1 {
  std::size_t micro_batches = 1;

  constexpr std::size_t count(std::size_t /*batch*/) const { return micro_batches; }
  // 1F1B's order, each backward becoming backward_input and the weight gradients added behind them
  // (1F1B's backwards come in micro-batch order, and so do the weight gradients).
  constexpr std::vector<Task> order(std::size_t stage, std::size_t stages, std::size_t m) const {
    std::vector<Task> tasks;
    tasks.reserve(3 * m);
    std::size_t b = 0, w = 0; // backward_input and backward_weights issued so far
    for (const Task &t : OneFOneB{.micro_batches = m}.order(stage, stages, m)) {
      if (t.kind == Task::forward) {
        tasks.push_back(t);
        continue;
      }
      tasks.push_back({Task::backward_input, t.micro_batch});
      if (++b > stage) tasks.push_back({Task::backward_weights, w++}); // (the first `stage` wait)
    }
    while (w < m) tasks.push_back({Task::backward_weights, w++});
    return tasks;
  }
};

} // namespace tandem::schedule
