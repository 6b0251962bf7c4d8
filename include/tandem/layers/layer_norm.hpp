// SPDX-License-Identifier: Apache-2.0
// LayerNorm<D>: nn.LayerNorm(D): eps 1e-5, `weight` ones and `bias` zeros at first.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/layer_norm.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

template <std::size_t D> struct LayerNorm {
  static_assert(D > 0, "TANDEM_LAYER_NORM_ZERO_WIDTH: LayerNorm<D> needs D > 0");

  static constexpr std::size_t in_features = D;
  static constexpr std::size_t out_features = D;
  // Per value: forward, the mean's and variance's sums, normalising and the affine map (4);
  // backward, the weight's and bias's gradients, two sums over the row and dx (about 7).
  static constexpr std::size_t cost(std::size_t) { return 11 * D; }
  static constexpr std::array<ParameterSpec, 2> parameters{ParameterSpec{"weight", D, 1}, ParameterSpec{"bias", D, 1}};
  static constexpr bool sets_gradients = true;
  static constexpr double eps = 1e-5;

  // Each row's mean and reciprocal standard deviation, as PyTorch keeps them for its backward.
  static constexpr std::size_t saved_values(std::size_t) { return 2; }

  template <class T> static void init(std::span<T> params, std::size_t, Random &) {
    for (std::size_t i = 0; i < D; ++i) params[i] = T(1), params[D + i] = T(0);
  }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.run(backend::op::LayerNormForward<T>{.rows = f.rows,
                                            .width = D,
                                            .x = f.x,
                                            .weight = f.params,
                                            .bias = f.params + D,
                                            .y = f.y,
                                            .mean = f.saved,
                                            .rstd = f.saved + f.rows,
                                            .eps = eps});
  }
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::LayerNormBackward<T>{.rows = b.rows,
                                             .width = D,
                                             .x = b.x,
                                             .weight = b.params,
                                             .dy = b.dy,
                                             .mean = b.saved,
                                             .rstd = b.saved + b.rows,
                                             .dx = b.dx,
                                             .dweight = b.grads,
                                             .dbias = b.grads + D,
                                             .accumulate = b.accumulate});
  }
};

} // namespace tandem
