// SPDX-License-Identifier: Apache-2.0
// detail::StepTrace: a step's hooks into the context's Timeline. While the timeline records, each
// task's issue is bracketed by events on the executor that runs it (a copy: on the destination's,
// which records the copy's end); otherwise every hook just issues the work.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/link.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/timeline.hpp"

namespace tandem::detail {

class StepTrace {
public:
  // Starts recording a step if `tl` is enabled: a track per stage's device and per link.
  template <class T> void begin(Timeline &tl, std::span<StageState<T>> stages);
  bool recording() const { return timeline_ != nullptr; }
  // Reads the step's clocks; everything it issued has completed.
  void end() {
    if (timeline_) timeline_->end_step();
    timeline_ = nullptr;
  }

  // Issues one task of stage s (micro-batch k; -1: none) as `issue_work` does, timed.
  template <class F> void timed(std::size_t s, TaskKind kind, std::ptrdiff_t k, F &&issue_work) {
    if (!timeline_) return issue_work();
    const auto mark = timeline_->open(*executors_[s], tracks_[s].device, kind, s, k);
    issue_work();
    timeline_->close(mark);
  }
  // Link::copy of stage `from`'s boundary to its neighbour `to`, timed on the destination.
  void copy(backend::Link &link, std::size_t from, std::size_t to, std::size_t k, const void *src, void *dst,
            std::size_t bytes, backend::Event &ready, backend::Event &done) {
    if (!timeline_) return link.copy(src, dst, bytes, ready, done);
    const std::size_t track = to > from ? tracks_.at(from).next : tracks_.at(from).prev;
    const auto mark = timeline_->prepare(*executors_.at(to), track, TaskKind::copy, from, std::ptrdiff_t(k));
    link.copy(src, dst, bytes, ready, done, &timeline_->begin(mark));
    timeline_->close(mark, done);
  }

private:
  struct Tracks {
    std::size_t device = 0, next = 0, prev = 0; // the stage's device, its links out
  };
  Timeline *timeline_ = nullptr; // the context's, during a step that records
  std::vector<Tracks> tracks_;
  std::vector<backend::Executor *> executors_;
};

// (Out of the class: a program linked with tandem::compiled finds it compiled there.)
template <class T> void StepTrace::begin(Timeline &tl, std::span<StageState<T>> stages) {
  timeline_ = tl.enabled() ? &tl : nullptr;
  if (!timeline_) return;
  auto device = [&](std::size_t s) { return "Device<" + std::to_string(stages[s].device) + ">"; };
  executors_.clear();
  tracks_.assign(stages.size(), {});
  std::vector<backend::Executor *> local; // across processes, the stages of this rank
  for (std::size_t s = 0; s < stages.size(); ++s) {
    executors_.push_back(stages[s].ex);
    if (!stages[s].ex) continue;
    local.push_back(stages[s].ex);
    tracks_[s].device = tl.track(device(s));
    if (stages[s].to_next) tracks_[s].next = tl.track(device(s) + " -> " + device(s + 1));
    if (stages[s].to_prev) tracks_[s].prev = tl.track(device(s) + " -> " + device(s - 1));
  }
  tl.begin_step(local);
}

#ifdef TANDEM_COMPILED // src/compiled.cpp
extern template void StepTrace::begin<float>(Timeline &, std::span<StageState<float>>);
extern template void StepTrace::begin<double>(Timeline &, std::span<StageState<double>>);
#endif

} // namespace tandem::detail
