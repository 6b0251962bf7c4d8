// SPDX-License-Identifier: Apache-2.0
// op::CausalSoftmax / CausalSoftmaxBackward on the host.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/causal_softmax.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::CausalSoftmax<T>> {
  static void run(const op::CausalSoftmax<T> &s) {
    const std::size_t n = s.seq_len;
    for (std::size_t r = 0; r < s.rows; ++r) {
      const std::size_t seen = r % n + 1; // positions 0..t
      const T *x = s.x + r * n;
      T *y = s.y + r * n;
      const T top = *std::max_element(x, x + seen);
      T sum = 0;
      for (std::size_t j = 0; j < seen; ++j) sum += y[j] = std::exp(x[j] - top);
      const T inv = T(1) / sum;
      for (std::size_t j = 0; j < seen; ++j) y[j] *= inv;
      std::fill(y + seen, y + n, T(0));
    }
  }
};

template <class T> struct Kernel<op::CausalSoftmaxBackward<T>> {
  static void run(const op::CausalSoftmaxBackward<T> &s) {
    const std::size_t n = s.seq_len;
    for (std::size_t r = 0; r < s.rows; ++r) {
      const std::size_t seen = r % n + 1;
      const T *y = s.y + r * n, *dy = s.dy + r * n;
      T *dx = s.dx + r * n;
      T dot = 0;
      for (std::size_t j = 0; j < seen; ++j) dot += y[j] * dy[j];
      for (std::size_t j = 0; j < seen; ++j) dx[j] = y[j] * (dy[j] - dot);
      std::fill(dx + seen, dx + n, T(0));
    }
  }
};

} // namespace tandem::backend::host
