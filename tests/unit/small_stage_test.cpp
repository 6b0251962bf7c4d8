// SPDX-License-Identifier: Apache-2.0
// op::SmallForward / op::SmallBackward (a stage of small layers in one operation, the body the
// CUDA backend runs as one block) against the per-layer operations in float64, and a pipeline
// with fused stages against the same pipeline issuing one operation per layer.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "../support/random_data.hpp"
#include "tandem/tandem.hpp"

namespace {

using namespace tandem;
using backend::Activation;

// Linear 13 -> 20, Tanh, Linear 20 -> 7, GELU, Linear 7 -> 3: every kind of step the body has.
struct Shape {
  bool linear;
  Activation kind;
  std::size_t in, out;
};
constexpr Shape shapes[] = {{true, Activation::identity, 13, 20},
                            {false, Activation::tanh, 20, 20},
                            {true, Activation::identity, 20, 7},
                            {false, Activation::gelu, 7, 7},
                            {true, Activation::identity, 7, 3}};
constexpr std::size_t count = std::size(shapes);

template <class T> struct Layers { std::vector<std::vector<T>> w, b, dw, db, y; };

template <class T, class U> std::vector<T> cast(const std::vector<U> &v) { return std::vector<T>(v.begin(), v.end()); }

template <class T> double error(const std::vector<T> &got, const std::vector<double> &want) {
  return test::relative_error(std::span<const T>(got), std::span<const double>(want));
}

} // namespace

TEST_CASE("SmallForward and SmallBackward match the per-layer operations in float64") {
  Context ctx({.devices = "host"});
  auto &ex = ctx.executor(0);
  // 150 rows: three chunks of 64 for float, the last one partial.
  const std::size_t rows = 150;
  const auto x = test::uniform<double>(rows * shapes[0].in, 1);
  const auto dy = test::uniform<double>(rows * shapes[count - 1].out, 2);
  Layers<double> ref;
  Layers<float> got;
  for (std::size_t j = 0; j < count; ++j) {
    const auto &s = shapes[j];
    ref.w.push_back(s.linear ? test::uniform<double>(s.out * s.in, 10 + j, -0.5, 0.5) : std::vector<double>{});
    ref.b.push_back(s.linear ? test::uniform<double>(s.out, 20 + j) : std::vector<double>{});
    // Gradients start from random values: the operation adds to them.
    ref.dw.push_back(s.linear ? test::uniform<double>(s.out * s.in, 30 + j) : std::vector<double>{});
    ref.db.push_back(s.linear ? test::uniform<double>(s.out, 40 + j) : std::vector<double>{});
    ref.y.push_back(std::vector<double>(rows * s.out));
    got.w.push_back(cast<float>(ref.w[j]));
    got.b.push_back(cast<float>(ref.b[j]));
    got.dw.push_back(cast<float>(ref.dw[j]));
    got.db.push_back(cast<float>(ref.db[j]));
    got.y.push_back(std::vector<float>(rows * s.out, -7.0f)); // poison: every value must be written
  }

  // The reference: one float64 operation per layer, as the pipeline issues them without fusion.
  std::vector<std::vector<double>> grad(count + 1);
  ex.submit([&] {
    for (std::size_t j = 0; j < count; ++j) {
      const auto &s = shapes[j];
      const double *in = j ? ref.y[j - 1].data() : x.data();
      if (s.linear)
        ex.run(backend::op::LinearForward<double>{.batch = rows,
                                                  .in = s.in,
                                                  .out = s.out,
                                                  .x = in,
                                                  .weight = ref.w[j].data(),
                                                  .bias = ref.b[j].data(),
                                                  .y = ref.y[j].data()});
      else
        ex.run(backend::op::ActivationForward<double>{.kind = s.kind, .n = rows * s.in, .x = in, .y = ref.y[j].data()});
    }
    grad[count] = dy;
    for (std::size_t j = count; j-- > 0;) {
      const auto &s = shapes[j];
      const double *in = j ? ref.y[j - 1].data() : x.data();
      grad[j].assign(rows * s.in, 0.0);
      if (s.linear)
        ex.run(backend::op::LinearBackward<double>{.batch = rows,
                                                   .in = s.in,
                                                   .out = s.out,
                                                   .x = in,
                                                   .weight = ref.w[j].data(),
                                                   .dy = grad[j + 1].data(),
                                                   .dx = grad[j].data(),
                                                   .dweight = ref.dw[j].data(),
                                                   .dbias = ref.db[j].data()});
      else
        ex.run(backend::op::ActivationBackward<double>{.kind = s.kind,
                                                       .n = rows * s.in,
                                                       .x = in,
                                                       .y = ref.y[j].data(),
                                                       .dy = grad[j + 1].data(),
                                                       .dx = grad[j].data()});
    }
  });

  const auto xf = cast<float>(x), dyf = cast<float>(dy);
  std::vector<float> dx(rows * shapes[0].in, -7.0f);
  backend::op::SmallForward<float> f{.rows = rows, .count = count};
  backend::op::SmallBackward<float> g{.rows = rows, .count = count, .dy = dyf.data(), .dx = dx.data()};
  for (std::size_t j = 0; j < count; ++j) {
    const auto &s = shapes[j];
    f.layers[j] = {.linear = s.linear,
                   .kind = s.kind,
                   .in = s.in,
                   .out = s.out,
                   .weight = got.w[j].data(),
                   .bias = s.linear ? got.b[j].data() : nullptr,
                   .dweight = s.linear ? got.dw[j].data() : nullptr,
                   .dbias = s.linear ? got.db[j].data() : nullptr,
                   .x = j ? got.y[j - 1].data() : xf.data(),
                   .y = got.y[j].data()};
    g.layers[j] = f.layers[j];
  }
  ex.submit([&] {
    ex.run(f);
    ex.run(g);
  });
  ex.synchronize();

  // float32 sums of at most 150 terms against float64: within 1e-5 of each tensor's scale.
  for (std::size_t j = 0; j < count; ++j) {
    INFO("layer ", j);
    CHECK(error(got.y[j], ref.y[j]) < 1e-5);
    if (shapes[j].linear) {
      CHECK(error(got.dw[j], ref.dw[j]) < 1e-5);
      CHECK(error(got.db[j], ref.db[j]) < 1e-5);
    }
  }
  CHECK(error(dx, grad[0]) < 1e-5);
}

