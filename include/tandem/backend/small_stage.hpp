// SPDX-License-Identifier: Apache-2.0
// A stage of small layers in one pass: the body both backends run for op::SmallForward and
// op::SmallBackward, one CUDA block (or a host loop) instead of a kernel per layer.
#pragma once

#include <cstddef>

#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/error.hpp"

namespace tandem::backend::small {

// Why: a small network's step on a GPU is a chain of launches that each do almost nothing (the
// seed model's step is about 20 of them), so its time is the chain's latency, not its work.
// Doing a whole stage in one block of threads keeps the activations in shared memory and makes
// the chain a few launches long.
//
// The body is written against a Block, which runs `each(n, f)` as f(0) ... f(n - 1) and returns
// when all have run: on a GPU the block's threads stride over [0, n) and meet at a barrier; on
// the host a loop does it (small_network.hpp also asks for `single` and `sum`; see HostBlock).
// Both backends run the same arithmetic in the same order, so the host backend tests this code,
// and a GPU gives the host's results within rounding of the sums.

// The per-element formulas are activation_math.hpp's (activate, activate_backward).

// Shared memory of one block, 40 KB for float: a chunk of rows in two ping-pong buffers (a, b),
// the chunk of a layer's saved input (x) and one layer's weight (w). Every value a thread sums
// over comes from here: from global memory each term would be a round trip of its own.
template <class T> inline constexpr std::size_t chunk_rows = 8192 / (op::small_width * sizeof(T));
template <class T> inline constexpr std::size_t buffer_values = chunk_rows<T> *op::small_width;
template <class T> inline constexpr std::size_t weight_values = 16384 / sizeof(T);
template <class T> struct Scratch { T *a, *b, *x, *w; };

// The limits the fixed buffers above rest on: at most `capacity` layers (the op's array), each
// width at most op::small_width. The pipeline makes only ops that keep them; a direct call that
// does not is refused before it runs, where it would write past the buffers (or, for a whole
// network, leave no room for a single row and never finish).
template <class T, class Where>
void require_small(const char *what, const Where &where, const op::SmallLayer<T> *layers, std::size_t count,
                   std::size_t capacity) {
  if (count > capacity) detail::fail(what, " on ", where, ": ", count, " layers, more than its ", capacity);
  for (std::size_t j = 0; j < count; ++j)
    if (layers[j].in > op::small_width || layers[j].out > op::small_width)
      detail::fail(what, " on ", where, ": layer ", j, " maps ", layers[j].in, " to ", layers[j].out,
                   " features, wider than op::small_width = ", op::small_width);
}

// The weight of layer l in w, where it fits (always in float; double weights above 2048 values
// are read where they are).
template <class T, class Block>
TANDEM_HOST_DEVICE const T *stage_weight(const op::SmallLayer<T> &l, T *w, Block &block) {
  const std::size_t n = l.out * l.in;
  if (n > weight_values<T>) return l.weight;
  block.each(n, [&](std::size_t i) { w[i] = l.weight[i]; });
  return w;
}

// Rows [first, first + n) through layers [0, count): their input in s.a, each layer's output
// written to its y (the stash and the stage output, which the backward reads). Returns with the
// last layer's output in s.a (the buffers swap as the layers go).
template <class T, class Block>
TANDEM_HOST_DEVICE void forward_layers(const op::SmallLayer<T> *layers, std::size_t count, std::size_t first,
                                       std::size_t n, Scratch<T> &s, Block &block) {
  for (std::size_t j = 0; j < count; ++j) {
    const op::SmallLayer<T> &l = layers[j];
    T *y = l.y + first * l.out;
    const T *a = s.a;
    T *b = s.b;
    if (l.linear) {
      const T *w = stage_weight(l, s.w, block);
      // y = x W^T + b: the product first, then the bias, as addmm's result rounds.
      block.each(n * l.out, [&](std::size_t i) {
        const std::size_t r = i / l.out, o = i % l.out;
        const T *xr = a + r * l.in, *wo = w + o * l.in;
        T acc = 0;
        for (std::size_t k = 0; k < l.in; ++k) acc += xr[k] * wo[k];
        if (l.bias) acc += l.bias[o];
        b[i] = acc;
        y[i] = acc;
      });
    } else {
      block.each(n * l.out, [&](std::size_t i) {
        const T v = activate(l.kind, a[i]);
        b[i] = v;
        y[i] = v;
      });
    }
    s.a = b;
    s.b = const_cast<T *>(a);
  }
}

// Rows [first, first + n) backwards through layers [0, count), last first: the gradient of the
// last layer's output in s.a; each Linear's weight and bias gradients set (`set`) or added to
// (micro-batches and chunks add up). Returns with the gradient of layer 0's input in s.a, where
// `dx_first` asks for it (the network's input needs none).
template <class T, class Block>
TANDEM_HOST_DEVICE void backward_layers(const op::SmallLayer<T> *layers, std::size_t count, std::size_t first,
                                        std::size_t n, bool set, bool dx_first, Scratch<T> &s, Block &block) {
  for (std::size_t jj = count; jj-- > 0;) {
    const op::SmallLayer<T> &l = layers[jj];
    const bool need_dx = jj > 0 || dx_first;
    const T *x = l.x + first * l.in;
    const T *a = s.a;
    T *b = s.b;
    if (l.linear) {
      const T *w = need_dx ? stage_weight(l, s.w, block) : l.weight;
      T *xs = s.x;
      block.each(n * l.in, [&](std::size_t i) { xs[i] = x[i]; });
      // One pass: dW (out x in), db (out) and dx (n x in) are independent sums over a.
      const std::size_t dw = l.out * l.in, db = l.dbias ? l.out : 0, dx = need_dx ? n * l.in : 0;
      block.each(dw + db + dx, [&](std::size_t i) {
        if (i < dw) {
          const std::size_t o = i / l.in, k = i % l.in;
          T acc = 0;
          for (std::size_t r = 0; r < n; ++r) acc += a[r * l.out + o] * xs[r * l.in + k];
          l.dweight[i] = set ? acc : l.dweight[i] + acc;
        } else if (i < dw + db) {
          const std::size_t o = i - dw;
          T acc = 0;
          for (std::size_t r = 0; r < n; ++r) acc += a[r * l.out + o];
          l.dbias[o] = set ? acc : l.dbias[o] + acc;
        } else {
          const std::size_t e = i - dw - db, r = e / l.in, k = e % l.in;
          T acc = 0;
          for (std::size_t o = 0; o < l.out; ++o) acc += a[r * l.out + o] * w[o * l.in + k];
          b[e] = acc;
        }
      });
    } else if (need_dx) {
      const T *y = l.y + first * l.out;
      block.each(n * l.in, [&](std::size_t i) { b[i] = activate_backward(l.kind, x[i], y[i], a[i]); });
    }
    s.a = b;
    s.b = const_cast<T *>(a);
  }
}

// op::SmallForward on rows [first, first + n): x from layers[0].x.
template <class T, class Block>
TANDEM_HOST_DEVICE void forward_chunk(const op::SmallForward<T> &f, std::size_t first, std::size_t n, Scratch<T> s,
                                      Block &block) {
  const std::size_t in0 = f.layers[0].in;
  const T *x = f.layers[0].x + first * in0;
  T *a = s.a;
  block.each(n * in0, [&](std::size_t i) { a[i] = x[i]; });
  forward_layers(&f.layers[0], f.count, first, n, s, block);
}

// op::SmallBackward on rows [first, first + n): dy (rows, last out) in, dx (rows, first in) out
// where asked for. One block must run all chunks of a step in turn: chunks add to the same
// gradients (the first chunk sets them where g.accumulate is off).
template <class T, class Block>
TANDEM_HOST_DEVICE void backward_chunk(const op::SmallBackward<T> &g, std::size_t first, std::size_t n, Scratch<T> s,
                                       Block &block) {
  const std::size_t out_last = g.layers[g.count - 1].out;
  const T *dy = g.dy + first * out_last;
  T *a = s.a;
  block.each(n * out_last, [&](std::size_t i) { a[i] = dy[i]; });
  backward_layers(&g.layers[0], g.count, first, n, !g.accumulate && first == 0, g.dx != nullptr, s, block);
  if (g.dx) {
    T *dx = g.dx + first * g.layers[0].in;
    const T *d = s.a;
    block.each(n * g.layers[0].in, [&](std::size_t i) { dx[i] = d[i]; });
  }
}

// The host's Block: a loop. Marked like the body (under nvcc too) though it only runs on the host.
// Beside each: single(f) runs f once; sum(n, f) returns f(0) + ... + f(n - 1) in double.
struct HostBlock {
  template <class F> TANDEM_HOST_DEVICE void each(std::size_t n, F &&f) {
    for (std::size_t i = 0; i < n; ++i) f(i);
  }
  template <class F> TANDEM_HOST_DEVICE void single(F &&f) { f(); }
  template <class F> TANDEM_HOST_DEVICE double sum(std::size_t n, F &&f) {
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) total += f(i);
    return total;
  }
};

} // namespace tandem::backend::small
