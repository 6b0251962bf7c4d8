// SPDX-License-Identifier: Apache-2.0
// Activations on the host: values PyTorch gives for the cases formulas tend to get wrong.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <tandem/backend/host/executor.hpp>

using namespace tandem;
using backend::Activation;

namespace {
std::vector<float> apply(Activation kind, std::vector<float> x) {
  backend::host::Executor ex(0);
  std::vector<float> y(x.size());
  ex.submit([&] {
    ex.run(backend::op::ActivationForward<float>{.kind = kind, .n = x.size(), .x = x.data(), .y = y.data()});
  });
  ex.synchronize();
  return y;
}
} // namespace

TEST_CASE("every activation lets NaN through, as torch does (a NaN must reach the loss)") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (Activation kind : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh,
                          Activation::gelu, Activation::gelu_tanh}) {
    INFO("activation ", static_cast<int>(kind));
    CHECK(std::isnan(apply(kind, {nan})[0]));
  }
}

TEST_CASE("ReLU, Sigmoid and Tanh at the edges") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(apply(Activation::relu, {-2.5f, 0.0f, 3.25f, -inf, inf}) == std::vector<float>{0, 0, 3.25f, 0, inf});
  CHECK(apply(Activation::sigmoid, {-inf, 0.0f, inf}) == std::vector<float>{0, 0.5f, 1});
  CHECK(apply(Activation::tanh, {-inf, 0.0f, inf}) == std::vector<float>{-1, 0, 1});
}
