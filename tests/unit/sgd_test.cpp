// SPDX-License-Identifier: Apache-2.0
// optim::SGD against torch.optim.SGD's update rule, computed here in float64 from the gradients.
#include <doctest/doctest.h>

#include <algorithm>
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

void check_against_reference(optim::SGD::Options options) {
  Context ctx({.devices = "host"});
  Net net(ctx, 17);
  optim::SGD opt(net, options);
  loss::CrossEntropy ce;
  const std::size_t batch = 9;
  const auto x = test::uniform<float>(batch * 5, 51);
  const auto y = test::labels(batch, 3, 52);
  Reference ref{options, {}};
  for (int step = 0; step < 3; ++step) {
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
  CHECK(opt.steps(0) == 3);
}
} // namespace

TEST_CASE("SGD with momentum, weight decay and nesterov matches the float64 rule") {
  check_against_reference({.lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.1f, .nesterov = true});
}

TEST_CASE("SGD with momentum, dampening and weight decay matches the float64 rule") {
  check_against_reference({.lr = 0.1f, .momentum = 0.8f, .dampening = 0.3f, .weight_decay = 0.05f});
}

TEST_CASE("plain SGD matches the float64 rule") { check_against_reference({.lr = 0.2f}); }

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
  // word left uninitialised would read as a bad label now and then and skip the update.
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
