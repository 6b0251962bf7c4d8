// SPDX-License-Identifier: Apache-2.0
// The optimizer protocol: what a pipeline hands an optimizer, and what it asks of it.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"

namespace tandem::optim {

// The flat parameters and gradients of one stage, on that stage's device.
template <class T> struct ParameterGroup {
  backend::Executor *executor = nullptr;
  T *params = nullptr;
  T *grads = nullptr;
  std::size_t size = 0;
};

// An optimizer is built from a network (it keeps its state beside each group, on that group's
// device) and steps one group at a time, so that a stage can update as soon as its backward is
// done while others still work. `step_group` only issues work on the group's executor.
template <class O>
concept Optimizer = requires(O &o, std::size_t i, const void *owner) {
  { o.owner() } -> std::convertible_to<const void *>;
  o.step_group(i);
};

} // namespace tandem::optim
