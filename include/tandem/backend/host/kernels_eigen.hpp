// SPDX-License-Identifier: Apache-2.0
// The host kernels' bodies: the operations of backend/ops.hpp on host memory, with Eigen.
// kernels.hpp declares them and includes this header, unless the program is linked with
// tandem::compiled (TANDEM_COMPILED), which compiled them once: then neither Eigen nor these
// bodies are parsed in the program's translation units.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/host/kernels.hpp"
#include "tandem/backend/loss_math.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/backend/optimizer_math.hpp"
#include "tandem/backend/small_network.hpp"
#include "tandem/backend/small_stage.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::host::kernels {

template <class T> using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T> using ConstMap = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T> using Map = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T> using ConstRow = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <class T> using Row = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;

template <class T> ConstMap<T> view(const T *p, std::size_t rows, std::size_t cols, std::size_t ld) {
  return ConstMap<T>(p, Eigen::Index(rows), Eigen::Index(cols), Eigen::OuterStride<>(Eigen::Index(ld)));
}
template <class T> Map<T> view(T *p, std::size_t rows, std::size_t cols, std::size_t ld) {
  return Map<T>(p, Eigen::Index(rows), Eigen::Index(cols), Eigen::OuterStride<>(Eigen::Index(ld)));
}

template <class T> void run(const op::Gemm<T> &g) {
  if (g.m == 0 || g.n == 0) return;
  auto c = view(g.c, g.m, g.n, g.ldc);
  if (g.k == 0) { // an empty product: C = beta * C, with beta == 0 clearing rather than scaling NaNs
    if (g.beta == T(0)) c.setZero();
    else c *= g.beta;
    return;
  }
  const auto a = view(g.a, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda);
  const auto b = view(g.b, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb);
  auto product = [&](const auto &pa, const auto &pb) {
    if (g.beta == T(0)) {
      c.noalias() = g.alpha * (pa * pb);
    } else {
      if (g.beta != T(1)) c *= g.beta;
      c.noalias() += g.alpha * (pa * pb);
    }
  };
  if (g.trans_a && g.trans_b) product(a.transpose(), b.transpose());
  else if (g.trans_a) product(a.transpose(), b);
  else if (g.trans_b) product(a, b.transpose());
  else product(a, b);
}

template <class T> void run(const op::LinearForward<T> &f) {
  T *const z = f.pre_activation ? f.pre_activation : f.y;
  auto zs = view(z, f.batch, f.out, f.out);                             // (batch, out)
  zs.noalias() = view(f.x, f.batch, f.in, f.in)                         // (batch, in)
                 * view(f.weight, f.out, f.in, f.in).transpose();       // (in, out)
  if (f.bias) zs.rowwise() += ConstRow<T>(f.bias, Eigen::Index(f.out)); // (1, out)
  if (f.activation == Activation::identity && z == f.y) return;
  with_activation_on_host(f.activation, [&]<Activation K>() { // as the activation layer computes it
    const std::size_t n = f.batch * f.out;
    // Spelled out in place and apart: a loop that may read what it writes does not vectorize
    // as well (the seed step measured 2% slower).
    if (z == f.y)
      for (std::size_t i = 0; i < n; ++i) f.y[i] = activate<K>(f.y[i]);
    else Row<T>(f.y, Eigen::Index(n)) = ConstRow<T>(z, Eigen::Index(n)).unaryExpr([](T v) { return activate<K>(v); });
  });
}

// out (cols) = (or +=, with `accumulate`) the column sums of m (rows, cols): a bias gradient.
template <class T> void column_sums(std::size_t rows, std::size_t cols, const T *m, T *out, bool accumulate) {
  const auto sums = view(m, rows, cols, cols).colwise().sum();
  if (accumulate) Row<T>(out, Eigen::Index(cols)) += sums;
  else Row<T>(out, Eigen::Index(cols)) = sums;
}

// dbias (out) = (or +=, with `accumulate`) the column sums of dy (batch, out).
template <class T> void bias_gradient(const op::LinearBackward<T> &b) {
  if (b.dbias) column_sums(b.batch, b.out, b.dy, b.dbias, b.accumulate);
}

// relu_before: dx, the product's gradient at x, becomes the gradient at the input of the ReLU
// whose output x is (from x, the host keeps no masks), and dbias_before gets its column sums.
template <class T> void relu_before(const op::LinearBackward<T> &b) {
  if (!b.relu_before || !b.dx) return;
  // activate_backward<relu>(x, x, dx) over the whole (contiguous) array: x <= 0 ? 0 : dx, a NaN
  // passing; one flat vector, which Eigen vectorises, unlike the strided (batch, in) view.
  const auto n = Eigen::Index(b.batch * b.in);
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> dx(b.dx, n);
  dx = (Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(b.x, n) <= T(0)).select(T(0), dx);
  if (b.dbias_before) column_sums<T>(b.batch, b.in, b.dx, b.dbias_before, b.accumulate);
}

