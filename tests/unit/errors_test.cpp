// SPDX-License-Identifier: Apache-2.0
// Bad input throws tandem::Error saying what and where, and changes nothing: after it, training
// continues exactly as in a twin network that never saw the bad call.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
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

  CHECK(test::snapshot(net) == before);
  CHECK(opt.steps(0) == 1);
  CHECK(opt.steps(1) == 1);
  // The momentum buffers are intact too: the next step matches the twin's bit for bit.
  CHECK(net.train_step(x, y, ce, opt) == twin.train_step(x, y, ce, twin_opt));
  CHECK(test::snapshot(net) == test::snapshot(twin));
}
