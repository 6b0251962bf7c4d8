// SPDX-License-Identifier: Apache-2.0
// PositionalEmbedding<T, D>: a learned position table, `weight` (T, D), added to each sequence's
// rows (row b * T + t gets weight[t]); in PyTorch, x + nn.Embedding(T, D).weight per position.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/positional_embedding.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

template <std::size_t SeqLen, std::size_t D> struct PositionalEmbedding {
  static_assert(SeqLen > 0 && D > 0, "TANDEM_POSITIONAL_ZERO_SIZE: PositionalEmbedding<T, D> needs T > 0 and D > 0");

  static constexpr std::size_t sequence_length = SeqLen;
  static constexpr std::size_t in_features = D;
  static constexpr std::size_t out_features = D;
  // Per row: its position's row added forward; backward, dy passed on and added into that row.
  static constexpr std::size_t cost(std::size_t) { return 3 * D; }
  static constexpr std::array<ParameterSpec, 1> parameters{ParameterSpec{"weight", SeqLen, D}};
  static constexpr bool sets_gradients = true;

  // As nn.Embedding's table: N(0, 1).
  template <class T> static void init(std::span<T> params, std::size_t, Random &rng) {
    for (auto &p : params) p = static_cast<T>(rng.normal());
  }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.run(backend::op::PositionalForward<T>{
        .rows = f.rows, .seq_len = SeqLen, .width = D, .x = f.x, .weight = f.params, .y = f.y});
  }
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::PositionalBackward<T>{.rows = b.rows,
                                              .seq_len = SeqLen,
                                              .width = D,
                                              .dy = b.dy,
                                              .dx = b.dx,
                                              .dweight = b.grads,
                                              .accumulate = b.accumulate});
  }
};

} // namespace tandem
