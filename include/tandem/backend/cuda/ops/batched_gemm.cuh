// SPDX-License-Identifier: Apache-2.0
// op::BatchedGemm on a GPU: one strided-batched cuBLAS call.
#pragma once

#include <cstddef>
#include <type_traits>

#include <cublas_v2.h>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/batched_gemm.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// As kernels::gemm: fp32 and tf32 (the handle's math mode) are cublasSgemmStridedBatched, bf16 is
// cublasGemmStridedBatchedEx on the same float32 data with a compute type that rounds to bfloat16.
inline cublasStatus_t gemm_batched(cublasHandle_t h, Precision p, cublasOperation_t ta, cublasOperation_t tb, int m,
                                   int n, int k, const float *alpha, const float *a, int lda, long long stride_a,
                                   const float *b, int ldb, long long stride_b, const float *beta, float *c, int ldc,
                                   long long stride_c, int count) {
  if (p == Precision::bf16)
    return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, stride_a, b, CUDA_R_32F, ldb,
                                      stride_b, beta, c, CUDA_R_32F, ldc, stride_c, count, CUBLAS_COMPUTE_32F_FAST_16BF,
                                      CUBLAS_GEMM_DEFAULT);
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                                   stride_c, count);
}
inline cublasStatus_t gemm_batched(cublasHandle_t h, Precision, cublasOperation_t ta, cublasOperation_t tb, int m,
                                   int n, int k, const double *alpha, const double *a, int lda, long long stride_a,
                                   const double *b, int ldb, long long stride_b, const double *beta, double *c, int ldc,
                                   long long stride_c, int count) {
  return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                                   stride_c, count);
}
} // namespace kernels

template <class T> struct Kernel<op::BatchedGemm<T>> {
  static void run(const op::BatchedGemm<T> &b, const kernels::Launch &l) {
    const op::Gemm<T> &g = b.gemm;
    if (b.count == 0 || g.m == 0 || g.n == 0) return;
    if (g.k == 0) { // C_i = beta * C_i: Gemm's own empty-product path, matrix by matrix
      op::Gemm<T> one = g;
      for (std::size_t i = 0; i < b.count; ++i) {
        one.c = g.c + i * b.stride_c;
        kernels::run(one, l);
      }
      return;
    }
    // Row-major to column-major as kernels::run(Gemm) does: C_i^T = op(B_i)^T op(A_i)^T, B first
    // and m and n swapped; the strides are the same under either reading.
    const auto op_of = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
    // (cuBLAS's strides are 64-bit: any size_t of device memory fits.)
    const auto stride = [](std::size_t s) { return static_cast<long long>(s); };
    check(kernels::gemm_batched(l.blas, l.precision, op_of(g.trans_b), op_of(g.trans_a), kernels::as_int(g.n, "n", l),
                                kernels::as_int(g.m, "m", l), kernels::as_int(g.k, "k", l), &g.alpha, g.b,
                                kernels::as_int(g.ldb, "ldb", l), stride(b.stride_b), g.a,
                                kernels::as_int(g.lda, "lda", l), stride(b.stride_a), &g.beta, g.c,
                                kernels::as_int(g.ldc, "ldc", l), stride(b.stride_c),
                                kernels::as_int(b.count, "count", l)),
          !std::is_same_v<T, float>        ? "cublasDgemmStridedBatched"
          : l.precision == Precision::bf16 ? "cublasGemmStridedBatchedEx"
                                           : "cublasSgemmStridedBatched",
          l.site);
  }
};

} // namespace tandem::backend::cuda
