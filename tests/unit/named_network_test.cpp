// SPDX-License-Identifier: Apache-2.0
// A named network (struct Net : Pipeline<...> { using Pipeline::Pipeline; }) and int64 class
// indices, as PyTorch keeps them: both train exactly as the plain forms do.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Layout = Pipeline<Stage<Device<0>, Linear<6, 10>, ReLU>, Stage<Device<1>, Linear<10, 4>>>;
struct Net : Pipeline<Stage<Device<0>, Linear<6, 10>, ReLU>, Stage<Device<1>, Linear<10, 4>>> {
  using Pipeline::Pipeline;
};
static_assert(Net::in_features == 6 && Net::out_features == 4);

std::vector<std::vector<float>> parameters_of(const auto &net) {
  std::vector<std::vector<float>> out;
  for (const auto &p : net.parameters()) out.push_back(p.to_host());
  return out;
}
} // namespace

TEST_CASE("a network derived from Pipeline takes its constructors and trains as the Pipeline does") {
  Context ctx({.devices = "host"});
  Net named(ctx, 9);
  Layout plain(ctx, 9);
  optim::Adam a(named), b(plain);
  const auto x = test::uniform<float>(12 * 6, 31);
  const auto y = test::labels(12, 4, 32);
  for (int k = 0; k < 3; ++k)
    CHECK(named.train_step(x, y, loss::CrossEntropy{}, a) == plain.train_step(x, y, loss::CrossEntropy{}, b));
  CHECK(parameters_of(named) == parameters_of(plain));
}

TEST_CASE("int64 class indices give the same losses, gradients and parameters as int32 ones") {
  Context ctx({.devices = "host"});
  Net with32(ctx, 5), with64(ctx, 5);
  optim::SGD a(with32, {.lr = 0.1f, .momentum = 0.9f}), b(with64, {.lr = 0.1f, .momentum = 0.9f});
  const loss::CrossEntropy ce;
  for (std::uint64_t k = 0; k < 3; ++k) {
    const auto x = test::uniform<float>(16 * 6, 40 + k);
    const auto y32 = test::labels(16, 4, 50 + k);
    const std::vector<std::int64_t> y64(y32.begin(), y32.end());
    CHECK(with32.forward_backward(x, y32, ce) == with64.forward_backward(x, y64, ce));
    for (std::size_t t = 0; t < with32.parameters().size(); ++t)
      CHECK(with32.parameters()[t].grad_to_host() == with64.parameters()[t].grad_to_host());
    CHECK(with32.train_step(x, y32, ce, a) == with64.train_step(x, std::span<const std::int64_t>(y64), ce, b));
  }
  CHECK(parameters_of(with32) == parameters_of(with64));
}

TEST_CASE("an int64 label out of range is an error that changes nothing") {
  Context ctx({.devices = "host"});
  Net net(ctx, 5);
  optim::Adam opt(net);
  const auto x = test::uniform<float>(3 * 6, 7);
  const auto before = parameters_of(net);
  const std::vector<std::int64_t> big{1, std::int64_t{1} << 33, 2}, negative{1, 2, -1};
  CHECK_THROWS_WITH_AS(net.train_step(x, big, loss::CrossEntropy{}, opt),
                       doctest::Contains("train_step: label 1 is 8589934592, outside [0, 4)"), Error);
  CHECK_THROWS_WITH_AS(net.forward_backward(x, negative, loss::CrossEntropy{}),
                       doctest::Contains("forward_backward: label 2 is -1, outside [0, 4)"), Error);
  CHECK(parameters_of(net) == before);
  CHECK(opt.steps(0) == 0);
}
