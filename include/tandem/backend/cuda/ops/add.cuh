// SPDX-License-Identifier: Apache-2.0
// op::Add on a GPU.
#pragma once

#include <cstddef>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/add.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// Each element reads only its own place in a and b before writing y's, so y may be either.
template <class T> struct AddFn {
  const T *a, *b;
  T *y;
  __device__ void operator()(std::size_t i) const { y[i] = a[i] + b[i]; }
};
} // namespace kernels

template <class T> struct Kernel<op::Add<T>> {
  static void run(const op::Add<T> &s, const kernels::Launch &l) {
    kernels::launch_each(s.n, kernels::AddFn<T>{s.a, s.b, s.y}, "Add", l);
  }
};

} // namespace tandem::backend::cuda
