// SPDX-License-Identifier: Apache-2.0
// op::Dropout on a GPU: the host's mask (op::dropout_keeps runs on both), so the same elements drop.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/dropout.hpp"

namespace tandem::backend::cuda {

namespace kernels {
template <class T> struct DropoutFn {
  std::uint64_t key, first;
  float p;
  T scale;
  const T *x;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = op::dropout_keeps(key, first + i, p) ? x[i] * scale : T(0); }
};
} // namespace kernels

template <class T> struct Kernel<op::Dropout<T>> {
  static void run(const op::Dropout<T> &d, const kernels::Launch &l) {
    kernels::launch_each(d.n, kernels::DropoutFn<T>{d.key, d.first, d.p, d.scale, d.x, d.y}, "Dropout", l);
  }
};

} // namespace tandem::backend::cuda
