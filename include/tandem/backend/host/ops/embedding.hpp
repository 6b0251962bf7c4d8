// SPDX-License-Identifier: Apache-2.0
// op::EmbeddingForward / EmbeddingBackward on the host.
#pragma once

#include <algorithm>
#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/embedding.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::EmbeddingForward<T>> {
  static void run(const op::EmbeddingForward<T> &f) {
    for (std::size_t r = 0; r < f.rows; ++r) {
      const T *row = f.weight + static_cast<std::size_t>(f.ids[r]) * f.width;
      std::copy(row, row + f.width, f.y + r * f.width);
    }
  }
};

template <class T> struct Kernel<op::EmbeddingBackward<T>> {
  static void run(const op::EmbeddingBackward<T> &b) {
    if (!b.accumulate) std::fill(b.dweight, b.dweight + b.vocab * b.width, T(0));
    for (std::size_t r = 0; r < b.rows; ++r) {
      T *row = b.dweight + static_cast<std::size_t>(b.ids[r]) * b.width;
      const T *dy = b.dy + r * b.width;
      for (std::size_t i = 0; i < b.width; ++i) row[i] += dy[i];
    }
  }
};

} // namespace tandem::backend::host
