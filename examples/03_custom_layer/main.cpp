// SPDX-License-Identifier: Apache-2.0
// A user-defined layer: Scale<N>, a learned per-feature gain (y = x * s, s of shape (N), starting
// at ones like LayerNorm's weight). It is written against the Layer protocol only, checked with
// the public gradient checker, then trained inside a two-stage pipeline. Exits non-zero if the
// gradient check fails or training does not learn.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <span>
#include <vector>

#include <tandem/tandem.hpp>
#include <tandem/testing/gradient_check.hpp>

using namespace tandem;

template <std::size_t N> struct Scale {
  // Fixed widths: N features in, N out (a layer that keeps any width says 0 and 0).
  static constexpr std::size_t in_features = N;
  static constexpr std::size_t out_features = N;
  // One tensor, named as PyTorch would name it, so net.parameter("stage0.2.weight") finds it.
  static constexpr std::array<ParameterSpec, 1> parameters{ParameterSpec{"weight", N, 1}};

  // Host-side initialisation of this layer's slice of the stage's parameters.
  template <class T> static void init(std::span<T> params, std::size_t /*in*/, Random & /*rng*/) {
    for (auto &s : params) s = T(1);
  }

  // A layer runs on whatever device its stage lives on, so it may only issue backend operations
  // (backend/ops.hpp) through the Executor; it never touches the memory itself. There is no
  // elementwise-product op, so each feature column is a (batch, 1) x (1, 1) product with strided
  // rows: y[:, j] = x[:, j] * s[j]. N small calls are fine for an example; a layer that matters
  // for speed would get an op of its own in each backend.
  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    for (std::size_t j = 0; j < N; ++j) // y[:, j] (batch, 1) = x[:, j] (batch, 1) * s[j] (1, 1)
      ex.run(backend::op::Gemm<T>{
          .m = f.rows, .n = 1, .k = 1, .a = f.x + j, .lda = N, .b = f.params + j, .ldb = 1, .c = f.y + j, .ldc = N});
  }

  // dx[:, j] = dy[:, j] * s[j] (written, and only when asked for); ds[j] += dy[:, j] . x[:, j]
  // (added: the gradients of micro-batches sum up).
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    for (std::size_t j = 0; j < N; ++j) {
      if (b.dx)
        ex.run(backend::op::Gemm<T>{.m = b.rows,
                                    .n = 1,
                                    .k = 1,
                                    .a = b.dy + j,
                                    .lda = N,
                                    .b = b.params + j,
                                    .ldb = 1,
                                    .c = b.dx + j,
                                    .ldc = N});
      ex.run(backend::op::Gemm<T>{.trans_a = true,
                                  .m = 1,
                                  .n = 1,
                                  .k = b.rows,
                                  .a = b.dy + j, // (batch, 1), transposed to (1, batch)
                                  .lda = N,
                                  .b = b.x + j, // (batch, 1)
                                  .ldb = N,
                                  .beta = T(1),
                                  .c = b.grads + j,
                                  .ldc = 1});
    }
  }
};

// The compiler checks the protocol; the gradient checker checks the calculus.
static_assert(Layer<Scale<16>>);

using Net = Pipeline<Stage<Device<0>, Linear<8, 16>, Tanh, Scale<16>>, // (batch, 8) -> (batch, 16)
                     Stage<Device<1>, Linear<16, 1>>>;                 // (batch, 16) -> (batch, 1)

int main() {
  const auto report = testing::check_gradients<Scale<6>>({.batch = 4});
  std::printf("Scale<6>: %s", report.summary().c_str());
  if (!report.passed()) return 1;

  // A regression target the network can fit: y = sum_i sin(x_i) / 2, in shuffled mini-batches.
  constexpr std::size_t rows = 256, batch = 32, epochs = 25;
  Random rng(3);
  std::vector<float> x(rows * Net::in_features), y(rows);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-2, 2));
  for (std::size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (std::size_t i = 0; i < Net::in_features; ++i) s += std::sin(x[r * Net::in_features + i]);
    y[r] = static_cast<float>(s / 2);
  }

  Context ctx;
  Net net(ctx, /*seed=*/1);
  optim::Adam opt(net, {.lr = 1e-2f});
  loss::MSE mse;
  data::Batches batches(x, y, {.batch_size = batch, .shuffle = true, .seed = 1});
  const float first = net.forward_backward(x, y, mse); // the whole set's loss before training
  float last = first;
  for (std::size_t epoch = 0; epoch < epochs; ++epoch) {
    for (auto [xb, yb] : batches.epoch(epoch)) net.train_step(xb, yb, mse, opt);
    last = net.forward_backward(x, y, mse);
    if (epoch % 5 == 0 || epoch + 1 == epochs) std::printf("epoch %2zu  loss %.6f\n", epoch, last);
  }
  // The gains have learned: at least one moved well away from its initial 1.
  double moved = 0;
  for (float s : net.parameter("stage0.2.weight").to_host()) moved = std::max(moved, std::abs(double(s) - 1));
  std::printf("largest change of a Scale gain: %.4f\n", moved);

  const bool ok = std::isfinite(last) && last < 0.2f * first && moved > 1e-2;
  if (!ok) std::printf("FAILED: loss %.6f -> %.6f, gains moved by %.4f\n", first, last, moved);
  return ok ? 0 : 1;
}
