// SPDX-License-Identifier: Apache-2.0
// op::CausalSoftmax / CausalSoftmaxBackward: a row-wise softmax over the positions a query may
// attend to (position t: 0..t), for (rows, seq_len) scores of whole sequences.
#pragma once

#include <cstddef>

namespace tandem::backend::op {

// Row r is query position t = r % seq_len: y[r][j] = softmax over j <= t of x[r], and 0 for j > t
// (PyTorch's -inf mask). y may be x.
template <class T> struct CausalSoftmax {
  std::size_t rows = 0, seq_len = 0;
  const T *x = nullptr;
  T *y = nullptr;
};

// dx = y * (dy - sum_j y_j dy_j) per row: the scores' gradient from the softmax's output y.
// dx may be dy.
template <class T> struct CausalSoftmaxBackward {
  std::size_t rows = 0, seq_len = 0;
  const T *y = nullptr, *dy = nullptr;
  T *dx = nullptr;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/causal_softmax.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/causal_softmax.cuh"
#endif
