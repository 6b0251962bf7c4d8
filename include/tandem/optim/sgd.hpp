// SPDX-License-Identifier: Apache-2.0
// optim::SGD: torch.optim.SGD with momentum, dampening, weight decay and Nesterov.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <type_traits>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/run.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/error.hpp"
#include "tandem/optim/optimizer_base.hpp"

namespace tandem::optim {

// A learning rate without a default: torch.optim.SGD has none. Leaving it out of SGD's options
// (or the options out) fails to compile with a message that says what to pass.
class RequiredLr {
public:
  constexpr RequiredLr(float lr) : value_(lr) {}
  template <class T = void> constexpr RequiredLr() : value_(0) {
    static_assert(never<T>, "optim::SGD has no default learning rate (as in PyTorch): pass one, as "
                            "in optim::SGD opt(net, {.lr = 0.1f})");
  }
  constexpr operator float() const { return value_; }
  friend std::ostream &operator<<(std::ostream &os, RequiredLr lr) { return os << lr.value_; }

  template <class> static constexpr bool never = false;

private:
  float value_;
};

// Fields in torch.optim.SGD's argument order, so {.lr = 0.01f, .momentum = 0.9f} reads like it.
struct SGDOptions {
  RequiredLr lr;
  float momentum = 0;
  float dampening = 0;
  float weight_decay = 0;
  bool nesterov = false;
};

// The bytes SGD holds for a stage of `parameters` parameters: its momentum buffer, where momentum
// is on (Net::memory_plan reads it).
constexpr std::size_t state_bytes(const SGDOptions &options, std::size_t parameters) {
  return options.momentum != 0 ? parameters * sizeof(float) : 0;
}

} // namespace tandem::optim

namespace tandem::detail {
// One group's state: its momentum buffer (where momentum is on), seeded on its first step.
struct SgdState {
  optim::ParameterGroup<float> group;
  Buffer<float> momentum;
  std::size_t steps;

  // Checkpoints: f(PyTorch's name, device buffer, whether it holds a value only after the first step).
  template <class F> void visit_tensors(F &&f) const {
    if (momentum.data()) f("momentum_buffer", momentum.data(), true);
  }
  void restore_steps(std::size_t n) { steps = n; }
};
} // namespace tandem::detail

namespace tandem::optim {

class SGD : public OptimizerBase<SGDOptions, detail::SgdState> {
public:
  using Options = SGDOptions;

  template <class Net> explicit SGD(Net &net) : SGD(net, Options{.lr = 0}) {
    static_assert(RequiredLr::never<Net>, "optim::SGD has no default learning rate (as in PyTorch): pass one, as "
                                          "in optim::SGD opt(net, {.lr = 0.1f})");
  }
  template <class Net> SGD(Net &net, Options options) : OptimizerBase(net, options) {
    static_assert(std::is_same_v<typename Net::value_type, float>, "optim::SGD trains float networks");
    // PyTorch's checks, raised before anything is allocated.
    if (!(options.lr >= 0)) detail::fail("optim::SGD: invalid learning rate ", options.lr, " (must be >= 0)");
    if (!(options.momentum >= 0)) detail::fail("optim::SGD: invalid momentum ", options.momentum, " (must be >= 0)");
    if (!(options.weight_decay >= 0))
      detail::fail("optim::SGD: invalid weight_decay ", options.weight_decay, " (must be >= 0)");
    if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
      detail::fail("optim::SGD: nesterov needs momentum > 0 and dampening == 0 (got momentum ", options.momentum,
                   ", dampening ", options.dampening, ")");
    for (const auto &g : net.parameter_groups()) {
      auto &s = groups_.emplace_back(State{g, {}, 0});
      if (options.momentum != 0 && g.size) s.momentum = detail::Buffer<float>(*g.executor, g.size);
    }
  }

  // The learning rate from the next step on, as assigning a param group's "lr" does in PyTorch (what
  // an LR schedule does), checked as the constructor checks it; see OptimizerBase::change_lr.
  void set_lr(float lr) {
    if (!(lr >= 0)) detail::fail("optim::SGD::set_lr: invalid learning rate ", lr, " (must be >= 0)");
    change_lr(lr);
  }

  void step_group(std::size_t i) {
    const auto held = this->turn();
    this->require_network("step_group");
    auto &s = groups_.at(i);
    if (!s.group.size) return;
    s.group.executor->submit([ex = s.group.executor, op = take_step(s)] { ex->run(op); });
  }
  // step_group's update, described for the network to run inside its own operation (Fusable).
  backend::op::Update<float> fused_step_group(std::size_t i) {
    const auto held = this->turn();
    this->require_network("fused_step_group");
    auto &s = groups_.at(i);
    if (!s.group.size) return {};
    return {.kind = backend::op::UpdateKind::sgd, .sgd = take_step(s)};
  }

  // The step of a group that has momentum differs only on its first (which seeds the buffer).
  std::optional<std::uint64_t> replay_id() const {
    for (const auto &s : groups_)
      if (s.group.size && s.steps == 0 && options_.momentum != 0) return std::nullopt;
    return id_;
  }

  // Steps every group and waits for it: for loops that call forward/backward themselves.
  void step() {
    const auto held = this->turn();
    this->require_network("step");
    optim::complete_steps_on_devices(groups_); // their failures are for their PendingLoss, not this wait
    for (std::size_t i = 0; i < groups_.size(); ++i) step_group(i);
    for (auto &s : groups_)
      if (s.group.executor) s.group.executor->synchronize(); // (null: another rank's stage)
  }

private:
  using State = detail::SgdState;
  // The next step of a group, counted.
  backend::op::SgdStep<float> take_step(State &s) {
    const backend::op::SgdStep<float> op{.n = s.group.size,
                                         .params = s.group.params,
                                         .grads = s.group.grads,
                                         .momentum_buffer = s.momentum.data(),
                                         .lr = options_.lr,
                                         .momentum = options_.momentum,
                                         .dampening = options_.dampening,
                                         .weight_decay = options_.weight_decay,
                                         .nesterov = options_.nesterov,
                                         .first = s.steps == 0,
                                         .skip = s.group.skip};
    ++s.steps;
    return op;
  }
};

} // namespace tandem::optim
