// SPDX-License-Identifier: Apache-2.0
// op::ColumnSum: the column sums of a (rows, cols) matrix (a bias's gradient), set or added.
#pragma once

#include <cstddef>

namespace tandem::backend::op {

template <class T> struct ColumnSum {
  std::size_t rows = 0, cols = 0;
  const T *x = nullptr;
  T *y = nullptr; // (cols)
  bool accumulate = true;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/column_sum.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/column_sum.cuh"
#endif
