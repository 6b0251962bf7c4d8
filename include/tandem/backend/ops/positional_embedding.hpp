// SPDX-License-Identifier: Apache-2.0
// op::PositionalForward / PositionalBackward: a learned (seq_len, width) table added by position.
#pragma once

#include <cstddef>

namespace tandem::backend::op {

// y[r] = x[r] + weight[r % seq_len]: rows are whole sequences, row b * seq_len + t at position t.
// y may be x.
template <class T> struct PositionalForward {
  std::size_t rows = 0, seq_len = 0, width = 0;
  const T *x = nullptr, *weight = nullptr;
  T *y = nullptr;
};

// dweight[t] += the sum of dy over the rows at position t (set without `accumulate`), summed in
// row order; dx = dy (null: not needed; may be dy).
template <class T> struct PositionalBackward {
  std::size_t rows = 0, seq_len = 0, width = 0;
  const T *dy = nullptr;
  T *dx = nullptr, *dweight = nullptr;
  bool accumulate = true;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/positional_embedding.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/positional_embedding.cuh"
#endif
