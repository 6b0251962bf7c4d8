// SPDX-License-Identifier: Apache-2.0
// op::SplitHeads / MergeHeads on a GPU: one thread per value, indexed by the layout it writes, so
// the writes are contiguous and the reads come in head_dim-long runs.
#pragma once

#include <cstddef>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/heads.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// The two layouts of op/heads.hpp: rows (seqs * seq_len, parts * heads * head_dim) and blocks
// (parts, seqs, heads, seq_len, head_dim).
struct HeadLayout {
  std::size_t seqs, seq_len, heads, head_dim;
  std::size_t width; // parts * heads * head_dim

  // The row-layout place of the value at `i` in the block layout.
  __device__ std::size_t row_of_block(std::size_t i) const {
    const std::size_t d = i % head_dim, t = i / head_dim % seq_len, h = i / (head_dim * seq_len) % heads;
    const std::size_t bp = i / (head_dim * seq_len * heads); // p * seqs + b
    const std::size_t b = bp % seqs, p = bp / seqs;
    return (b * seq_len + t) * width + (p * heads + h) * head_dim + d;
  }
  // The block-layout place of the value at `i` in the row layout.
  __device__ std::size_t block_of_row(std::size_t i) const {
    const std::size_t row = i / width, col = i % width;
    const std::size_t d = col % head_dim, ph = col / head_dim; // p * heads + h
    const std::size_t h = ph % heads, p = ph / heads, b = row / seq_len, t = row % seq_len;
    return (((p * seqs + b) * heads + h) * seq_len + t) * head_dim + d;
  }
};

template <class T> struct SplitHeadsFn {
  HeadLayout layout;
  const T *x;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = x[layout.row_of_block(i)]; }
};
template <class T> struct MergeHeadsFn {
  HeadLayout layout;
  const T *x;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = x[layout.block_of_row(i)]; }
};

template <class Op> HeadLayout head_layout(const Op &o) {
  return {o.seqs, o.seq_len, o.heads, o.head_dim, o.parts * o.heads * o.head_dim};
}
} // namespace kernels

template <class T> struct Kernel<op::SplitHeads<T>> {
  static void run(const op::SplitHeads<T> &s, const kernels::Launch &l) {
    const std::size_t n = s.parts * s.seqs * s.heads * s.seq_len * s.head_dim;
    kernels::launch_each(n, kernels::SplitHeadsFn<T>{kernels::head_layout(s), s.x, s.y}, "SplitHeads", l);
  }
};

template <class T> struct Kernel<op::MergeHeads<T>> {
  static void run(const op::MergeHeads<T> &m, const kernels::Launch &l) {
    const std::size_t n = m.parts * m.seqs * m.heads * m.seq_len * m.head_dim;
    kernels::launch_each(n, kernels::MergeHeadsFn<T>{kernels::head_layout(m), m.x, m.y}, "MergeHeads", l);
  }
};

} // namespace tandem::backend::cuda
