// SPDX-License-Identifier: Apache-2.0
// op::EmbeddingForward / EmbeddingBackward: nn.Embedding's row gather and its gradient.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem::backend::op {

// y (rows, width) = weight[ids[r]] (weight (vocab, width)). The ids were checked to lie in
// [0, vocab) before the step.
template <class T> struct EmbeddingForward {
  std::size_t rows = 0, vocab = 0, width = 0;
  const std::int32_t *ids = nullptr;
  const T *weight = nullptr;
  T *y = nullptr;
};

// dweight[ids[r]] += dy[r] for every row, in row order (the same sums on every backend and run);
// without `accumulate` the rows no id names are set to zero first.
template <class T> struct EmbeddingBackward {
  std::size_t rows = 0, vocab = 0, width = 0;
  const std::int32_t *ids = nullptr;
  const T *dy = nullptr;
  T *dweight = nullptr;
  bool accumulate = true;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/embedding.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/embedding.cuh"
#endif
