// SPDX-License-Identifier: Apache-2.0
// detail::RankBoundary: the boundaries between a rank's stages and another rank's, as messages -
// receives posted before a step's work, a send right after the work that makes a boundary, a
// wait right before the work that reads one - each on the stage's track of the timeline.
#pragma once

#include <cstddef>
#include <span>

#include "tandem/backend/event.hpp"
#include "tandem/backend/transport.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/ranks.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_trace.hpp"
#include "tandem/timeline.hpp"

namespace tandem::detail {

// A view of the runtime's ranks, stages and trace, made for each use (it owns nothing). A stage
// without an executor runs on another rank.
template <class T> struct RankBoundary {
  Ranks &ranks;
  std::span<StageState<T>> stages;
  StepTrace &trace;

  // The crossing of micro-batch k at `boundary` (between stages boundary and boundary + 1), with
  // the rank of stage `peer`.
  backend::Crossing crossing(std::size_t boundary, std::size_t k, backend::Direction d, std::size_t peer) const {
    return {boundary, k, d, ranks.rank_of(peer)};
  }
  // Receives, posted before any of the step's work is issued, into the buffers of this rank's
  // stages whose neighbour runs on another rank: inputs, and (training) output gradients.
  void post_receives(const Plan &plan, bool training) {
    if (!ranks.active()) return;
    const std::size_t n = stages.size();
    for (std::size_t s = 0; s < n; ++s) {
      auto &st = stages[s];
      if (!st.ex) continue;
      for (std::size_t k = 0; k < plan.m; ++k) {
        if (s > 0 && !stages[s - 1].ex)
          ranks.channel().post_receive(st.slots[k].input_own.data(), plan.rows[k] * st.widths.front() * sizeof(T),
                                       crossing(s - 1, k, backend::Direction::forward, s - 1));
        if (training && s + 1 < n && !stages[s + 1].ex)
          ranks.channel().post_receive(st.slots[k].dy_own.data(), plan.rows[k] * st.widths.back() * sizeof(T),
                                       crossing(s, k, backend::Direction::backward, s + 1));
      }
    }
  }
  // Stage s waits for a crossing on its executor, then records `ready` there.
  void arrive(std::size_t s, const backend::Crossing &c, backend::Event &ready) {
    trace.timed(s, TaskKind::receive, static_cast<std::ptrdiff_t>(c.micro_batch),
                [&] { ranks.channel().arrive(*stages[s].ex, c); });
    stages[s].ex->record(ready);
  }
  // Stage s sends `n` values at `src`; returns the bytes.
  std::size_t send(std::size_t s, const T *src, std::size_t n, const backend::Crossing &c) {
    trace.timed(s, TaskKind::send, static_cast<std::ptrdiff_t>(c.micro_batch),
                [&] { ranks.channel().send(*stages[s].ex, src, n * sizeof(T), c); });
    return n * sizeof(T);
  }
};

} // namespace tandem::detail
