// SPDX-License-Identifier: Apache-2.0
// Residual<Layers...>: y = x + f(x), f the layers in a chain (Sequential), named as nn.Sequential
// names them inside the block: "<index>.<inner index>.<name>".
#pragma once

#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/add.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/layers/sequential.hpp"
#include "tandem/random.hpp"
#include "tandem/shape.hpp"

namespace tandem {

template <class... Ls> struct Residual {
  using body = Sequential<Ls...>;
  static constexpr std::size_t in_features = body::in_features;
  static constexpr std::size_t out_features = body::out_features;
  static_assert(detail::ResidualWidthCheck<detail::Receives<in_features>, detail::Expects<out_features>>::value);

  static constexpr auto parameters = body::parameters;
  static constexpr bool sets_gradients = body::sets_gradients;
  static constexpr bool draws_random = body::draws_random;
  static constexpr std::size_t sequence_length = body::sequence_length;
  // The body's, and the sum x + f(x) forward and dy's addition backward.
  static constexpr std::size_t cost(std::size_t in) { return tandem::layer_cost<body>(in) + 2 * in; }

  // The body's memory, then f(x) (the body's output, which its last layer's backward may read).
  static constexpr std::size_t saved_values(std::size_t in) { return body::saved_values(in) + in; }
  static constexpr std::size_t scratch_values(std::size_t in) { return body::scratch_values(in); }

  template <class T> static void init(std::span<T> params, std::size_t in, Random &rng) { body::init(params, in, rng); }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    T *fx = f.saved + f.rows * body::saved_values(f.in); // (rows, in)
    LayerForward<T> inner = f;
    inner.y = fx;
    body::forward(ex, inner);
    ex.run(backend::op::Add<T>{.n = f.rows * f.in, .a = f.x, .b = fx, .y = f.y});
  }

  // dx = dy + f's input gradient.
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    LayerBackward<T> inner = b;
    inner.y = b.saved + b.rows * body::saved_values(b.in);
    body::backward(ex, inner);
    if (b.dx) ex.run(backend::op::Add<T>{.n = b.rows * b.in, .a = b.dx, .b = b.dy, .y = b.dx});
  }
};

} // namespace tandem
