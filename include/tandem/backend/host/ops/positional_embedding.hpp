// SPDX-License-Identifier: Apache-2.0
// op::PositionalForward / PositionalBackward on the host.
#pragma once

#include <algorithm>
#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/positional_embedding.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::PositionalForward<T>> {
  static void run(const op::PositionalForward<T> &f) {
    for (std::size_t r = 0; r < f.rows; ++r) {
      const T *w = f.weight + (r % f.seq_len) * f.width;
      for (std::size_t i = 0; i < f.width; ++i) f.y[r * f.width + i] = f.x[r * f.width + i] + w[i];
    }
  }
};

template <class T> struct Kernel<op::PositionalBackward<T>> {
  static void run(const op::PositionalBackward<T> &b) {
    const std::size_t n = b.seq_len * b.width;
    if (!b.accumulate) std::fill(b.dweight, b.dweight + n, T(0));
    for (std::size_t r = 0; r < b.rows; ++r) {
      T *dw = b.dweight + (r % b.seq_len) * b.width;
      for (std::size_t i = 0; i < b.width; ++i) dw[i] += b.dy[r * b.width + i];
    }
    if (b.dx && b.dx != b.dy) std::copy(b.dy, b.dy + b.rows * b.width, b.dx);
  }
};

} // namespace tandem::backend::host
