// SPDX-License-Identifier: Apache-2.0
// op::ColumnSum on a GPU: LinearBackward's bias-gradient kernel (kernels::column_sums), so a bias
// added by either way has the same sums. Each column's rows are split among 16 threads in a fixed
// way and added in a fixed order: the same bits every run, not the host's row-order rounding.
#pragma once

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/column_sum.hpp"

namespace tandem::backend::cuda {

template <class T> struct Kernel<op::ColumnSum<T>> {
  static void run(const op::ColumnSum<T> &s, const kernels::Launch &l) {
    kernels::column_sums(s.rows, s.cols, s.x, s.y, s.accumulate, l);
  }
};

} // namespace tandem::backend::cuda
