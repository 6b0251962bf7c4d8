// SPDX-License-Identifier: Apache-2.0
// Linear<In, Out>: y = x W^T + b, PyTorch's nn.Linear.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/column_sum.hpp"
#include "tandem/layers/hand_off.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"
#include "tandem/shape.hpp"

namespace tandem {

namespace detail {
// Named so that the widths appear in the diagnostic's instantiation context on every compiler.
template <std::size_t In, std::size_t Out> struct LinearWidthsArePositive {
  static_assert(In > 0 && Out > 0, "TANDEM_LINEAR_ZERO_WIDTH: Linear<In, Out> needs In > 0 and Out > 0; "
                                   "see LinearWidthsArePositive<In, Out> in this message for the values given");
  static constexpr bool value = true;
};
} // namespace detail

template <std::size_t In, std::size_t Out> struct Linear {
  static_assert(detail::LinearWidthsArePositive<In, Out>::value);
  static_assert(detail::LinearParameterCountCheck<In, Out>::value);

  static constexpr std::size_t in_features = In;
  static constexpr std::size_t out_features = Out;
  // weight (Out, In) then bias (Out), as nn.Linear names and lays them out.
  static constexpr std::array<ParameterSpec, 2> parameters{ParameterSpec{"weight", Out, In},
                                                           ParameterSpec{"bias", Out, 1}};
  static constexpr std::size_t bias_offset = Out * In; // where the bias starts in its parameters

  // nn.Linear's reset_parameters: kaiming_uniform_(a = sqrt(5)) on the weight, which is
  // U(-1/sqrt(In), 1/sqrt(In)), and the same bound for the bias.
  template <class T> static void init(std::span<T> params, std::size_t /*in*/, Random &rng) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(In));
    for (auto &p : params) p = static_cast<T>(rng.uniform(-bound, bound));
  }

  // Sets its gradients where LayerBackward::accumulate is off.
  static constexpr bool sets_gradients = true;

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) { forward(ex, f, {}); }
  // With the activation that follows it in one operation (y is then the activation's output): the
  // pipeline uses this for a Linear followed by a ReLU or a GELUTanh, so that a GPU computes both
  // in the product (GELUTanh's input, this layer's own output, is kept at pre_activation).
  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f, const Epilogue<T> &then) {
    ex.run(backend::op::LinearForward<T>{.batch = f.rows,
                                         .in = In,
                                         .out = Out,
                                         .x = f.x,
                                         .weight = f.params,
                                         .bias = f.params + bias_offset,
                                         .y = f.y,
                                         .activation = then.activation,
                                         .relu_mask =
                                             then.activation == backend::Activation::relu ? then.relu_mask : nullptr,
                                         .pre_activation = then.pre_activation});
  }

  template <class T> static backend::op::SmallLayer<T> small_layer(const LayerBackward<T> &b) {
    return {.linear = true,
            .in = In,
            .out = Out,
            .weight = b.params,
            .bias = b.params + bias_offset,
            .dweight = b.grads,
            .dbias = b.grads ? b.grads + bias_offset : nullptr,
            .x = b.x,
            .y = const_cast<T *>(b.y)}; // written by SmallForward, which is handed the stash
  }

  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) { backward(ex, b, {}); }
  // Takes the ReLU between it and the Linear before it (ReluHandOff).
  static constexpr bool takes_relu_backward = true;
  template <class T>
  static void backward(backend::Executor &ex, const LayerBackward<T> &b, const ReluHandOff<T> &hand_off) {
    ex.run(backend::op::LinearBackward<T>{.batch = b.rows,
                                          .in = In,
                                          .out = Out,
                                          .x = b.x,
                                          .weight = b.params,
                                          .dy = b.dy,
                                          .dx = b.dx,
                                          .dweight = b.grads,
                                          .dbias = hand_off.bias_gradient_by_next ? nullptr : b.grads + bias_offset,
                                          .accumulate = b.accumulate,
                                          .relu_before = hand_off.relu_before,
                                          .relu_mask = hand_off.relu_mask,
                                          .dbias_before = hand_off.dbias_before});
  }

  // The backward as two tasks (SplitBackward): dx (rows, In) = dy (rows, Out) * weight (Out, In),
  template <class T> static void backward_input(backend::Executor &ex, const LayerBackward<T> &b) {
    if (!b.dx) return;
    ex.run(backend::op::Gemm<T>{
        .m = b.rows, .n = In, .k = Out, .a = b.dy, .lda = Out, .b = b.params, .ldb = In, .c = b.dx, .ldc = In});
  }
  // and dweight (Out, In) += dy^T * x (rows, In), dbias (Out) += the column sums of dy.
  template <class T> static void backward_weights(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::Gemm<T>{.trans_a = true,
                                .m = Out,
                                .n = In,
                                .k = b.rows,
                                .a = b.dy,
                                .lda = Out,
                                .b = b.x,
                                .ldb = In,
                                .beta = b.accumulate ? T(1) : T(0),
                                .c = b.grads,
                                .ldc = In});
    ex.run(backend::op::ColumnSum<T>{
        .rows = b.rows, .cols = Out, .x = b.dy, .y = b.grads + bias_offset, .accumulate = b.accumulate});
  }
};

} // namespace tandem
