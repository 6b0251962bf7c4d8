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

// torch.relu's backward is threshold_backward(grad, output, 0): zero where the output is <= 0, the
// gradient elsewhere, so where the output is NaN the gradient passes (torch 1.13:
// relu([nan, -1, 2]).backward([5, 5, 5]) gives [5, 0, 5]). Both places the host applies it: the
// ReLU layer's backward, and a Linear's backward that takes over the ReLU before it.
TEST_CASE("ReLU's backward passes the gradient where the output is NaN, as torch's does") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  backend::host::Executor ex(0);
  const std::vector<float> y{nan, -0.0f, 0.0f, 2.0f}, dy{5, 6, 7, 8};
  std::vector<float> dx(4, -1.0f);
  ex.submit([&] {
    ex.run(backend::op::ActivationBackward<float>{
        .kind = Activation::relu, .n = 4, .x = y.data(), .y = y.data(), .dy = dy.data(), .dx = dx.data()});
  });
  ex.synchronize();
  CHECK(dx == std::vector<float>{5, 0, 0, 8});

  // A Linear (1 -> 1, weight 2) whose input x is that ReLU's output: dx = dy * 2 where x passes.
  const std::vector<float> weight{2}, dy1{5, 6, 7, 8};
  std::vector<float> dx1(4, -1.0f), dw(1), db(1), dbias_before(1, -1.0f);
  ex.submit([&] {
    ex.run(backend::op::LinearBackward<float>{.batch = 4,
                                              .in = 1,
                                              .out = 1,
                                              .x = y.data(),
                                              .weight = weight.data(),
                                              .dy = dy1.data(),
                                              .dx = dx1.data(),
                                              .dweight = dw.data(),
                                              .dbias = db.data(),
                                              .accumulate = false,
                                              .relu_before = true,
                                              .dbias_before = dbias_before.data()});
  });
  ex.synchronize();
  CHECK(dx1 == std::vector<float>{10, 0, 0, 16});
  CHECK(dbias_before[0] == 26);
}

TEST_CASE("ReLU, Sigmoid and Tanh at the edges") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(apply(Activation::relu, {-2.5f, 0.0f, 3.25f, -inf, inf}) == std::vector<float>{0, 0, 3.25f, 0, inf});
  CHECK(apply(Activation::sigmoid, {-inf, 0.0f, inf}) == std::vector<float>{0, 0.5f, 1});
  CHECK(apply(Activation::tanh, {-inf, 0.0f, inf}) == std::vector<float>{-1, 0, 1});
}
