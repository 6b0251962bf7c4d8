// SPDX-License-Identifier: Apache-2.0
// CausalSelfAttention<D, Heads, T>: nn.MultiheadAttention(D, Heads, batch_first=True) of each
// sequence with itself, position t attending to positions <= t (a causal mask), with its
// parameters' names and initialisation.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops/batched_gemm.hpp"
#include "tandem/backend/ops/causal_softmax.hpp"
#include "tandem/backend/ops/heads.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem {

namespace detail {
template <std::size_t D, std::size_t Heads> struct HeadsDivideWidth {
  static_assert(Heads > 0 && D % Heads == 0,
                "TANDEM_HEADS_DIVIDE_WIDTH: CausalSelfAttention<D, Heads, T> splits D into Heads heads of "
                "D / Heads values each, so Heads must divide D; HeadsDivideWidth<D, Heads> in this message names "
                "both");
  static constexpr bool value = true;
};
} // namespace detail

template <std::size_t D, std::size_t Heads, std::size_t SeqLen> struct CausalSelfAttention {
  static_assert(detail::HeadsDivideWidth<D, Heads>::value);
  static_assert(SeqLen > 0, "TANDEM_ATTENTION_ZERO_LENGTH: CausalSelfAttention<D, Heads, T> needs T > 0");

  static constexpr std::size_t in_features = D;
  static constexpr std::size_t out_features = D;
  static constexpr std::size_t sequence_length = SeqLen;
  // Per row: the projections' 4 D^2 weights, 3 multiply-adds each (as Linear's), and the query's
  // scores and weighted values against all T positions, T D each forward and 4 T D backward (the
  // products are computed over the whole T x T block, the mask applied after).
  static constexpr std::size_t cost(std::size_t) { return 12 * D * D + 6 * SeqLen * D; }
  static constexpr std::size_t head_dim = D / Heads;
  static constexpr std::array<ParameterSpec, 4> parameters{
      ParameterSpec{"in_proj_weight", 3 * D, D}, ParameterSpec{"in_proj_bias", 3 * D, 1},
      ParameterSpec{"out_proj.weight", D, D}, ParameterSpec{"out_proj.bias", D, 1}};
  static constexpr std::size_t in_bias = 3 * D * D, out_weight = in_bias + 3 * D, out_bias = out_weight + D * D;
  static constexpr bool sets_gradients = true;

  // Per row: q, k and v by head (3D), the attention weights of its query (Heads x T), and the
  // heads' merged output (D), which the output projection's weight gradient reads.
  static constexpr std::size_t saved_values(std::size_t) { return 3 * D + Heads * SeqLen + D; }
  // The backward's gradients (the forward needs 4D of it): of the merged output and by head (2D),
  // of the weights (Heads x T), of q, k, v by head and projected (6D).
  static constexpr std::size_t scratch_values(std::size_t) { return 8 * D + Heads * SeqLen; }

  // nn.MultiheadAttention's _reset_parameters: xavier_uniform_ on in_proj_weight, zero biases, and
  // the output projection's weight as nn.Linear's (U(-1/sqrt(D), 1/sqrt(D))).
  template <class T> static void init(std::span<T> params, std::size_t, Random &rng) {
    const double in_bound = std::sqrt(6.0 / double(D + 3 * D)), out_bound = 1.0 / std::sqrt(double(D));
    for (std::size_t i = 0; i < in_bias; ++i) params[i] = static_cast<T>(rng.uniform(-in_bound, in_bound));
    for (std::size_t i = in_bias; i < out_weight; ++i) params[i] = T(0);
    for (std::size_t i = out_weight; i < out_bias; ++i) params[i] = static_cast<T>(rng.uniform(-out_bound, out_bound));
    for (std::size_t i = out_bias; i < out_bias + D; ++i) params[i] = T(0);
  }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    const Layout<T> at(f.saved, f.scratch, f.rows);
    const std::size_t seqs = f.rows / SeqLen;
    ex.run(backend::op::LinearForward<T>{.batch = f.rows, // (rows, 3D)
                                         .in = D,
                                         .out = 3 * D,
                                         .x = f.x,
                                         .weight = f.params,
                                         .bias = f.params + in_bias,
                                         .y = at.qkv});
    ex.run(backend::op::SplitHeads<T>{
        .seqs = seqs, .seq_len = SeqLen, .heads = Heads, .head_dim = head_dim, .parts = 3, .x = at.qkv, .y = at.q});
    // weights = causal softmax(q k^T / sqrt(head_dim)), per sequence and head
    ex.run(products<T>(seqs, false, true, SeqLen, SeqLen, head_dim, scale<T>(), at.q, at.k, at.weights));
    ex.run(backend::op::CausalSoftmax<T>{
        .rows = seqs * Heads * SeqLen, .seq_len = SeqLen, .x = at.weights, .y = at.weights});
    ex.run(products<T>(seqs, false, false, SeqLen, head_dim, SeqLen, T(1), at.weights, at.v, at.out_heads));
    ex.run(backend::op::MergeHeads<T>{.seqs = seqs,
                                      .seq_len = SeqLen,
                                      .heads = Heads,
                                      .head_dim = head_dim,
                                      .parts = 1,
                                      .x = at.out_heads,
                                      .y = at.merged});
    ex.run(backend::op::LinearForward<T>{.batch = f.rows,
                                         .in = D,
                                         .out = D,
                                         .x = at.merged,
                                         .weight = f.params + out_weight,
                                         .bias = f.params + out_bias,
                                         .y = f.y});
  }

  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    const Layout<T> at(b.saved, b.scratch, b.rows);
    const std::size_t seqs = b.rows / SeqLen;
    ex.run(backend::op::LinearBackward<T>{.batch = b.rows,
                                          .in = D,
                                          .out = D,
                                          .x = at.merged,
                                          .weight = b.params + out_weight,
                                          .dy = b.dy,
                                          .dx = at.d_merged,
                                          .dweight = b.grads + out_weight,
                                          .dbias = b.grads + out_bias,
                                          .accumulate = b.accumulate});
    ex.run(backend::op::SplitHeads<T>{.seqs = seqs,
                                      .seq_len = SeqLen,
                                      .heads = Heads,
                                      .head_dim = head_dim,
                                      .parts = 1,
                                      .x = at.d_merged,
                                      .y = at.d_out_heads});
    // d weights = d out v^T, d v = weights^T d out
    ex.run(products<T>(seqs, false, true, SeqLen, SeqLen, head_dim, T(1), at.d_out_heads, at.v, at.d_weights));
    ex.run(products<T>(seqs, true, false, SeqLen, head_dim, SeqLen, T(1), at.weights, at.d_out_heads, at.dv));
    // the scores' gradient, in place; then d q = scale d scores k, d k = scale d scores^T q
    ex.run(backend::op::CausalSoftmaxBackward<T>{
        .rows = seqs * Heads * SeqLen, .seq_len = SeqLen, .y = at.weights, .dy = at.d_weights, .dx = at.d_weights});
    ex.run(products<T>(seqs, false, false, SeqLen, head_dim, SeqLen, scale<T>(), at.d_weights, at.k, at.dq));
    ex.run(products<T>(seqs, true, false, SeqLen, head_dim, SeqLen, scale<T>(), at.d_weights, at.q, at.dk));
    ex.run(backend::op::MergeHeads<T>{
        .seqs = seqs, .seq_len = SeqLen, .heads = Heads, .head_dim = head_dim, .parts = 3, .x = at.dq, .y = at.d_qkv});
    ex.run(backend::op::LinearBackward<T>{.batch = b.rows,
                                          .in = D,
                                          .out = 3 * D,
                                          .x = b.x,
                                          .weight = b.params,
                                          .dy = at.d_qkv,
                                          .dx = b.dx,
                                          .dweight = b.grads,
                                          .dbias = b.grads + in_bias,
                                          .accumulate = b.accumulate});
    // The keys' bias has no gradient: it adds q . bias to every score of a query's row, which the
    // softmax takes away. Summed in floats its gradient is rounding noise, which Adam's division
    // by the gradient's own size would turn into updates as large as any other: it is zero.
    ex.run(backend::op::Fill<T>{.n = D, .value = T(0), .dst = b.grads + in_bias + D});
  }

