// SPDX-License-Identifier: Apache-2.0
// schedule::OneFOneB: one-forward-one-backward (PipeDream-Flush, as in Megatron-LM).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "tandem/schedule/schedule.hpp"

namespace tandem::schedule {

// PipeDream-Flush (Narayanan et al., 2021): stage s of n first runs w = min(n - s - 1, m)
// forwards (warm-up), then alternates one forward and one backward, then runs the w backwards
// left (cool-down). A backward frees its micro-batch's activations as early as the dependencies
// allow, so stage s holds at most min(n - s, m) micro-batches at once, where GPipe holds m. The
// bubble is the same as GPipe's; the gain is memory, which lets m grow and the bubble shrink.
struct OneFOneB {
  std::size_t micro_batches = 1;

  constexpr std::size_t count(std::size_t /*batch*/) const { return micro_batches; }
  constexpr std::vector<Task> order(std::size_t stage, std::size_t stages, std::size_t m) const {
    const std::size_t warm_up = std::min(stages - stage - 1, m);
    std::vector<Task> tasks;
    tasks.reserve(2 * m);
    std::size_t f = 0, b = 0;
    while (f < warm_up) tasks.push_back({Task::forward, f++});
    while (f < m) {
      tasks.push_back({Task::forward, f++});
      tasks.push_back({Task::backward, b++});
    }
    while (b < m) tasks.push_back({Task::backward, b++});
    return tasks;
  }
};

} // namespace tandem::schedule
