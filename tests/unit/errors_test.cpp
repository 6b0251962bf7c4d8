// SPDX-License-Identifier: Apache-2.0
// Bad input throws tandem::Error saying what and where, and changes nothing: after it, training
// continues exactly as in a twin network that never saw the bad call.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

// Task lists that wait on each other: stage 1 starts with micro-batch 1's forward, which needs
// stage 0's, which stage 0 runs only after micro-batch 0's backward, which needs stage 1's.
struct Deadlocked {
  std::size_t count(std::size_t) const { return 2; }
  std::vector<schedule::Task> order(std::size_t s, std::size_t, std::size_t) const {
    using schedule::Task;
    if (s == 0) return {{Task::forward, 0}, {Task::backward, 0}, {Task::forward, 1}, {Task::backward, 1}};
    return {{Task::forward, 1}, {Task::forward, 0}, {Task::backward, 0}, {Task::backward, 1}};
  }
};
} // namespace

TEST_CASE("bad input throws and leaves parameters and optimizer state untouched") {
  Context ctx({.devices = "host"});
  Net net(ctx, 42), twin(ctx, 42);
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f}), twin_opt(twin, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const std::size_t batch = 8;
  const auto x = test::uniform<float>(batch * 10, 61);
  const auto y = test::labels(batch, 2, 62);
  // One good step first, so there is momentum state to protect.
  net.train_step(x, y, ce, opt);
  twin.train_step(x, y, ce, twin_opt);
  const auto before = test::snapshot(net);

  const std::vector<float> short_x(x.begin(), x.end() - 3);
  CHECK_THROWS_WITH_AS(net.train_step(short_x, y, ce, opt),
                       doctest::Contains("the input has 77 values, which is not a positive whole number of rows of 10"),
                       Error);
  CHECK_THROWS_WITH_AS(net.train_step(std::vector<float>{}, std::vector<std::int32_t>{}, ce, opt),
                       doctest::Contains("the input has 0 values"), Error);
  CHECK_THROWS_WITH_AS(net.forward(std::vector<float>{}), doctest::Contains("forward: the input has 0 values"), Error);
  const std::vector<std::int32_t> short_y(y.begin(), y.end() - 1);
  CHECK_THROWS_WITH_AS(net.train_step(x, short_y, ce, opt), doctest::Contains("expected 8 labels"), Error);
  auto bad_y = y;
  bad_y[5] = 2;
  CHECK_THROWS_WITH_AS(net.train_step(x, bad_y, ce, opt), doctest::Contains("label 5 is 2, outside [0, 2)"), Error);
  bad_y[5] = -1;
  CHECK_THROWS_WITH_AS(net.train_step(x, bad_y, ce, opt), doctest::Contains("label 5 is -1"), Error);
  CHECK_THROWS_WITH_AS(net.parameter("stage1.1.weight"),
                       doctest::Contains("no parameter named 'stage1.1.weight'; this network has: stage0.0.weight"),
                       Error);
  const std::vector<float> wrong(199, 0.5f);
  CHECK_THROWS_WITH_AS(
      net.parameter("stage0.0.weight").copy_from(wrong),
      doctest::Contains("Parameter 'stage0.0.weight' (20 x 10 = 200 values on host:0): copy_from got 199"), Error);
  CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, twin_opt), doctest::Contains("optimizer was built for another network"),
                       Error);
  // Found before any work is issued: no gradient zeroed, no task left queued.
  CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt, Deadlocked{}),
                       doctest::Contains("the task order of stage 0 cannot be issued"), Error);
  CHECK_THROWS_WITH_AS(net.forward_backward(x, y, ce, Deadlocked{}), doctest::Contains("cannot be issued"), Error);

  CHECK(test::snapshot(net) == before);
  CHECK(opt.steps(0) == 1);
  CHECK(opt.steps(1) == 1);
  // The momentum buffers are intact too: the next step matches the twin's bit for bit.
  CHECK(net.train_step(x, y, ce, opt) == twin.train_step(x, y, ce, twin_opt));
  CHECK(test::snapshot(net) == test::snapshot(twin));
}

TEST_CASE("check_finite: a NaN loss throws before any optimizer step") {
  Context checked({.devices = "host", .check_finite = true}), unchecked({.devices = "host"});
  Net net(checked, 5), twin(unchecked, 5);
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f}), twin_opt(twin, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const std::size_t batch = 6;
  auto x = test::uniform<float>(batch * 10, 81);
  const auto y = test::labels(batch, 2, 82);
  // On good data checking changes nothing: same losses, same parameters.
  for (int i = 0; i < 2; ++i) CHECK(net.train_step(x, y, ce, opt) == twin.train_step(x, y, ce, twin_opt));
  CHECK(test::snapshot(net) == test::snapshot(twin));

  const auto before = test::snapshot(net);
  auto poisoned = x;
  poisoned[7] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(net.train_step(poisoned, y, ce, opt, schedule::GPipe{.micro_batches = 2}),
                       doctest::Contains("the loss is nan (check_finite is on): no optimizer step was taken"), Error);
  CHECK(test::snapshot(net) == before);
  CHECK(opt.steps(0) == 2);
  CHECK(opt.steps(1) == 2);
  CHECK(net.train_step(x, y, ce, opt) == twin.train_step(x, y, ce, twin_opt));
  CHECK(test::snapshot(net) == test::snapshot(twin));

  // Unchecked, the same step goes through and poisons the weights: what checking is for.
  CHECK(std::isnan(twin.train_step(poisoned, y, ce, twin_opt)));
  const auto poisoned_weights = twin.parameter("stage0.0.weight").to_host();
  CHECK(std::any_of(poisoned_weights.begin(), poisoned_weights.end(), [](float w) { return std::isnan(w); }));
}