private:
  template <class T> static T scale() { return T(1) / std::sqrt(T(head_dim)); }

  // Where each (rows, width) block lies in the saved and scratch memory of `rows` rows. By head
  // means (sequences, Heads, T, head_dim) blocks; weights are (sequences, Heads, T, T).
  template <class T> struct Layout {
    T *q, *k, *v, *weights, *merged;                              // saved
    T *qkv, *out_heads;                                           // the forward's scratch
    T *d_merged, *d_out_heads, *d_weights, *dq, *dk, *dv, *d_qkv; // the backward's
    Layout(T *saved, T *scratch, std::size_t rows) {
      q = saved, k = q + rows * D, v = k + rows * D, weights = v + rows * D, merged = weights + rows * Heads * SeqLen;
      qkv = scratch, out_heads = qkv + rows * 3 * D;
      d_merged = scratch, d_out_heads = d_merged + rows * D, d_weights = d_out_heads + rows * D;
      dq = d_weights + rows * Heads * SeqLen, dk = dq + rows * D, dv = dk + rows * D, d_qkv = dv + rows * D;
    }
  };

  // One product per sequence and head: C (m, n) = alpha * op(A) op(B), each operand a contiguous
  // matrix of its block (A (m, k) or (k, m) when transposed; likewise B).
  template <class T>
  static backend::op::BatchedGemm<T> products(std::size_t seqs, bool trans_a, bool trans_b, std::size_t m,
                                              std::size_t n, std::size_t k, T alpha, const T *a, const T *b, T *c) {
    return {.gemm = {.trans_a = trans_a,
                     .trans_b = trans_b,
                     .m = m,
                     .n = n,
                     .k = k,
                     .alpha = alpha,
                     .a = a,
                     .lda = trans_a ? m : k,
                     .b = b,
                     .ldb = trans_b ? k : n,
                     .beta = T(0),
                     .c = c,
                     .ldc = n},
            .count = seqs * Heads,
            .stride_a = m * k,
            .stride_b = k * n,
            .stride_c = m * n};
  }
};

} // namespace tandem
