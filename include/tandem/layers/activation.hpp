// SPDX-License-Identifier: Apache-2.0
// ActivationLayer<Kind>: the shared body of the elementwise layers (ReLU, Sigmoid, Tanh, GELU, ...).
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

// An elementwise function keeps any width (in_features == out_features == 0) and trains nothing.
// The named layers derive from it, so diagnostics and parameter names show `ReLU`, not this.
template <backend::Activation Kind> struct ActivationLayer {
  static constexpr backend::Activation activation = Kind;
  static constexpr std::size_t in_features = 0;
  static constexpr std::size_t out_features = 0;
  static constexpr std::array<ParameterSpec, 0> parameters{};
  static constexpr bool sets_gradients = true; // (it has none)

  template <class T> static void init(std::span<T>, std::size_t, Random &) {}

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.run(backend::op::ActivationForward<T>{.kind = Kind, .n = f.rows * f.in, .x = f.x, .y = f.y});
  }
  template <class T> static backend::op::SmallLayer<T> small_layer(const LayerBackward<T> &b) {
    return {.kind = Kind, .in = b.in, .out = b.in, .x = b.x, .y = const_cast<T *>(b.y)};
  }
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    if (!b.dx) return; // the first layer of the network: nothing upstream needs its gradient
    ex.run(backend::op::ActivationBackward<T>{
        .kind = Kind, .n = b.rows * b.in, .x = b.x, .y = b.y, .dy = b.dy, .dx = b.dx});
  }
};

} // namespace tandem
