// SPDX-License-Identifier: Apache-2.0
// op::Add: y = a + b elementwise (a residual connection, and its gradient's two paths).
#pragma once

#include <cstddef>

namespace tandem::backend::op {

// y may be a or b.
template <class T> struct Add {
  std::size_t n = 0;
  const T *a = nullptr, *b = nullptr;
  T *y = nullptr;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/add.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/add.cuh"
#endif
