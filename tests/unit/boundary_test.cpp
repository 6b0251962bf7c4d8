// SPDX-License-Identifier: Apache-2.0
// Boundaries: every step moves exactly Net::boundary_bytes(batch), the seed's C = sum s_i * b * 2.
#include <doctest/doctest.h>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

TEST_CASE("one training step moves boundary_bytes(batch); a forward moves half of it") {
  using Net = Pipeline<Stage<Device<0>, Linear<6, 9>, ReLU>, Stage<Device<1>, Linear<9, 5>, ReLU>,
                       Stage<Device<2>, Linear<5, 3>>>;
  Context ctx({.devices = "host"});
  Net net(ctx, 2);
  optim::SGD opt(net, {.lr = 0.01f});
  loss::CrossEntropy ce;
  std::size_t expected = 0;
  for (std::size_t batch : {16u, 16u, 5u, 1u}) { // the batch may change between steps
    net.train_step(test::uniform<float>(batch * 6, batch), test::labels(batch, 3, batch + 1), ce, opt);
    expected += Net::boundary_bytes(batch);
    CHECK(net.transferred_bytes() == expected);
  }
  CHECK(Net::boundary_bytes(16) == (9 + 5) * 16 * 2 * sizeof(float));
  net.forward(test::uniform<float>(4 * 6, 3));
  CHECK(net.transferred_bytes() == expected + Net::boundary_bytes(4) / 2);
}

TEST_CASE("each stage's parameters and activations live on its own device") {
  using Net = Pipeline<Stage<Device<0>, Linear<3, 4>>, Stage<Device<1>, Linear<4, 2>>>;
  Context ctx({.devices = "host"});
  Net net(ctx, 2);
  CHECK(net.parameter("stage0.0.weight").executor().name() == "host:0");
  CHECK(net.parameter("stage1.0.bias").executor().name() == "host:1");
  CHECK(&net.parameter("stage1.0.bias").executor() == &ctx.executor(1));
  CHECK(ctx.describe().find("Device<0> -> host:0 (worker thread") == 0);
  CHECK(ctx.describe().find("\nDevice<1> -> host:1 (worker thread") != std::string::npos);
}
