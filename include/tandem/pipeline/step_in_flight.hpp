// SPDX-License-Identifier: Apache-2.0
// detail::NetworkStepInFlight: a network's step in flight (train_step_async issues it, the next
// call on the network, a PendingLoss or a bystander on its devices completes it), the network's
// one implementation of backend::StepInFlight.
#pragma once

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/step_in_flight.hpp"
#include "tandem/error.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_io.hpp"
#include "tandem/pipeline/step_trace.hpp"
#include "tandem/timeline.hpp"

namespace tandem::detail {

// Waits for every executor, then rethrows the first failure any of them kept.
inline void synchronize_all(std::span<backend::Executor *const> executors) {
  std::exception_ptr first;
  for (backend::Executor *ex : executors) {
    try {
      ex->synchronize();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

template <class T> class NetworkStepInFlight final : public backend::StepInFlight {
public:
  // `executors`: the network's, each stage's in stage order; they outlive this.
  explicit NetworkStepInFlight(std::vector<backend::Executor *> executors) : executors_(std::move(executors)) {}

  // Across processes: settles the outcome with the other ranks once the work is done (the loss
  // comes from the last stage's rank, a failure anywhere fails the step everywhere).
  using Settle = std::function<void(StepOutcome<T> &, std::exception_ptr &)>;
  void settle_with(Settle settle) { settle_ = std::move(settle); }

  // A step was issued: its outcome (which PendingLoss reads) and what a bad target found on the
  // device requires when it completes (undoing the optimizer's count, then the Error). Listed on
  // every device of the network, so that whoever waits there first completes it.
  void start(std::shared_ptr<StepInFlight> self, const std::shared_ptr<StepOutcome<T>> &outcome,
             std::function<void()> on_invalid);

  // Waits for the step, if any, and settles its outcome: the loss, or its failure (kept for
  // PendingLoss::get, not thrown here).
  void complete() noexcept override;
  bool finished() override;

  // This network's step and any other network's on its devices: whatever the network waits for
  // next must not take another step's failure.
  void complete_all() noexcept {
    complete();
    for (backend::Executor *ex : executors_) ex->complete_steps_in_flight();
  }

private:
  std::vector<backend::Executor *> executors_;
  std::shared_ptr<StepOutcome<T>> outcome_;
  std::function<void()> on_invalid_;
  Settle settle_;
};

// (Out of the class: a program linked with tandem::compiled finds them compiled there.)
template <class T>
void NetworkStepInFlight<T>::start(std::shared_ptr<StepInFlight> self, const std::shared_ptr<StepOutcome<T>> &outcome,
                                   std::function<void()> on_invalid) {
  outcome_ = outcome;
  on_invalid_ = std::move(on_invalid);
  outcome->step = self;
  for (backend::Executor *ex : executors_) ex->add_step_in_flight(self);
}
template <class T> void NetworkStepInFlight<T>::complete() noexcept {
  if (!outcome_) return;
  const auto outcome = std::exchange(outcome_, nullptr);
  const auto on_invalid = std::exchange(on_invalid_, nullptr);
  try {
    synchronize_all(executors_);
  } catch (...) {
    outcome->error = std::current_exception();
  }
  if (settle_) settle_(*outcome, outcome->error);
  try {
    if (!outcome->error && outcome->result.invalid) on_invalid();
  } catch (...) {
    outcome->error = std::current_exception();
  }
  outcome->done = true;
}
template <class T> bool NetworkStepInFlight<T>::finished() {
  return std::all_of(executors_.begin(), executors_.end(), [](backend::Executor *e) { return e->idle(); });
}

#ifdef TANDEM_COMPILED // src/compiled.cpp
extern template class NetworkStepInFlight<float>;
extern template class NetworkStepInFlight<double>;
#endif

// A step that completes before train_step returns: the timeline reads its events, and check_finite
// its loss before the update, which it then issues itself (not for a loss that is not finite).
template <class T, class Opt>
PendingLoss<T> finish_checked_step(NetworkStepInFlight<T> &in_flight, StepTrace &trace, std::span<StageState<T>> stages,
                                   std::span<backend::Executor *const> executors,
                                   const std::shared_ptr<StepOutcome<T>> &outcome, bool checking, Opt *opt) {
  in_flight.complete();
  if (!outcome->error && checking && !std::isfinite(static_cast<double>(outcome->result.loss))) {
    try {
      fail("train_step: the loss is ", outcome->result.loss, " (check_finite is on): no optimizer step was ",
           "taken, parameters and optimizer state are unchanged");
    } catch (...) {
      outcome->error = std::current_exception();
    }
  }
  if (outcome->error) {
    trace.end();
    std::rethrow_exception(outcome->error);
  }
  if constexpr (optimizing_v<Opt>) {
    if (checking) {
      for (std::size_t s = 0; s < stages.size(); ++s)
        if (stages[s].ex) trace.timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); });
      synchronize_all(executors);
    }
  }
  trace.end();
  return PendingLoss<T>(outcome);
}

} // namespace tandem::detail
