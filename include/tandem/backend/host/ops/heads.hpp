// SPDX-License-Identifier: Apache-2.0
// op::SplitHeads / MergeHeads on the host.
#pragma once

#include <algorithm>
#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/heads.hpp"

namespace tandem::backend::host {

namespace detail {
// Calls f(row_offset, block_offset) for each head_dim-long run the two layouts share.
template <class Op, class F> void for_each_head_run(const Op &o, F &&f) {
  const std::size_t width = o.parts * o.heads * o.head_dim, block = o.seqs * o.heads * o.seq_len * o.head_dim;
  for (std::size_t p = 0; p < o.parts; ++p)
    for (std::size_t b = 0; b < o.seqs; ++b)
      for (std::size_t h = 0; h < o.heads; ++h)
        for (std::size_t t = 0; t < o.seq_len; ++t)
          f((b * o.seq_len + t) * width + (p * o.heads + h) * o.head_dim,
            p * block + ((b * o.heads + h) * o.seq_len + t) * o.head_dim);
}
} // namespace detail

template <class T> struct Kernel<op::SplitHeads<T>> {
  static void run(const op::SplitHeads<T> &s) {
    detail::for_each_head_run(
        s, [&](std::size_t row, std::size_t at) { std::copy(s.x + row, s.x + row + s.head_dim, s.y + at); });
  }
};

template <class T> struct Kernel<op::MergeHeads<T>> {
  static void run(const op::MergeHeads<T> &m) {
    detail::for_each_head_run(
        m, [&](std::size_t row, std::size_t at) { std::copy(m.x + at, m.x + at + m.head_dim, m.y + row); });
  }
};

} // namespace tandem::backend::host
