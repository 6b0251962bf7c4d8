// SPDX-License-Identifier: Apache-2.0
// Finite-difference checks in double precision on the host: the losses on their own, and a whole
// 3-stage pipeline (Linear, ReLU, Tanh, Sigmoid across boundaries) against central differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <tandem/backend/host/executor.hpp>
#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {

// Loss and gradient of one op on the host, in double.
template <class Op> double loss_of(backend::host::Executor &ex, Op op) {
  double loss = 0;
  op.loss = &loss;
  op.dlogits = nullptr;
  ex.submit([&] { ex.run(op); });
  ex.synchronize();
  return loss;
}

} // namespace

TEST_CASE("CrossEntropy: gradient matches central differences (double)") {
  backend::host::Executor ex(0);
  const std::size_t rows = 6, classes = 5;
  auto logits = test::uniform<double>(rows * classes, 11, -3, 3);
  const auto labels = test::labels(rows, classes, 12);
  const double scale = 1.0 / rows;
  backend::op::CrossEntropy<double> op{
      .rows = rows, .classes = classes, .logits = logits.data(), .labels = labels.data(), .scale = scale};
  std::vector<double> grad(rows * classes);
  double loss = 0;
  op.loss = &loss;
  op.dlogits = grad.data();
  ex.submit([&] { ex.run(op); });
  ex.synchronize();

  // The loss itself, from its definition.
  double expected = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (std::size_t j = 0; j < classes; ++j) sum += std::exp(logits[r * classes + j]);
    expected += (std::log(sum) - logits[r * classes + labels[r]]) * scale;
  }
  CHECK(loss == doctest::Approx(expected).epsilon(1e-12));

  const double h = 1e-6;
  double worst = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double keep = logits[i];
    logits[i] = keep + h;
    const double up = loss_of(ex, op);
    logits[i] = keep - h;
    const double down = loss_of(ex, op);
    logits[i] = keep;
    worst = std::max(worst, std::abs((up - down) / (2 * h) - grad[i]));
  }
  CHECK(worst < 1e-8);
}

TEST_CASE("MSE: gradient matches central differences (double)") {
  backend::host::Executor ex(0);
  const std::size_t n = 12;
  auto pred = test::uniform<double>(n, 21, -2, 2);
  const auto target = test::uniform<double>(n, 22, -2, 2);
  std::vector<double> grad(n);
  double loss = 0;
  backend::op::SquaredError<double> op{.n = n, .pred = pred.data(), .target = target.data(), .scale = 1.0 / n};
  op.loss = &loss;
  op.dpred = grad.data();
  ex.submit([&] { ex.run(op); });
  ex.synchronize();
  double expected = 0;
  for (std::size_t i = 0; i < n; ++i) expected += (pred[i] - target[i]) * (pred[i] - target[i]) / n;
  CHECK(loss == doctest::Approx(expected).epsilon(1e-12));
  for (std::size_t i = 0; i < n; ++i) CHECK(grad[i] == doctest::Approx(2 * (pred[i] - target[i]) / n).epsilon(1e-12));
}

namespace {

// Every parameter's gradient from one forward_backward against central differences of the loss.
template <class Net, class Sched>
void check_against_central_differences(Net &net, const std::vector<double> &x, const std::vector<std::int32_t> &y,
                                       const Sched &sched) {
  loss::CrossEntropy ce;
  net.forward_backward(x, y, ce, sched);
  // All analytic gradients first: every finite-difference evaluation below overwrites them.
  std::vector<std::vector<double>> grads;
  for (const auto &p : net.parameters()) grads.push_back(p.grad_to_host());
  const double h = 1e-6;
  std::size_t checked = 0, t = 0;
  for (const auto &p : net.parameters()) {
    const auto &grad = grads[t++];
    auto values = p.to_host();
    double worst = 0, scale = 1e-12;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double keep = values[i];
      values[i] = keep + h;
      p.copy_from(values);
      const double up = net.forward_backward(x, y, ce, sched);
      values[i] = keep - h;
      p.copy_from(values);
      const double down = net.forward_backward(x, y, ce, sched);
      values[i] = keep;
      p.copy_from(values);
      worst = std::max(worst, std::abs((up - down) / (2 * h) - grad[i]));
      scale = std::max(scale, std::abs(grad[i]));
      ++checked;
    }
    INFO(p.name(), ": worst difference ", worst, ", largest gradient ", scale);
    // Central differences carry about 1e-16 * |loss| / h = 1e-10 of rounding noise (the floor),
    // and h^2 * f''' of truncation error, far below 1e-6 of the gradient's scale.
    CHECK(worst < 1e-6 * scale + 1e-9);
  }
  CHECK(checked == Net::parameter_count);
}

} // namespace