TEST_CASE("a small operation beyond its buffers' limits is refused before it runs") {
  backend::host::Executor ex(0);
  // Nothing behind the pointers: a refused operation reads and writes nothing.
  backend::op::SmallForward<float> f{.rows = 4, .count = 2};
  f.layers[0] = {.linear = true, .in = 8, .out = 65};
  f.layers[1] = {.kind = Activation::relu, .in = 65, .out = 65};
  CHECK_THROWS_WITH_AS(ex.run(f),
                       doctest::Contains("SmallForward on the host: layer 0 maps 8 to 65 features, wider than "
                                         "op::small_width = 64"),
                       Error);
  backend::op::SmallBackward<float> g{.rows = 4, .count = 9};
  CHECK_THROWS_WITH_AS(ex.run(g), doctest::Contains("SmallBackward on the host: 9 layers, more than its 8"), Error);
  backend::op::SmallNetwork<float> n{.rows = 4, .count = 17};
  CHECK_THROWS_WITH_AS(ex.run(n), doctest::Contains("SmallNetwork on the host: 17 layers, more than its 16"), Error);
  n.count = 1;
  n.layers[0] = {.linear = true, .in = 3, .out = 64};
  n.update_count = 9;
  CHECK_THROWS_WITH_AS(ex.run(n), doctest::Contains("SmallNetwork on the host: 9 updates, more than its 8"), Error);
  n.layers[0].in = 100;
  CHECK_THROWS_WITH_AS(ex.run(n), doctest::Contains("layer 0 maps 100 to 64 features"), Error);
}

TEST_CASE("a pipeline of small stages trains as when every layer is issued alone") {
  // Unfused, the first stage's Linear and ReLU run as one operation, and each stage's first
  // micro-batch sets the gradients: both paths differ in every way but the arithmetic.
  using Net = Pipeline<Stage<Device<0>, Linear<12, 40>, ReLU, Linear<40, 40>, GELU>,
                       Stage<Device<1>, Linear<40, 24>, Tanh, Linear<24, 5>>>;
  loss::CrossEntropy ce;
  std::vector<float> losses[2];
  std::vector<std::vector<float>> params[2];
  for (const bool fused : {false, true}) {
    // The host prefers one operation per layer; `always` makes it take the GPU's path.
    Context ctx({.devices = "host", .fuse_small_stages = fused ? StageFusion::always : StageFusion::never});
    Net net(ctx, 77);
    optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
    for (std::uint64_t step = 0; step < 4; ++step) {
      const auto x = test::uniform<float>(70 * Net::in_features, 90 + step);
      const auto y = test::labels(70, Net::out_features, 95 + step);
      losses[fused].push_back(net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 3}));
    }
    for (const auto &p : net.parameters()) params[fused].push_back(p.to_host());
  }
  CHECK(test::relative_error(std::span<const float>(losses[1]), std::span<const float>(losses[0])) < 1e-5);
  for (std::size_t i = 0; i < params[0].size(); ++i) {
    INFO("parameter ", i);
    CHECK(test::relative_error(std::span<const float>(params[1][i]), std::span<const float>(params[0][i])) < 1e-5);
  }
}
