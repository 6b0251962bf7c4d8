// SPDX-License-Identifier: Apache-2.0
// optim::OptimizerBase: what the library's optimizers share, their options, network, replay id and
// per-group states, with the Optimizer protocol's bookkeeping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "tandem/error.hpp"
#include "tandem/optim/optimizer.hpp"

namespace tandem::optim {

// `State` holds a group's `group` (ParameterGroup<float>) and its `steps` count, beside the
// buffers the optimizer keeps for it. The network's step in flight (train_step_async) uses those
// buffers and holds a pointer to the optimizer, to undo its count after a bad label: making,
// moving or destroying an optimizer completes that step first, so that its failure reaches its
// PendingLoss and its count is undone where the state is.
template <class Options, class State> class OptimizerBase {
public:
  // options_ copied first: SGD's options have no default (RequiredLr).
  OptimizerBase(OptimizerBase &&other) noexcept : options_(other.options_) { *this = std::move(other); }
  OptimizerBase &operator=(OptimizerBase &&other) noexcept {
    if (this == &other) return *this;
    {
      // Both turns at once, in an order std::lock chooses: no deadlock with a move the other way.
      std::unique_lock<std::recursive_mutex> mine, theirs;
      if (mutex_) mine = std::unique_lock(*mutex_, std::defer_lock);
      if (other.mutex_) theirs = std::unique_lock(*other.mutex_, std::defer_lock);
      if (mine.mutex() && theirs.mutex()) std::lock(mine, theirs);
      else if (mine.mutex()) mine.lock();
      else if (theirs.mutex()) theirs.lock();
      complete_step_in_flight(groups_);
      complete_step_in_flight(other.groups_);
      options_ = other.options_;
      owner_ = std::exchange(other.owner_, nullptr); // a moved-from optimizer trains no network
      id_ = other.id_;
      groups_ = std::move(other.groups_);
      tracks_network_ = other.tracks_network_;
    }
    mutex_ = std::move(other.mutex_); // (this one's old mutex is released above, before it may go)
    return *this;
  }
  ~OptimizerBase() {
    const auto held = turn();
    complete_step_in_flight(groups_);
  }

  const Options &options() const { return options_; }
  // The learning rate of the next step (set_lr changes it).
  float lr() const { return options_.lr; }
  const void *owner() const { return owner_; }
  // Steps taken by group i.
  std::size_t steps(std::size_t i) const { return groups_.at(i).steps; }
  // Replayable: a replayed step counts as step_group(i) would have.
  void replayed(std::size_t i) {
    auto &s = groups_.at(i);
    if (s.group.size) ++s.steps;
  }
  // Discardable: undoes the last step's count of every group.
  void discard_step() {
    for (auto &s : groups_)
      if (s.group.size && s.steps) --s.steps;
  }

protected:
  template <class Net>
  OptimizerBase(Net &net, Options options) : options_(options), owner_(&net), id_(detail::next_optimizer_id()) {
    const auto groups = net.parameter_groups();
    for (const auto &g : groups) // (across processes the first stages may be another rank's)
      if (g.executor) {
        mutex_ = g.executor->shared_issue_mutex();
        break;
      }
    tracks_network_ = !groups.empty() && !groups.front().in_flight.expired();
    // Every step on its devices, the network's included: making the state waits on them.
    const auto held = turn();
    complete_steps_on_devices(groups);
  }
  // The turn of the network's Context (Executor::issue_mutex), held while the optimizer issues or
  // waits; unlocked where it has none (moved from).
  std::unique_lock<std::recursive_mutex> turn() const {
    return mutex_ ? std::unique_lock(*mutex_) : std::unique_lock<std::recursive_mutex>();
  }
  // Stepping needs the network's memory: Error once the network is gone (held under turn()).
  void require_network(const char *call) const {
    if (tracks_network_ && !groups_.empty() && groups_.front().group.in_flight.expired())
      detail::fail(call, ": the optimizer's network was destroyed");
  }
  // The learning rate from the next step on, already checked. A captured step keeps the rate it
  // was captured with, so a new rate takes a new replay id: no step captured with the old one
  // replays, the next is issued and the one after it captured anew.
  void change_lr(float lr) {
    if (lr == options_.lr) return;
    options_.lr = lr;
    id_ = detail::next_optimizer_id();
  }

  Options options_;
  const void *owner_ = nullptr;
  std::uint64_t id_ = 0;
  std::vector<State> groups_;
  // Kept alive by the optimizer itself: the network and the Context may go first.
  std::shared_ptr<std::recursive_mutex> mutex_;
  bool tracks_network_ = false; // made from a network that says when it is gone (in_flight)

public:
  // For checkpoints (tandem/checkpoint.hpp): group i's state tensors, each on the group's device and
  // as long as the group, as f(name, data, holds a value only after the first step); and its count.
  template <class F> void visit_state(std::size_t i, F &&f) const { groups_.at(i).visit_tensors(f); }
  void restore_steps(std::size_t i, std::size_t steps) { groups_.at(i).restore_steps(steps); }
};

} // namespace tandem::optim
