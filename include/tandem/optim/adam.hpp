// SPDX-License-Identifier: Apache-2.0
// optim::Adam: torch.optim.Adam (L2 weight decay, AMSGrad, PyTorch's bias correction).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/run.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/error.hpp"
#include "tandem/optim/optimizer_base.hpp"

namespace tandem::optim {

// Fields in torch.optim.Adam's argument order, so {.lr = 0.01f, .betas = {0.9f, 0.99f}} reads like it.
struct AdamOptions {
  float lr = 1e-3f;
  std::pair<float, float> betas{0.9f, 0.999f};
  float eps = 1e-8f;
  float weight_decay = 0;
  bool amsgrad = false;
};

} // namespace tandem::optim

namespace tandem::detail {

// One group's state: the moments (and AMSGrad's running maximum), and the step count on the device.
struct AdamState {
  optim::ParameterGroup<float> group;
  Buffer<backend::op::AdamCount> count; // the device's count of steps taken
  Buffer<float> exp_avg, exp_avg_sq, max_exp_avg_sq;
  std::size_t steps; // the same count, kept on the host for steps(i)

  // Checkpoints: f(PyTorch's name, device buffer, whether it holds a value only after the first step).
  template <class F> void visit_tensors(F &&f) const {
    f("exp_avg", exp_avg.data(), false);
    f("exp_avg_sq", exp_avg_sq.data(), false);
    if (max_exp_avg_sq.data()) f("max_exp_avg_sq", max_exp_avg_sq.data(), false);
  }
  // The next step computes its scalars from the count's `steps` alone.
  void restore_steps(std::size_t n) {
    steps = n;
    if (!group.size) return;
    const backend::op::AdamCount c{.steps = static_cast<std::int64_t>(n)};
    group.executor->upload(count.data(), &c, sizeof c);
    group.executor->synchronize();
  }
};

// Adam and AdamW differ only in where weight decay enters (the gradient, or the weight itself),
// so one body serves both; `Decoupled` picks AdamW's form and the name in messages.
template <class Options, bool Decoupled> class AdamFamily : public optim::OptimizerBase<Options, AdamState> {
  using Base = optim::OptimizerBase<Options, AdamState>;
  using Base::groups_;
  using Base::id_;
  using Base::options_;

public:
  // The base completes a step in flight first: this synchronises below, and the step's failure
  // belongs to its PendingLoss.
  template <class Net> AdamFamily(Net &net, Options options = {}) : Base(net, options) {
    static_assert(std::is_same_v<typename Net::value_type, float>, "optim::Adam/AdamW train float networks");
    validate(options);
    const auto held = this->turn();
    for (const auto &g : net.parameter_groups()) {
      auto &s = groups_.emplace_back(State{g, {}, {}, {}, {}, 0});
      if (!g.size) continue;
      s.count = Buffer<backend::op::AdamCount>(*g.executor, 1);
      const backend::op::AdamCount zero{};
      g.executor->upload(s.count.data(), &zero, sizeof zero);
      s.exp_avg = Buffer<float>(*g.executor, g.size);
      s.exp_avg_sq = Buffer<float>(*g.executor, g.size);
      if (options.amsgrad) s.max_exp_avg_sq = Buffer<float>(*g.executor, g.size);
    }
    // PyTorch starts both moments (and AMSGrad's running maximum) at zero.
    for (auto &s : groups_) {
      if (!s.group.size) continue;
      s.group.executor->submit([ex = s.group.executor, n = s.group.size,
                                bufs = std::array{s.exp_avg.data(), s.exp_avg_sq.data(), s.max_exp_avg_sq.data()}] {
        for (float *b : bufs)
          if (b) ex->run(backend::op::Fill<float>{.n = n, .value = 0.0f, .dst = b});
      });
    }
    // The buffers must not be freed under a pending fill if this optimizer is dropped at once.
    for (auto &s : groups_)
      if (s.group.executor) s.group.executor->synchronize(); // (null: another rank's stage)
  }
  // The learning rate from the next step on, as assigning a param group's "lr" does in PyTorch,
  // checked as the constructor checks it; see OptimizerBase::change_lr. (The bias correction of a
  // group's next step uses steps(i) + 1.)
  void set_lr(float lr) {
    Options changed = options_;
    changed.lr = lr;
    validate(changed);
    this->change_lr(lr);
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
    return {.kind = backend::op::UpdateKind::adam, .adam = take_step(s)};
  }

  // The step number lives on the device (op::AdamCount): every step issues the same work, and a
  // captured one replays with the next number. A step skipped on the device left it as it was.
  std::optional<std::uint64_t> replay_id() const { return id_; }

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
  static constexpr const char *name = Decoupled ? "optim::AdamW" : "optim::Adam";

  // PyTorch's checks (it raises ValueError), made before anything is allocated. Written as
  // !(x >= lo) so that NaN fails too. Unlike PyTorch, eps = 0 is refused: with a zero gradient
  // history the update would divide 0 by 0.
  static void validate(const Options &o) {
    if (!(o.lr >= 0) || !std::isfinite(o.lr))
      fail(name, ": invalid learning rate ", o.lr, " (must be finite and >= 0)");
    if (!(o.betas.first >= 0 && o.betas.first < 1))
      fail(name, ": invalid beta parameter at index 0: ", o.betas.first, " (must be in [0, 1))");
    if (!(o.betas.second >= 0 && o.betas.second < 1))
      fail(name, ": invalid beta parameter at index 1: ", o.betas.second, " (must be in [0, 1))");
    if (!(o.eps > 0) || !std::isfinite(o.eps)) fail(name, ": invalid epsilon ", o.eps, " (must be finite and > 0)");
    if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
      fail(name, ": invalid weight_decay ", o.weight_decay, " (must be finite and >= 0)");
  }

  using State = AdamState;
  // The next step of a group, counted. PyTorch counts from 1: the first step's bias correction
  // is 1 - beta^1.
  backend::op::AdamStep<float> take_step(State &s) {
    ++s.steps;
    const backend::op::AdamStep<float> op{.n = s.group.size,
                                          .params = s.group.params,
                                          .grads = s.group.grads,
                                          .exp_avg = s.exp_avg.data(),
                                          .exp_avg_sq = s.exp_avg_sq.data(),
                                          .max_exp_avg_sq = s.max_exp_avg_sq.data(),
                                          .lr = options_.lr,
                                          .beta1 = options_.betas.first,
                                          .beta2 = options_.betas.second,
                                          .eps = options_.eps,
                                          .weight_decay = options_.weight_decay,
                                          .decoupled = Decoupled,
                                          .amsgrad = options_.amsgrad,
                                          .step = static_cast<std::int64_t>(s.steps),
                                          .skip = s.group.skip,
                                          .count = s.count.data()};
    return op;
  }
};

// What an Adam-family optimizer holds for a stage of `parameters` parameters: both moments, AMSGrad's
// running maximum where it is on, and the step count on the device (Net::memory_plan reads it).
template <class Options> constexpr std::size_t adam_state_bytes(const Options &options, std::size_t parameters) {
  if (!parameters) return 0;
  return sizeof(backend::op::AdamCount) + (options.amsgrad ? 3 : 2) * parameters * sizeof(float);
}

} // namespace tandem::detail

namespace tandem::optim {

constexpr std::size_t state_bytes(const AdamOptions &options, std::size_t parameters) {
  return detail::adam_state_bytes(options, parameters);
}

// Adam (Kingma & Ba, 2015) as torch.optim.Adam computes it: weight_decay adds an L2 term to the
// gradient; see AdamW for decay applied to the weights.
class Adam : public detail::AdamFamily<AdamOptions, false> {
public:
  using Options = AdamOptions;
  using AdamFamily::AdamFamily;
};

} // namespace tandem::optim
