// SPDX-License-Identifier: Apache-2.0
// op::ColumnSum on the host: rows added in order, as LinearBackward's bias gradient adds them.
#pragma once

#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/column_sum.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::ColumnSum<T>> {
  static void run(const op::ColumnSum<T> &s) {
    if (!s.accumulate)
      for (std::size_t c = 0; c < s.cols; ++c) s.y[c] = T(0);
    for (std::size_t r = 0; r < s.rows; ++r)
      for (std::size_t c = 0; c < s.cols; ++c) s.y[c] += s.x[r * s.cols + c];
  }
};

} // namespace tandem::backend::host
