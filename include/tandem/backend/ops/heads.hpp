// SPDX-License-Identifier: Apache-2.0
// op::SplitHeads / MergeHeads: rows of `parts` x heads x head_dim values <-> one contiguous
// (seqs, heads, seq_len, head_dim) block per part, the layout per-head products want.
#pragma once

#include <cstddef>

namespace tandem::backend::op {

// x (seqs * seq_len, parts * heads * head_dim), row b * seq_len + t, column
// (p * heads + h) * head_dim + d  ->  y[p] (seqs, heads, seq_len, head_dim) at
// y + p * seqs * heads * seq_len * head_dim. Attention splits its projected q, k, v (parts 3).
template <class T> struct SplitHeads {
  std::size_t seqs = 0, seq_len = 0, heads = 0, head_dim = 0, parts = 1;
  const T *x = nullptr;
  T *y = nullptr;
};

// The inverse: y (rows, parts * heads * head_dim) from x's blocks.
template <class T> struct MergeHeads {
  std::size_t seqs = 0, seq_len = 0, heads = 0, head_dim = 0, parts = 1;
  const T *x = nullptr;
  T *y = nullptr;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/heads.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/heads.cuh"
#endif
