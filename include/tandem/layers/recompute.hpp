// SPDX-License-Identifier: Apache-2.0
// Recompute<Layers...>: the layers in a chain (Sequential<Layers...>) that keep nothing from their
// forward to their backward. The backward runs the chain's forward again, into memory of that
// call alone, then the chain's backward: activation checkpointing per segment (torchgpipe's
// checkpoint), one more forward of the segment per micro-batch for its inner activations' memory.
#pragma once

#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/layers/sequential.hpp"
#include "tandem/random.hpp"

namespace tandem {

// The same parameters, names (nn.Sequential's nesting), initialisation, random keys and results,
// bit for bit, as Sequential<Layers...>: the recomputed forward is the forward that ran, on the
// same input with the same key and rows, so Dropout draws the same mask again.
//
// Its backward is one task: it does not offer the split backward (SplitBackward) even where its
// layers do, since a weight-gradient task apart would need the inner layers' output gradients,
// which live only in the one call's memory (keeping them would undo the saving, and making them
// again would cost a second forward and input-gradient pass).
template <class... Ls> struct Recompute {
  using body = Sequential<Ls...>;
  static constexpr std::size_t in_features = body::in_features;
  static constexpr std::size_t out_features = body::out_features;
  static constexpr auto parameters = body::parameters;
  static constexpr bool sets_gradients = body::sets_gradients;
  static constexpr bool draws_random = body::draws_random;
  static constexpr std::size_t sequence_length = body::sequence_length;
  // The chain's forward and backward, and its forward once more: for products a third of the
  // chain's cost (layer_cost counts each matrix value once forward and twice backward).
  static constexpr std::size_t cost(std::size_t in) { return body::cost(in) + body::cost(in) / 3; }

  // Nothing: the backward's LayerBackward::x is the input, which the stage keeps anyway (it is
  // the previous layer's output, or the stage's input).
  static constexpr std::size_t saved_values(std::size_t) { return 0; }
  // Per call: the chain's kept memory (its inner activations and its layers' saved memory), the
  // recomputed output and the chain's own per-call memory, each from a multiple of `alignment`
  // values.
  static constexpr std::size_t scratch_values(std::size_t in) { return own_memory(in) + body::scratch_values(in); }
  // Each block of the chain's memory, and the output, then lies as aligned (up to `alignment`
  // values) as in Sequential's buffers, each of which starts an allocation: a product's algorithm
  // may depend on its operands' alignment (cuBLASLt's heuristics), and the recomputed forward must
  // give the same bits as the first.
  static constexpr std::size_t alignment = 64;

  template <class T> static void init(std::span<T> params, std::size_t in, Random &rng) { body::init(params, in, rng); }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    LayerForward<T> inner = f;
    inner.saved = f.scratch;
    inner.scratch = f.scratch + f.rows * own_memory(f.in);
    body::forward(ex, inner);
  }

  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    T *const kept = b.scratch;
    T *const inner_scratch = b.scratch + b.rows * own_memory(b.in);
    // The forward again, its output aside (the same bits as b.y, which the backward then reads).
    body::forward(ex, LayerForward<T>{.rows = b.rows,
                                      .in = b.in,
                                      .out = b.out,
                                      .params = b.params,
                                      .x = b.x,
                                      .y = b.scratch + b.rows * aligned(body::saved_values(b.in)),
                                      .saved = kept,
                                      .scratch = inner_scratch,
                                      .first_row = b.first_row,
                                      .key = b.key});
    LayerBackward<T> inner = b;
    inner.saved = kept;
    inner.scratch = inner_scratch;
    body::backward(ex, inner);
  }

private:
  static constexpr std::size_t output_width(std::size_t in) { return body::widths(in)[body::num_layers]; }
  static constexpr std::size_t aligned(std::size_t values) { return (values + alignment - 1) / alignment * alignment; }
  // The kept memory and the output.
  static constexpr std::size_t own_memory(std::size_t in) {
    return aligned(aligned(body::saved_values(in)) + output_width(in));
  }
};

} // namespace tandem
