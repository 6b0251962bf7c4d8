// SPDX-License-Identifier: Apache-2.0
// testing::check_gradients: passes the library's layers, and catches each kind of broken layer.
#include <doctest/doctest.h>

#include <string>

#include <tandem/tandem.hpp>
#include <tandem/testing/gradient_check.hpp>

using namespace tandem;

namespace {

// Broken variants of Linear<4, 3>, one fault each.
struct NoBiasGradient : Linear<4, 3> {
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::LinearBackward<T>{
        .batch = b.rows, .in = 4, .out = 3, .x = b.x, .weight = b.params, .dy = b.dy, .dx = b.dx, .dweight = b.grads});
  }
};

struct OverwritesGradients : Linear<4, 3> {
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::Fill<T>{.n = 4 * 3 + 3, .value = T(0), .dst = b.grads});
    Linear<4, 3>::backward(ex, b);
  }
};

struct SkipsInputGradient : Linear<4, 3> {
  template <class T> static void backward(backend::Executor &ex, LayerBackward<T> b) {
    b.dx = nullptr;
    Linear<4, 3>::backward(ex, b);
  }
};

// The derivative of sigmoid used for tanh: the classic copy-paste slip.
struct WrongTanh : Tanh {
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    if (!b.dx) return;
    ex.run(backend::op::ActivationBackward<T>{
        .kind = backend::Activation::sigmoid, .n = b.rows * b.in, .x = b.x, .y = b.y, .dy = b.dy, .dx = b.dx});
  }
};

const testing::TensorGradientError &tensor(const testing::GradientCheckReport &r, const std::string &name) {
  for (const auto &t : r.tensors)
    if (t.name == name) return t;
  FAIL("no tensor named " << name);
  throw; // unreachable: FAIL throws
}

template <class L> void passes(const testing::GradientCheckOptions &options = {}) {
  const auto report = testing::check_gradients<L>(options);
  INFO(report.summary());
  CHECK(report.passed());
  CHECK(report.problems.empty());
  CHECK(report.max_rel_error < 1e-6);
  // Every gradient was compared, and none is trivially zero (which would pass anything).
  CHECK(report.tensors.size() == 1 + L::parameters.size());
  for (const auto &t : report.tensors) CHECK(t.scale > 1e-3);
}

} // namespace

TEST_CASE("check_gradients passes the library's layers") {
  passes<Linear<4, 3>>();
  passes<Linear<1, 7>>({.batch = 5});
  passes<ReLU>();
  passes<Sigmoid>();
  passes<Tanh>();
  passes<GELU>();
  passes<GELUTanh>();
  passes<Identity>({.batch = 2, .width = 9});
}

TEST_CASE("check_gradients reports the shape it checked") {
  const auto fixed = testing::check_gradients<Linear<4, 3>>({.batch = 2});
  CHECK(fixed.batch == 2);
  CHECK(fixed.in == 4);
  CHECK(fixed.out == 3);
  CHECK(tensor(fixed, "input").size == 2 * 4);
  CHECK(tensor(fixed, "weight").size == 3 * 4);
  CHECK(tensor(fixed, "bias").size == 3);
  const auto any = testing::check_gradients<Sigmoid>({.batch = 3, .width = 6});
  CHECK(any.in == 6);
  CHECK(any.out == 6);
  CHECK(tensor(any, "input").size == 3 * 6);
  CHECK(any.summary().find("passed") != std::string::npos);
}

TEST_CASE("check_gradients catches a wrong gradient and names the tensor") {
  const auto missing_bias = testing::check_gradients<NoBiasGradient>();
  INFO(missing_bias.summary());
  CHECK_FALSE(missing_bias.passed());
  CHECK_FALSE(tensor(missing_bias, "bias").passed);
  CHECK(tensor(missing_bias, "weight").passed);
  CHECK(tensor(missing_bias, "input").passed);
  CHECK(missing_bias.summary().find("FAILED") != std::string::npos);

  const auto wrong_tanh = testing::check_gradients<WrongTanh>();
  INFO(wrong_tanh.summary());
  CHECK_FALSE(wrong_tanh.passed());
  CHECK(tensor(wrong_tanh, "input").max_rel_error > 0.1);
}

TEST_CASE("check_gradients catches a layer that breaks the protocol") {
  const auto overwrites = testing::check_gradients<OverwritesGradients>();
  INFO(overwrites.summary());
  CHECK_FALSE(overwrites.passed());
  REQUIRE(overwrites.problems.size() == 1);
  CHECK(overwrites.problems[0].find("instead of adding") != std::string::npos);

  const auto skips = testing::check_gradients<SkipsInputGradient>();
  INFO(skips.summary());
  CHECK_FALSE(skips.passed());
  REQUIRE_FALSE(skips.problems.empty());
  CHECK(skips.problems[0].find("dx[0]") != std::string::npos);
}

TEST_CASE("check_gradients refuses a meaningless request") {
  CHECK_THROWS_AS(testing::check_gradients<ReLU>({.batch = 0}), Error);
  CHECK_THROWS_AS(testing::check_gradients<ReLU>({.width = 0}), Error);
  CHECK_THROWS_AS(testing::check_gradients<ReLU>({.step = 0}), Error);
}
