// SPDX-License-Identifier: Apache-2.0
// Dropout<Percent>: nn.Dropout(Percent / 100) in training calls (train_step, forward_backward),
// the identity in forward. Its mask is a function of the network's seed, the step, the layer's
// place and each element's place in the whole batch (op::dropout_keeps), so every schedule and
// rank count drops the same elements; PyTorch's own draws differ.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/dropout.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

template <unsigned Percent> struct Dropout {
  static_assert(Percent < 100, "TANDEM_DROPOUT_RATE: Dropout<Percent> drops Percent % of the elements: 0 <= Percent "
                               "< 100");
  static constexpr float p = static_cast<float>(Percent) / 100.0f;
  static constexpr std::size_t in_features = 0;
  static constexpr std::size_t out_features = 0;
  static constexpr std::array<ParameterSpec, 0> parameters{};
  static constexpr bool sets_gradients = true; // (it has none)
  static constexpr bool draws_random = true;

  template <class T> static void init(std::span<T>, std::size_t, Random &) {}

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.run(op<T>(f.key, f.first_row * f.in, f.rows * f.in, f.x, f.y));
  }
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    if (b.dx) ex.run(op<T>(b.key, b.first_row * b.in, b.rows * b.in, b.dy, b.dx));
  }

private:
  // key 0 (not training): every element kept, times 1, which is exact.
  template <class T>
  static backend::op::Dropout<T> op(std::uint64_t key, std::size_t first, std::size_t n, const T *x, T *y) {
    const bool training = key != 0 && Percent > 0;
    return {.n = n,
            .key = key,
            .first = first,
            .p = training ? p : 0.0f,
            .scale = training ? T(1) / (T(1) - T(p)) : T(1),
            .x = x,
            .y = y};
  }
};

} // namespace tandem
