// SPDX-License-Identifier: Apache-2.0
// optim::SGD against torch.optim.SGD's update rule, computed here in float64 from the gradients.
#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<5, 4>, Tanh>, Stage<Device<1>, Linear<4, 3>>>;

// torch.optim.SGD, step by step: d = g + wd * p; buf = d (first) or m * buf + (1 - damp) * d;
// d = d + m * buf (nesterov) or buf; p -= lr * d.
struct Reference {
  optim::SGD::Options o;
  std::vector<std::vector<double>> buf;
  void step(std::vector<std::vector<double>> &params, const std::vector<std::vector<float>> &grads, bool first) {
    if (first) buf.assign(params.size(), {});
    for (std::size_t t = 0; t < params.size(); ++t) {
      if (first) buf[t].assign(params[t].size(), 0.0);
      for (std::size_t i = 0; i < params[t].size(); ++i) {
        double d = grads[t][i] + double(o.weight_decay) * params[t][i];
        if (o.momentum != 0) {
          buf[t][i] = first ? d : double(o.momentum) * buf[t][i] + (1 - double(o.dampening)) * d;
          d = o.nesterov ? d + double(o.momentum) * buf[t][i] : buf[t][i];
        }
        params[t][i] -= double(o.lr) * d;
      }
    }
  }
};

// Three steps, or one per rate in `rates`: set_lr(rates[step]) before each (an LR schedule).
void check_against_reference(optim::SGD::Options options, const std::vector<float> &rates = {}) {
  Context ctx({.devices = "host"});
  Net net(ctx, 17);
  optim::SGD opt(net, options);
  loss::CrossEntropy ce;
  const std::size_t batch = 9;
  const auto x = test::uniform<float>(batch * 5, 51);
  const auto y = test::labels(batch, 3, 52);
  Reference ref{options, {}};
  const std::size_t steps = rates.empty() ? 3 : rates.size();
  for (std::size_t step = 0; step < steps; ++step) {
    if (!rates.empty()) {
      opt.set_lr(rates[step]);
      CHECK(opt.options().lr == rates[step]);
      ref.o.lr = rates[step];
    }
    std::vector<std::vector<double>> params;
    std::vector<std::vector<float>> grads;
    net.forward_backward(x, y, ce); // the gradients train_step is about to use
    for (const auto &p : net.parameters()) {
      const auto v = p.to_host();
      params.emplace_back(v.begin(), v.end());
      grads.push_back(p.grad_to_host());
    }
    ref.step(params, grads, step == 0);
    net.train_step(x, y, ce, opt);
    for (std::size_t t = 0; t < params.size(); ++t) {
      INFO("step ", step, " ", net.parameters()[t].name());
      CHECK(test::relative_error(net.parameters()[t].to_host(), params[t]) < 1e-6);
    }
  }
  CHECK(opt.steps(0) == steps);
}
} // namespace

TEST_CASE("SGD with momentum, weight decay and nesterov matches the float64 rule") {
  check_against_reference({.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.1f, .nesterov = true});
}

TEST_CASE("SGD with momentum, dampening and weight decay matches the float64 rule") {
  check_against_reference({.lr = 0.1f, .momentum = 0.8f, .dampening = 0.3f, .weight_decay = 0.05f});
}

TEST_CASE("plain SGD matches the float64 rule") { check_against_reference({.lr = 0.2f}); }

TEST_CASE("SGD's set_lr changes the rate from the next step on, momentum and all") {
  check_against_reference({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f}, {0.1f, 0.02f, 0.02f, 0.3f});
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.1f});
  const auto id = opt.replay_id();
  opt.set_lr(0.1f);
  CHECK(opt.replay_id() == id); // the same rate: the same step, which may still replay
  opt.set_lr(0.05f);
  CHECK(opt.replay_id() != id); // a step captured with the old rate must not replay
  CHECK_THROWS_WITH_AS(opt.set_lr(-1.0f), doctest::Contains("optim::SGD::set_lr: invalid learning rate -1"), Error);
  CHECK_THROWS_AS(opt.set_lr(std::numeric_limits<float>::quiet_NaN()), Error);
  CHECK(opt.options().lr == 0.05f);
  CHECK(opt.lr() == 0.05f);
}

TEST_CASE("SGD rejects PyTorch's invalid hyper-parameters") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  CHECK_THROWS_WITH_AS(optim::SGD(net, {.lr = -0.1f}), doctest::Contains("invalid learning rate -0.1"), Error);
  CHECK_THROWS_WITH_AS(optim::SGD(net, {.lr = 0.1f, .momentum = -1}), doctest::Contains("momentum"), Error);
  CHECK_THROWS_WITH_AS(optim::SGD(net, {.lr = 0.1f, .weight_decay = -1}), doctest::Contains("weight_decay"), Error);
  CHECK_THROWS_WITH_AS(optim::SGD(net, {.lr = 0.1f, .nesterov = true}), doctest::Contains("nesterov"), Error);
  CHECK_THROWS_WITH_AS(optim::SGD(net, {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f, .nesterov = true}),
                       doctest::Contains("dampening"), Error);
}

TEST_CASE("opt.step() by hand, before any training step, takes the step (the step's status starts clear)") {
  // The gradients start at zero, so only weight decay moves the weights: p -= lr * wd * p. A status
  // word left uninitialised would read as a bad label and skip the update: under ctest, where
  // MALLOC_PERTURB_ fills fresh host memory with garbage, every time.
  Context ctx({.devices = "host"});
  Net net(ctx, 23);
  const optim::SGD::Options options{.lr = 0.1f, .weight_decay = 0.5f};
  optim::SGD opt(net, options);
  Reference ref{options, {}};
  std::vector<std::vector<double>> params;
  std::vector<std::vector<float>> grads;
  for (const auto &p : net.parameters()) {
    const auto v = p.to_host();
    params.emplace_back(v.begin(), v.end());
    grads.push_back(p.grad_to_host());
    CHECK(std::all_of(grads.back().begin(), grads.back().end(), [](float g) { return g == 0; }));
  }
  ref.step(params, grads, true);
  opt.step();
  for (std::size_t t = 0; t < params.size(); ++t) {
    INFO(net.parameters()[t].name());
    CHECK(test::relative_error(net.parameters()[t].to_host(), params[t]) < 1e-6);
  }
}
