// SPDX-License-Identifier: Apache-2.0
// Learning-rate schedules drive the optimizer: a scheduled run trains exactly as one that sets the
// same rates by hand; bad options are errors that say what to pass. (The rates themselves are
// checked against torch.optim.lr_scheduler in tests/reference/lr_scheduler_test.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<5, 8>, Tanh>, Stage<Device<1>, Linear<8, 3>>>;

// Trains two copies of one network for `rates.size()` steps: one through `Sched`, one through
// set_lr with the rates given, and compares every parameter bit for bit after each step.
template <class Opt, class Sched, class SchedOptions>
void check_schedule_reaches_optimizer(typename Opt::Options opt_options, SchedOptions sched_options,
                                      const std::vector<double> &rates) {
  Context ctx({.devices = "host"});
  Net scheduled(ctx, 23), by_hand(ctx, 23);
  Opt a(scheduled, opt_options), b(by_hand, opt_options);
  Sched sched(a, sched_options);
  loss::CrossEntropy ce;
  const std::size_t batch = 11;
  for (std::size_t k = 0; k < rates.size(); ++k) {
    INFO("step ", k);
    b.set_lr(static_cast<float>(rates[k]));
    CHECK(a.lr() == b.lr());
    CHECK(sched.last_lr() == a.lr());
    const auto x = test::uniform<float>(batch * 5, 100 + k);
    const auto y = test::labels(batch, 3, 200 + k);
    scheduled.train_step(x, y, ce, a);
    by_hand.train_step(x, y, ce, b);
    for (std::size_t t = 0; t < scheduled.parameters().size(); ++t)
      CHECK(scheduled.parameters()[t].to_host() == by_hand.parameters()[t].to_host());
    sched.step();
  }
}
} // namespace

TEST_CASE("optim::StepLR's rates reach optim::SGD (with momentum) as set_lr's do") {
  const double lr = 0.3;
  std::vector<double> rates;
  for (int k = 0; k < 7; ++k) rates.push_back(double(0.3f) * std::pow(0.5, k / 2));
  check_schedule_reaches_optimizer<optim::SGD, optim::StepLR>(
      {.lr = float(lr), .momentum = 0.9f}, optim::StepLROptions{.step_size = 2, .gamma = 0.5}, rates);
}

TEST_CASE("optim::CosineAnnealingLR's rates reach optim::Adam as set_lr's do") {
  std::vector<double> rates;
  const double base = double(0.01f), eta = 1e-4;
  for (int k = 0; k < 6; ++k) rates.push_back(eta + (base - eta) * (1 + std::cos(std::numbers::pi * k / 5)) / 2);
  check_schedule_reaches_optimizer<optim::Adam, optim::CosineAnnealingLR>(
      {.lr = 0.01f}, optim::CosineAnnealingLROptions{.T_max = 5, .eta_min = eta}, rates);
}

TEST_CASE("optim::LinearLR warms optim::AdamW up as set_lr does") {
  std::vector<double> rates;
  const double base = double(0.02f);
  for (int k = 0; k < 6; ++k) rates.push_back(base * (0.25 + 0.75 * std::min(k, 4) / 4));
  check_schedule_reaches_optimizer<optim::AdamW, optim::LinearLR>(
      {.lr = 0.02f}, optim::LinearLROptions{.start_factor = 0.25, .total_iters = 4}, rates);
}

TEST_CASE("schedules take PyTorch's defaults and their first step when made") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.9f});
  optim::LinearLR warm(opt, {}); // start_factor 1/3 over 5 epochs
  CHECK(warm.last_epoch() == 0);
  CHECK(opt.lr() == static_cast<float>(double(0.9f) / 3));
  for (int k = 0; k < 5; ++k) warm.step();
  CHECK(opt.lr() == 0.9f);
  optim::StepLR step(opt, {.step_size = 1}); // gamma 0.1
  step.step();
  CHECK(opt.lr() == doctest::Approx(0.09f).epsilon(1e-6));
  optim::MultiStepLR multi(opt, {.milestones = {2, 1, 2}}); // gamma 0.1, applied twice at 2
  multi.step();
  multi.step();
  CHECK(opt.lr() == doctest::Approx(0.09 * 0.1 * 0.01).epsilon(1e-6));
  CHECK(multi.last_lr() == opt.lr());
}

TEST_CASE("a schedule reads a rate set by hand as its new current rate") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.5f});
  optim::ExponentialLR sched(opt, {.gamma = 0.5});
  sched.step();
  CHECK(opt.lr() == 0.25f);
  opt.set_lr(0.75f);
  sched.step();
  CHECK(opt.lr() == 0.375f);
}

