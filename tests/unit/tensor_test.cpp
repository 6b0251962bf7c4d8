// SPDX-License-Identifier: Apache-2.0
// Device-resident tensors: a pipeline reads them in place and trains exactly as from host data.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<6, 12>, ReLU>, Stage<Device<1>, Linear<12, 8>, Tanh>,
                     Stage<Device<2>, Linear<8, 3>>>;
} // namespace

TEST_CASE("Tensor: lives on its logical device, round-trips, rejects a wrong length") {
  Context ctx({.devices = "host"});
  const auto values = test::uniform<float>(3 * 5, 71);
  Tensor<float> t(ctx, Device<2>{}, 3, 5);
  t.copy_from(values);
  CHECK(t.to_host() == values);
  CHECK(t.device() == 2);
  CHECK(&t.executor() == &ctx.executor(2));
  CHECK(t.size() == 15);
  CHECK_THROWS_WITH_AS(t.copy_from(std::vector<float>(14, 1.0f)),
                       doctest::Contains("Tensor (3 x 5 on Device<2>): copy_from got 14 values"), Error);
  CHECK(t.to_host() == values);
}

TEST_CASE("training from tensors equals training from host data, bit for bit") {
  Context ctx({.devices = "host"});
  Net from_host(ctx, 9), from_tensors(ctx, 9);
  optim::SGD a(from_host, {.lr = 0.1f, .momentum = 0.9f}), b(from_tensors, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  for (std::size_t batch : {16u, 13u}) {
    const auto x = test::uniform<float>(batch * 6, 72 + batch);
    const auto y = test::labels(batch, 3, 73 + batch);
    const Tensor<float> tx(ctx, 0, batch, 6, x);
    const Tensor<std::int32_t> ty(ctx, 2, batch, 1, y);
    CHECK(from_host.train_step(x, y, ce, a) == from_tensors.train_step(tx, ty, ce, b));
    CHECK(from_host.train_step(x, y, ce, a, schedule::GPipe{.micro_batches = 3}) ==
          from_tensors.train_step(tx, ty, ce, b, schedule::GPipe{.micro_batches = 3}));
    CHECK(from_host.forward_backward(x, y, ce) == from_tensors.forward_backward(tx, ty, ce));
    Tensor<float> out(ctx, 2, batch, 3);
    from_tensors.forward(tx, out);
    CHECK(out.to_host() == from_host.forward(x));
    from_tensors.forward(tx, out, schedule::OneFOneB{.micro_batches = 2});
    CHECK(out.to_host() == from_host.forward(x, schedule::OneFOneB{.micro_batches = 2}));
  }
  CHECK(test::snapshot(from_host) == test::snapshot(from_tensors));
  // The input is read in place: only the two boundaries move bytes, as from host data.
  CHECK(from_tensors.transferred_bytes() == from_host.transferred_bytes());
}

TEST_CASE("tensors on the wrong device, wrong shapes or bad labels throw and change nothing") {
  Context ctx({.devices = "host"});
  Net net(ctx, 4);
  optim::SGD opt(net, {.lr = 0.1f});
  loss::CrossEntropy ce;
  const std::size_t batch = 5;
  const auto x = test::uniform<float>(batch * 6, 74);
  auto y = test::labels(batch, 3, 75);
  const auto before = test::snapshot(net);
  const Tensor<float> x_on_1(ctx, 1, batch, 6, x), x_on_0(ctx, 0, batch, 6, x);
  const Tensor<std::int32_t> y_on_2(ctx, 2, batch, 1, y), y_on_0(ctx, 0, batch, 1, y);
  CHECK_THROWS_WITH_AS(net.train_step(x_on_1, y_on_2, ce, opt),
                       doctest::Contains("the input tensor lives on Device<1> (host:1), but stage 0 runs on Device<0>"),
                       Error);
  CHECK_THROWS_WITH_AS(
      net.train_step(x_on_0, y_on_0, ce, opt),
      doctest::Contains("the target tensor lives on Device<0> (host:0), but stage 2 runs on Device<2>"), Error);
  y[3] = 7;
  const Tensor<std::int32_t> bad(ctx, 2, batch, 1, y);
  CHECK_THROWS_WITH_AS(net.train_step(x_on_0, bad, ce, opt), doctest::Contains("label 3 is 7, outside [0, 3)"), Error);
  Tensor<float> wrong_out(ctx, 2, batch, 2);
  CHECK_THROWS_WITH_AS(net.forward(x_on_0, wrong_out), doctest::Contains("the output tensor is 5 x 2, expected 5 x 3"),
                       Error);
  CHECK(test::snapshot(net) == before);
  CHECK(opt.steps(0) == 0);
}

TEST_CASE("a bad label on the device under check_finite leaves the optimizer's count as it was") {
  // check_finite defers the update until the loss is known: a step that then finds a bad label
  // issued no update, and must not take one back either.
  Context ctx({.devices = "host", .check_finite = true});
  Net net(ctx, 6);
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const std::size_t batch = 5;
  const auto x = test::uniform<float>(batch * 6, 76);
  auto y = test::labels(batch, 3, 77);
  const Tensor<float> xt(ctx, 0, batch, 6, x);
  const Tensor<std::int32_t> good(ctx, 2, batch, 1, y);
  net.train_step(xt, good, ce, opt);
  REQUIRE(opt.steps(0) == 1);
  const auto before = test::snapshot(net);
  y[1] = -4;
  const Tensor<std::int32_t> bad(ctx, 2, batch, 1, y);
  CHECK_THROWS_WITH_AS(net.train_step(xt, bad, ce, opt), doctest::Contains("label 1 is -4"), Error);
  CHECK(opt.steps(0) == 1);
  CHECK(test::snapshot(net) == before);
}
