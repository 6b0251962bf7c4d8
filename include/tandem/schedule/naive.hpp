// SPDX-License-Identifier: Apache-2.0
// schedule::Naive: the whole batch through stage 0, then stage 1, ...; back the same way.
#pragma once

#include <cstddef>
#include <vector>

#include "tandem/schedule/schedule.hpp"

namespace tandem::schedule {

// The seed's model parallelism: one device works while the others wait.
struct Naive {
  constexpr std::size_t count(std::size_t /*batch*/) const { return 1; }
  constexpr std::vector<Task> order(std::size_t /*stage*/, std::size_t /*stages*/, std::size_t m) const {
    return detail::all_forward_then_backward(m);
  }
};

} // namespace tandem::schedule