TEST_CASE("optim::SequentialLR runs a warm-up, then a cosine from the base rate") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.8f});
  optim::LinearLR warm(opt, {.start_factor = 0.5, .total_iters = 2});
  optim::CosineAnnealingLR cosine(opt, {.T_max = 4});
  optim::SequentialLR sched(opt, {.schedulers = {&warm, &cosine}, .milestones = {2}});
  const double base = double(0.8f);
  std::vector<double> want{base * 0.5, base * 0.75, base}; // the warm-up; the cosine starts at its base
  for (int k = 1; k <= 4; ++k) want.push_back(base * (1 + std::cos(std::numbers::pi * k / 4)) / 2);
  for (std::size_t k = 0; k < want.size(); ++k) {
    INFO("epoch ", k);
    CHECK(opt.lr() == doctest::Approx(want[k]).epsilon(1e-6));
    CHECK(sched.last_lr() == opt.lr());
    CHECK(sched.last_epoch() == int(k));
    sched.step();
  }
}

TEST_CASE("schedules refuse options PyTorch has no default for, or cannot use, and say what to pass") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1), other(ctx, 2);
  optim::SGD opt(net, {.lr = 0.1f}), other_opt(other, {.lr = 0.1f});
  CHECK_THROWS_WITH_AS(optim::StepLR(opt, {.gamma = 0.5}),
                       doctest::Contains("pass one, as in optim::StepLR sched(opt, {.step_size = 30})"), Error);
  CHECK_THROWS_WITH_AS(optim::StepLR(opt, {.step_size = 0}), doctest::Contains("step_size is 0 (must be >= 1)"), Error);
  CHECK_THROWS_WITH_AS(optim::ExponentialLR(opt, {}), doctest::Contains("{.gamma = 0.95}"), Error);
  CHECK_THROWS_WITH_AS(optim::CosineAnnealingLR(opt, {.eta_min = 0.01}), doctest::Contains("{.T_max = 100}"), Error);
  CHECK_THROWS_WITH_AS(optim::LinearLR(opt, {.start_factor = 0}),
                       doctest::Contains("start_factor is 0 (must be in (0, 1])"), Error);
  CHECK_THROWS_WITH_AS(optim::LinearLR(opt, {.total_iters = 0}), doctest::Contains("total_iters is 0"), Error);
  CHECK(opt.lr() == 0.1f); // refused schedules changed nothing
  optim::StepLR a(opt, {.step_size = 3}), b(other_opt, {.step_size = 3});
  CHECK_THROWS_WITH_AS(optim::SequentialLR(opt, {.schedulers = {&a, &b}, .milestones = {2}}),
                       doctest::Contains("scheduler 1 drives another optimizer"), Error);
  CHECK_THROWS_WITH_AS(optim::SequentialLR(opt, {.schedulers = {&a}, .milestones = {2}}),
                       doctest::Contains("1 schedulers need 0 milestones, but got 1"), Error);
  // A rate the optimizer refuses: the schedule does not count the step.
  optim::CosineAnnealingLR down(opt, {.T_max = 1, .eta_min = -1});
  CHECK_THROWS_WITH_AS(down.step(), doctest::Contains("invalid learning rate"), Error);
  CHECK(down.last_epoch() == 0);
  CHECK(opt.lr() == 0.1f);
}

TEST_CASE("optim::CosineAnnealingLR with T_max beyond 2^30 counts its period in 64 bits") {
  // 2 * T_max no longer fits an int: UBSan (scripts/sanitize.sh) reports an overflow there.
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.1f});
  constexpr int t_max = 1'200'000'000;
  optim::CosineAnnealingLR sched(opt, {.T_max = t_max, .eta_min = 0.01});
  for (int e = 1; e <= 3; ++e) {
    sched.step();
    const double closed = 0.01 + (0.1f - 0.01) * (1 + std::cos(std::numbers::pi * e / t_max)) / 2;
    CHECK(sched.last_lr() == doctest::Approx(closed).epsilon(1e-6));
  }
  CHECK(sched.describe() == "CosineAnnealingLR{T_max=1200000000, eta_min=0.01}");
}

TEST_CASE("schedules describe their kind and options, and restore the counters state() gives") {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.1f});
  optim::LinearLR warm(opt, {.total_iters = 3});
  optim::ExponentialLR decay(opt, {.gamma = 0.5});
  optim::SequentialLR seq(opt, {.schedulers = {&warm, &decay}, .milestones = {3}});
  for (int e = 0; e < 5; ++e) seq.step();
  CHECK(seq.describe() == "SequentialLR{schedulers=[LinearLR{start_factor=0.33333333333333331, end_factor=1, "
                          "total_iters=3}, ExponentialLR{gamma=0.5}], milestones=[3]}");
  const auto state = seq.state();
  REQUIRE(state.size() == 3);
  CHECK(state[0].last_epoch == 5);
  optim::SGD other_opt(net, {.lr = 0.1f});
  optim::LinearLR w2(other_opt, {.total_iters = 3});
  optim::ExponentialLR d2(other_opt, {.gamma = 0.5});
  optim::SequentialLR s2(other_opt, {.schedulers = {&w2, &d2}, .milestones = {3}});
  CHECK_THROWS_WITH_AS(s2.restore(std::span(state).first(2)), doctest::Contains("takes 3 states, but got 2"), Error);
  CHECK(s2.last_epoch() == 0);
  s2.restore(state);
  other_opt.set_lr(opt.lr());
  seq.step();
  s2.step();
  CHECK(s2.last_epoch() == seq.last_epoch());
  CHECK(other_opt.lr() == opt.lr());
}
