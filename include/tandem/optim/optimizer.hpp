// SPDX-License-Identifier: Apache-2.0
// The optimizer protocol: what a pipeline hands an optimizer, and what it asks of it.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "tandem/backend/executor.hpp"

namespace tandem::optim {

// The flat parameters and gradients of one stage, on that stage's device.
template <class T> struct ParameterGroup {
  backend::Executor *executor = nullptr;
  T *params = nullptr;
  T *grads = nullptr;
  std::size_t size = 0;
  // Device memory the group's executor can read: nonzero when the step runs means the step found
  // bad input on the device (a label out of range), and the update must change nothing. Pass it
  // on as the optimizer op's `skip`. Null where the pipeline checks input on the host instead.
  const std::int32_t *skip = nullptr;
  // The network's step in flight (train_step_async), which uses the optimizer's state: held
  // weakly, expired once the network is gone, so that an optimizer without device state may
  // outlive the network and its Context.
  std::weak_ptr<backend::StepInFlight> in_flight{};
};

// `states`: an optimizer's per-group states (each holding a `group`) or a network's groups.
template <class State> const auto &group_of(const State &s) {
  if constexpr (requires { s.group; }) return s.group;
  else return s;
}
// Completes the network's step in flight, if the network is still there and has one: the library's
// optimizers do so before they are moved or destroyed (OptimizerBase).
template <class States> void complete_step_in_flight(const States &states) noexcept {
  if (states.empty()) return;
  if (const auto step = group_of(states.front()).in_flight.lock()) step->complete();
}
// Completes every step in flight on the groups' devices (Executor::complete_steps_in_flight), the
// network's and any other's: when an optimizer is made or steps by hand, which waits on those
// devices and would otherwise take such a step's failure as its own.
template <class States> void complete_steps_on_devices(const States &states) noexcept {
  for (const auto &s : states)
    if (backend::Executor *ex = group_of(s).executor) ex->complete_steps_in_flight();
}

// An optimizer is built from a network (it keeps its state beside each group, on that group's
// device) and steps one group at a time, so that a stage can update as soon as its backward is
// done while others still work. `step_group` only issues work on the group's executor.
template <class O>
concept Optimizer = requires(O &o, std::size_t i, const void *owner) {
  { o.owner() } -> std::convertible_to<const void *>;
  o.step_group(i);
};

// Optional: undoes the bookkeeping (step counts) of the last step_group() of every group, after a
// step whose device-side update was skipped (see ParameterGroup::skip). A pipeline checks labels
// already on the device during the step only for optimizers that can do this; for others it
// reads them back and checks them first.
template <class O>
concept Discardable = Optimizer<O> && requires(O &o) {
  o.discard_step();
};

// Optional, for graphs (ContextOptions::graphs): replay_id() is the same value for two steps
// exactly when step_group() would issue the same work with the same arguments for both (nullopt
// when the next step differs from the last, as a first step that seeds momentum does); the
// pipeline then may replay a captured step instead, and calls replayed(i) in place of
// step_group(i) so the bookkeeping advances as if it had issued.
template <class O>
concept Replayable = Optimizer<O> && requires(O &o, const O &c, std::size_t i) {
  { c.replay_id() } -> std::same_as<std::optional<std::uint64_t>>;
  o.replayed(i);
};

// Optional: fused_step_group(i) takes group i's step as step_group(i) does (the same bookkeeping),
// but returns the update as a description (op::Update) instead of issuing it, for the pipeline to
// run inside its own operation: a whole-network step (op::SmallNetwork) then also updates every
// stage, in the same launch.
template <class O>
concept Fusable = Optimizer<O> && requires(O &o, std::size_t i) {
  { o.fused_step_group(i) } -> std::same_as<backend::op::Update<float>>;
};

} // namespace tandem::optim

namespace tandem::detail {
// Distinct for every optimizer made in this process: a replay_id that a new optimizer at the
// address of a destroyed one cannot share.
inline std::uint64_t next_optimizer_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
} // namespace tandem::detail
