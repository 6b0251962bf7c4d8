// SPDX-License-Identifier: Apache-2.0
// backend::StepInFlight: a step issued and not yet completed (a network's train_step_async), and
// StepInFlight::List, the steps each device may still be running.
#pragma once

#include <memory>
#include <utility>
#include <vector>

namespace tandem::backend {

// A step in flight fails on its devices, where the failure waits to be rethrown by whoever next
// synchronizes. That must be the step's own PendingLoss, not a Tensor read, an optimizer or another
// network that happened to wait on the same device first: those complete the step before they wait.
class StepInFlight {
public:
  // Waits for the step, if one is still in flight, and keeps its outcome (the loss, or its
  // failure) for whoever asked for it. Throws nothing.
  virtual void complete() noexcept = 0;
  // Whether the step's work has all run, asked without waiting.
  virtual bool finished() = 0;

  class List;

protected:
  ~StepInFlight() = default;
};

// The steps issued on one device that may still be in flight, held weakly: a network that is
// gone has completed its step. Used from the issuing thread only, like every ordering call.
class StepInFlight::List {
public:
  void add(const std::shared_ptr<StepInFlight> &step) {
    std::erase_if(steps_, [&](const std::weak_ptr<StepInFlight> &w) {
      const auto held = w.lock();
      return !held || held == step;
    });
    steps_.push_back(step);
  }
  // Completes them all, oldest first. (A step completed by a device's list may still be listed
  // on its other devices; completing it again there does nothing.)
  void complete() noexcept {
    const auto steps = std::exchange(steps_, {});
    for (const auto &w : steps)
      if (const auto step = w.lock()) step->complete();
  }

private:
  std::vector<std::weak_ptr<StepInFlight>> steps_;
};

} // namespace tandem::backend
