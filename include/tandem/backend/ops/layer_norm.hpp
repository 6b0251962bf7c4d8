// SPDX-License-Identifier: Apache-2.0
// op::LayerNormForward / LayerNormBackward: nn.LayerNorm over the last dimension of (rows, width).
#pragma once

#include <cstddef>

namespace tandem::backend::op {

// y = (x - mean) * rstd * weight + bias per row, rstd = 1 / sqrt(var + eps) with the biased
// variance, as PyTorch; each row's mean and rstd are kept for the backward.
template <class T> struct LayerNormForward {
  std::size_t rows = 0, width = 0;
  const T *x = nullptr, *weight = nullptr, *bias = nullptr;
  T *y = nullptr;
  T *mean = nullptr, *rstd = nullptr; // (rows)
  double eps = 1e-5;
};

// From the forward's x, mean and rstd: dx (null: not needed), and the weight's and bias's
// gradients, added to (or set, without `accumulate`).
template <class T> struct LayerNormBackward {
  std::size_t rows = 0, width = 0;
  const T *x = nullptr, *weight = nullptr, *dy = nullptr;
  const T *mean = nullptr, *rstd = nullptr;
  T *dx = nullptr, *dweight = nullptr, *dbias = nullptr;
  bool accumulate = true;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/layer_norm.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/layer_norm.cuh"
#endif
