// SPDX-License-Identifier: Apache-2.0
// Splitting does not change the math: the same layers in one stage or in three give the same
// outputs, loss and gradients, bit for bit on the host (same kernels, same order; the boundary
// copies are exact).
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

TEST_CASE("a 3-stage pipeline equals the same layers in one stage") {
  using Split = Pipeline<Stage<Device<0>, Linear<8, 16>, ReLU>, Stage<Device<1>, Linear<16, 12>, Tanh>,
                         Stage<Device<2>, Linear<12, 4>>>;
  using Whole = Pipeline<Stage<Device<0>, Linear<8, 16>, ReLU, Linear<16, 12>, Tanh, Linear<12, 4>>>;
  static_assert(Split::parameter_count == Whole::parameter_count);
  Context ctx({.devices = "host"});
  Split split(ctx, 3);
  Whole whole(ctx, 99); // different initial weights, overwritten below

  // stage{s}.{j} of the split network is layer k of the single stage.
  const std::map<std::string, std::string> same{
      {"stage0.0", "stage0.0"}, {"stage1.0", "stage0.2"}, {"stage2.0", "stage0.4"}};
  for (const auto &p : split.parameters()) {
    const auto dot = p.name().rfind('.');
    const auto name = same.at(p.name().substr(0, dot)) + p.name().substr(dot);
    whole.parameter(name).copy_from(p.to_host());
  }

  const std::size_t batch = 33;
  const auto x = test::uniform<float>(batch * 8, 41);
  const auto y = test::labels(batch, 4, 42);
  loss::CrossEntropy ce;
  CHECK(split.forward(x) == whole.forward(x));
  const float ls = split.forward_backward(x, y, ce), lw = whole.forward_backward(x, y, ce);
  CHECK(ls == lw);
  for (const auto &p : split.parameters()) {
    const auto dot = p.name().rfind('.');
    const auto &q = whole.parameter(same.at(p.name().substr(0, dot)) + p.name().substr(dot));
    INFO(p.name());
    CHECK(p.grad_to_host() == q.grad_to_host());
  }
  // And after training both the same way.
  optim::SGD os(split, {.lr = 0.1f, .momentum = 0.9f}), ow(whole, {.lr = 0.1f, .momentum = 0.9f});
  for (int i = 0; i < 3; ++i) CHECK(split.train_step(x, y, ce, os) == whole.train_step(x, y, ce, ow));
  CHECK(split.forward(x) == whole.forward(x));
}
