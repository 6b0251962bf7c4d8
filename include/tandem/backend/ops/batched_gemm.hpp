// SPDX-License-Identifier: Apache-2.0
// op::BatchedGemm: `count` products of equal shape at fixed strides (attention's per-head products).
#pragma once

#include <cstddef>

#include "tandem/backend/ops.hpp"

namespace tandem::backend::op {

// For i in [0, count): C_i = alpha * op(A_i) * op(B_i) + beta * C_i, as Gemm, with
// A_i = a + i * stride_a (likewise B, C). cuBLAS's strided-batched product on a GPU.
template <class T> struct BatchedGemm {
  Gemm<T> gemm{}; // the shape, leading dimensions and first matrices
  std::size_t count = 0, stride_a = 0, stride_b = 0, stride_c = 0;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/batched_gemm.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/batched_gemm.cuh"
#endif