template <class T> void run(const op::LinearBackward<T> &b) {
  const auto dy = view(b.dy, b.batch, b.out, b.out); // (batch, out)
  if (b.dx) view(b.dx, b.batch, b.in, b.in).noalias() = dy * view(b.weight, b.out, b.in, b.in);
  relu_before(b);
  if (b.accumulate) view(b.dweight, b.out, b.in, b.in).noalias() += dy.transpose() * view(b.x, b.batch, b.in, b.in);
  else view(b.dweight, b.out, b.in, b.in).noalias() = dy.transpose() * view(b.x, b.batch, b.in, b.in);
  bias_gradient(b);
}

// The formulas are activation_math.hpp's; the kind is chosen once per call, not per element.
template <class T> void run(const op::ActivationForward<T> &f) {
  with_activation_on_host(f.kind, [&]<Activation K>() {
    for (std::size_t i = 0; i < f.n; ++i) f.y[i] = activate<K>(f.x[i]);
  });
}

template <class T> void run(const op::ActivationBackward<T> &b) {
  with_activation_on_host(b.kind, [&]<Activation K>() {
    for (std::size_t i = 0; i < b.n; ++i) b.dx[i] = activate_backward_at<K>(b.x, b.y, b.dy, i);
  });
}

template <class T> void run(const op::Fill<T> &f) { std::fill(f.dst, f.dst + f.n, f.value); }

template <class T> void run(const op::CrossEntropy<T> &c) {
  double total = 0;
  for (std::size_t r = 0; r < c.rows; ++r) {
    const std::int32_t label = c.labels[r];
    if (c.invalid && (label < 0 || static_cast<std::size_t>(label) >= c.classes)) *c.invalid = 1;
    total += cross_entropy_row(c.logits + r * c.classes, c.classes, label, c.scale,
                               c.dlogits ? c.dlogits + r * c.classes : nullptr);
  }
  if (c.loss) *c.loss += static_cast<T>(static_cast<double>(c.scale) * total);
}

template <class T> void run(const op::SquaredError<T> &s) {
  double total = 0;
  const T two_scale = T(2) * s.scale;
  for (std::size_t i = 0; i < s.n; ++i) {
    if (s.invalid && !std::isfinite(s.target[i])) *s.invalid = 1;
    total += squared_error_at(s.pred[i], s.target[i], two_scale, s.dpred ? s.dpred + i : nullptr);
  }
  if (s.loss) *s.loss += static_cast<T>(static_cast<double>(s.scale) * total);
}

template <class T> void run(const op::SgdStep<T> &s) {
  if (s.skip && *s.skip) return;
  for (std::size_t i = 0; i < s.n; ++i) sgd_update(s, i);
}

template <class T> void run(const op::AdamStep<T> &a) {
  if (a.skip && *a.skip) return;
  const op::AdamCount scalars = op::adam_scalars(a.lr, a.beta1, a.beta2, a.count ? a.count->steps + 1 : a.step);
  if (a.count) *a.count = scalars;
  const AdamScalars<T> k = adam_scalars_of(a, scalars);
  for (std::size_t i = 0; i < a.n; ++i) adam_update(a, k, i);
}

// The chunk buffers stay with the worker thread: no allocation per call.
template <class T> small::Scratch<T> small_scratch() {
  thread_local std::vector<T> a(small::buffer_values<T>), b(small::buffer_values<T>), x(small::buffer_values<T>),
      w(small::weight_values<T>);
  return {a.data(), b.data(), x.data(), w.data()};
}

template <class T> void run(const op::SmallForward<T> &f) {
  small::require_small("SmallForward", "the host", f.layers.data(), f.count, f.layers.size());
  const auto scratch = small_scratch<T>();
  small::HostBlock block;
  for (std::size_t first = 0; first < f.rows; first += small::chunk_rows<T>)
    small::forward_chunk(f, first, std::min(small::chunk_rows<T>, f.rows - first), scratch, block);
}

template <class T> void run(const op::SmallBackward<T> &g) {
  small::require_small("SmallBackward", "the host", g.layers.data(), g.count, g.layers.size());
  const auto scratch = small_scratch<T>();
  small::HostBlock block;
  for (std::size_t first = 0; first < g.rows; first += small::chunk_rows<T>)
    small::backward_chunk(g, first, std::min(small::chunk_rows<T>, g.rows - first), scratch, block);
}

template <class T> void run(const op::SmallNetwork<T> &n) {
  small::require_network(n, "the host");
  if (n.rows == 0 || n.count == 0) return;
  small::HostBlock block;
  small::network_step(n, small_scratch<T>(), block);
}

} // namespace tandem::backend::host::kernels
