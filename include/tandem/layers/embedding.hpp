// SPDX-License-Identifier: Apache-2.0
// Embedding<Vocab, D>: nn.Embedding(Vocab, D). Reads int32 token ids, one per row, and gives each
// row its id's row of `weight` (Vocab, D).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/embedding.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

template <std::size_t Vocab, std::size_t D> struct Embedding {
  static_assert(Vocab > 0 && D > 0, "TANDEM_EMBEDDING_ZERO_SIZE: Embedding<Vocab, D> needs Vocab > 0 and D > 0");
  static_assert(Vocab <= std::size_t{INT32_MAX}, "TANDEM_EMBEDDING_VOCABULARY: token ids are int32: Vocab must fit");

  using input_type = std::int32_t; // the network's input is token ids
  static constexpr std::size_t vocabulary = Vocab;
  static constexpr std::size_t in_features = 1; // one id per row
  static constexpr std::size_t out_features = D;
  // A gather: a row of the table copied forward, added into its gradient backward (not 3 V D,
  // which the default would read from the table's size).
  static constexpr std::size_t cost(std::size_t) { return 2 * D; }
  static constexpr std::array<ParameterSpec, 1> parameters{ParameterSpec{"weight", Vocab, D}};
  static constexpr bool sets_gradients = true;

  // Before any work: every id in [0, Vocab).
  static void check_input(std::span<const std::int32_t> ids, const char *call) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= Vocab)
        detail::fail(call, ": token ", i, " is ", ids[i], ", outside the vocabulary [0, ", Vocab, ") of Embedding<",
                     Vocab, ", ", D, ">");
  }

  // nn.Embedding's reset_parameters: N(0, 1).
  template <class T> static void init(std::span<T> params, std::size_t, Random &rng) {
    for (auto &p : params) p = static_cast<T>(rng.normal());
  }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.run(backend::op::EmbeddingForward<T>{
        .rows = f.rows, .vocab = Vocab, .width = D, .ids = token_ids(f.x), .weight = f.params, .y = f.y});
  }
  // The ids need no gradient: only the weight's.
  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    ex.run(backend::op::EmbeddingBackward<T>{.rows = b.rows,
                                             .vocab = Vocab,
                                             .width = D,
                                             .ids = token_ids(b.x),
                                             .dy = b.dy,
                                             .dweight = b.grads,
                                             .accumulate = b.accumulate});
  }
};

} // namespace tandem
