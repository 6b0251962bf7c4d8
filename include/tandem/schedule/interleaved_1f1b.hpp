// SPDX-License-Identifier: Apache-2.0
// schedule::Interleaved1F1B: 1F1B over virtual stages, several per device (Megatron-LM's).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "tandem/error.hpp"
#include "tandem/schedule/schedule.hpp"

namespace tandem::schedule {

// The interleaved schedule of Narayanan et al. (2021), Megatron-LM's virtual pipeline, for a
// network whose stages cycle through D devices, v stages each (Stage<Device<0>>, Stage<Device<1>>,
// Stage<Device<0>>, Stage<Device<1>>: D = 2, v = 2). Micro-batches go through in groups of D:
// device d runs the group's forwards on its first stage, then on its second, ..., and the
// backwards the other way round, as 1F1B would with v D stages of 1/v of the work each. Device
// d first runs 2 (D - d - 1) + (v - 1) D forwards (all of them where m = D), then alternates one
// forward and one backward. The fill and drain are v times shorter, so the bubble is about
// (D - 1) / (v m) of the step where 1F1B's is (D - 1) / m; the price is v times as many boundary
// crossings, and more activations: device d keeps up to w + 1 stage-micro-batches alive at once (w
// its warm-up's forwards, each stage 1/v of the device's layers), and each stage's stash is sized
// for its own peak, so the device allocates more entries than that (D = 2, v = 2, m >= 4: 6 and 4
// entries of a half-size stage on devices 0 and 1, where 1F1B's stages hold 2 and 1 of a full one;
// detail::assign_stash counts them per stage). m must be a multiple of D, as Megatron requires.
struct Interleaved1F1B {
  std::size_t micro_batches = 1;

  constexpr std::size_t count(std::size_t /*batch*/) const { return micro_batches; }
  constexpr std::vector<Task> device_order(std::size_t d, std::size_t D, std::size_t v, std::size_t m) const {
    if (m % D != 0)
      tandem::detail::fail("schedule::Interleaved1F1B: micro_batches = ", m, " is not a multiple of the ", D,
                           " devices the stages cycle through; use a multiple of ", D);
    const std::size_t total = m * v; // tasks of each kind on the device
    // The i-th forward (backward) of the device: which micro-batch, on which of its stages.
    auto micro_batch = [&](std::size_t i) { return i / (D * v) * D + i % D; };
    auto chunk = [&](std::size_t i, bool forward) {
      const std::size_t c = i / D % v;
      return forward ? c : v - 1 - c;
    };
    auto task = [&](Task::Kind kind, std::size_t i) {
      return Task{kind, micro_batch(i), chunk(i, kind == Task::forward) * D + d};
    };
    const std::size_t warm_up = m == D ? total : std::min(total, 2 * (D - d - 1) + (v - 1) * D);
    std::vector<Task> tasks;
    tasks.reserve(2 * total);
    std::size_t f = 0, b = 0;
    while (f < warm_up) tasks.push_back(task(Task::forward, f++));
    while (f < total) {
      tasks.push_back(task(Task::forward, f++));
      tasks.push_back(task(Task::backward, b++));
    }
    while (b < total) tasks.push_back(task(Task::backward, b++));
    return tasks;
  }
};

} // namespace tandem::schedule