TEST_CASE("a 3-stage pipeline: every parameter's gradient matches central differences (double)") {
  using Net = BasicPipeline<double, Stage<Device<0>, Linear<4, 6>, ReLU>, Stage<Device<1>, Linear<6, 5>, Tanh>,
                            Stage<Device<2>, Linear<5, 3>, Sigmoid, Linear<3, 3>>>;
  // Layer by layer (the host's default), and as one whole-network operation (op::SmallNetwork,
  // the GPU's default for a network this small; `always` makes the host take it).
  for (const StageFusion fusion : {StageFusion::automatic, StageFusion::always}) {
    CAPTURE(static_cast<int>(fusion));
    Context ctx({.devices = "host", .fuse_small_stages = fusion});
    Net net(ctx, 5);
    const std::size_t batch = 7;
    const auto x = test::uniform<double>(batch * Net::in_features, 31, -2, 2);
    const auto y = test::labels(batch, Net::out_features, 32);
    check_against_central_differences(net, x, y, schedule::Naive{});
    CHECK((net.transferred_bytes() == 0) == (fusion == StageFusion::always)); // which path ran
  }
}

// Within a stage, a Linear followed by a ReLU and another Linear hands the ReLU's backward and its
// own bias gradient to that Linear (LayerBackward::relu_before; a GPU's DRELU_BGRAD epilogue).
// Layer 2 of stage 0 both takes over and hands over; micro-batches add into gradients the first
// one set. Small stages off: a fused stage has no per-layer backward.
TEST_CASE("Linear, ReLU, Linear in one stage: gradients through the ReLUs match central differences (double)") {
  using Net = BasicPipeline<double, Stage<Device<0>, Linear<4, 6>, ReLU, Linear<6, 5>, ReLU, Linear<5, 3>>,
                            Stage<Device<1>, Linear<3, 7>, ReLU, Linear<7, 3>>>;
  Context ctx({.devices = "host", .fuse_small_stages = StageFusion::never});
  Net net(ctx, 6);
  const std::size_t batch = 9;
  // Inputs and biases of both signs: every ReLU passes some gradients and stops others.
  const auto x = test::uniform<double>(batch * Net::in_features, 41, -2, 2);
  const auto y = test::labels(batch, Net::out_features, 42);
  SUBCASE("whole batch") { check_against_central_differences(net, x, y, schedule::Naive{}); }
  SUBCASE("GPipe, 3 micro-batches") {
    check_against_central_differences(net, x, y, schedule::GPipe{.micro_batches = 3});
  }
  SUBCASE("1F1B, 2 micro-batches") {
    check_against_central_differences(net, x, y, schedule::OneFOneB{.micro_batches = 2});
  }
}

// A Linear followed by a GELUTanh runs as one operation that keeps the product for the GELU's
// backward (LinearForward::pre_activation; a GPU's GELU_AUX_BIAS epilogue), also where the GELU
// ends a stage. Micro-batches reuse the kept products of earlier ones.
TEST_CASE("Linear then GELUTanh in one operation: gradients match central differences (double)") {
  using Net = BasicPipeline<double, Stage<Device<0>, Linear<4, 8>, GELUTanh, Linear<8, 5>>,
                            Stage<Device<1>, Linear<5, 6>, GELUTanh>>;
  Context ctx({.devices = "host", .fuse_small_stages = StageFusion::never});
  Net net(ctx, 7);
  const std::size_t batch = 9;
  const auto x = test::uniform<double>(batch * Net::in_features, 43, -2, 2);
  const auto y = test::labels(batch, Net::out_features, 44);
  SUBCASE("whole batch") { check_against_central_differences(net, x, y, schedule::Naive{}); }
  SUBCASE("GPipe, 3 micro-batches") {
    check_against_central_differences(net, x, y, schedule::GPipe{.micro_batches = 3});
  }
}

TEST_CASE("Linear then GELUTanh in one operation trains as the two layers apart, bit for bit") {
  // An Identity between them keeps the two apart: the same arithmetic, in two operations.
  using Fused =
      Pipeline<Stage<Device<0>, Linear<7, 16>, GELUTanh, Linear<16, 5>>, Stage<Device<1>, Linear<5, 8>, GELUTanh>>;
  using Apart = Pipeline<Stage<Device<0>, Linear<7, 16>, Identity, GELUTanh, Linear<16, 5>>,
                         Stage<Device<1>, Linear<5, 8>, Identity, GELUTanh>>;
  Context ctx({.devices = "host", .fuse_small_stages = StageFusion::never});
  Fused fused(ctx, 3);
  Apart apart(ctx, 4);
  REQUIRE(fused.parameters().size() == apart.parameters().size());
  for (std::size_t i = 0; i < fused.parameters().size(); ++i)
    apart.parameters()[i].copy_from(fused.parameters()[i].to_host());
  optim::SGD fused_opt(fused, {.lr = 0.05f, .momentum = 0.9f}), apart_opt(apart, {.lr = 0.05f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const std::size_t batch = 11;
  for (std::uint64_t k = 0; k < 3; ++k) {
    const auto x = test::uniform<float>(batch * 7, 60 + k, -2, 2);
    const auto y = test::labels(batch, 8, 70 + k);
    const schedule::GPipe sched{.micro_batches = 2};
    CHECK(fused.train_step(x, y, ce, fused_opt, sched) == apart.train_step(x, y, ce, apart_opt, sched));
    CHECK(fused.forward(x) == apart.forward(x));
  }
  for (std::size_t i = 0; i < fused.parameters().size(); ++i) {
    INFO(fused.parameters()[i].name());
    CHECK(fused.parameters()[i].to_host() == apart.parameters()[i].to_host());
  }
}
