// SPDX-License-Identifier: Apache-2.0
// PendingLoss: the loss of a training step issued by train_step_async, read when asked for.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>

#include "tandem/backend/step_in_flight.hpp"
#include "tandem/error.hpp"

namespace tandem {

namespace detail {
// What a step leaves on its last stage's device, downloaded in one copy: the loss, and whether
// the targets failed the loss's check on the device (the update was then skipped there).
template <class T> struct StepResult {
  T loss;
  std::int32_t invalid;
};

// Shared by the pipeline, which completes the step, and the PendingLoss that reads it.
template <class T> struct StepOutcome {
  StepResult<T> result{}; // the download's destination: stays put while the step is in flight
  bool done = false;
  std::exception_ptr error; // the step's failure, rethrown by get()
  // The network's step in flight, which completes this outcome; expired once the network is gone
  // (which completes it first).
  std::weak_ptr<backend::StepInFlight> step;
  // The network's Context's turn (Executor::issue_mutex): another thread's call on that Context
  // may complete the step, so the fields above are read and written under it.
  std::shared_ptr<std::recursive_mutex> mutex;
};
} // namespace detail

// A step's loss, on request. A pipeline keeps at most one step in flight: its next call (another
// step, a forward, the pipeline's destruction) first completes the step before, and get() does
// so at once. Until then the issuing thread is free, and a GPU runs the step meanwhile.
// Any thread may ask (it takes the Context's turn, docs/threads.md).
template <class T> class PendingLoss {
public:
  PendingLoss() = default;
  explicit PendingLoss(std::shared_ptr<detail::StepOutcome<T>> outcome) : outcome_(std::move(outcome)) {}

  // Whether this refers to a step at all (a default-constructed one does not).
  bool valid() const { return outcome_ != nullptr; }
  // Whether the step has completed, so that get() will not wait. Asks the devices without waiting,
  // so a loop may poll it while it does other work; once true, the step is complete.
  bool ready() const {
    if (!outcome_) return false;
    const auto held = turn();
    if (!outcome_->done)
      if (const auto step = outcome_->step.lock(); step && step->finished()) step->complete();
    return outcome_->done;
  }

  // The step's loss, as train_step would have returned it; waits for the step if it is still in
  // flight. Throws what train_step would have thrown (bad targets found on the device: Error,
  // with parameters and optimizer state as they were), each time it is asked.
  T get() const {
    if (!outcome_) detail::fail("PendingLoss::get: this PendingLoss refers to no step");
    const auto held = turn();
    if (!outcome_->done)
      if (const auto step = outcome_->step.lock()) step->complete();
    if (outcome_->error) std::rethrow_exception(outcome_->error);
    return outcome_->result.loss;
  }

private:
  std::unique_lock<std::recursive_mutex> turn() const {
    return outcome_->mutex ? std::unique_lock(*outcome_->mutex) : std::unique_lock<std::recursive_mutex>();
  }

  std::shared_ptr<detail::StepOutcome<T>> outcome_;
};

} // namespace tandem
