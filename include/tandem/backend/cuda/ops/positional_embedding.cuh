// SPDX-License-Identifier: Apache-2.0
// op::PositionalForward / PositionalBackward on a GPU. The backward adds without atomics: one thread
// per table value walks the rows at its position in order, as the host adds them, so both give
// the same bits every run.
#pragma once

#include <cstddef>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/positional_embedding.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// Row r's value i meets table value (r % seq_len) * width + i, which is the flat index modulo
// seq_len * width. Each element reads only its own place in x: y may be x.
template <class T> struct PositionalAdd {
  std::size_t table;
  const T *x, *weight;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = x[i] + weight[i % table]; }
};

// dweight[j] (+)= dy[j + k * table] for k = 0, 1, ...: the rows at j's position, in order.
template <class T> struct PositionalSum {
  std::size_t table, total; // seq_len * width, rows * width
  const T *dy;
  T *dweight;
  bool accumulate;
  __device__ void operator()(std::size_t j) const {
    T sum = accumulate ? dweight[j] : T(0);
    for (std::size_t k = j; k < total; k += table) sum += dy[k];
    dweight[j] = sum;
  }
};
} // namespace kernels

template <class T> struct Kernel<op::PositionalForward<T>> {
  static void run(const op::PositionalForward<T> &f, const kernels::Launch &l) {
    if (f.seq_len == 0 || f.width == 0) return;
    kernels::launch_each(f.rows * f.width, kernels::PositionalAdd<T>{f.seq_len * f.width, f.x, f.weight, f.y},
                         "PositionalForward", l);
  }
};

template <class T> struct Kernel<op::PositionalBackward<T>> {
  static void run(const op::PositionalBackward<T> &b, const kernels::Launch &l) {
    const std::size_t table = b.seq_len * b.width;
    kernels::launch_each(table, kernels::PositionalSum<T>{table, b.rows * b.width, b.dy, b.dweight, b.accumulate},
                         "PositionalBackward", l);
    if (b.dx && b.dx != b.dy && b.rows * b.width > 0)
      check(cudaMemcpyAsync(b.dx, b.dy, b.rows * b.width * sizeof(T), cudaMemcpyDeviceToDevice, l.stream),
            "cudaMemcpyAsync (PositionalBackward dx)", l.site);
  }
};

} // namespace tandem::backend::cuda
