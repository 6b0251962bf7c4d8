// SPDX-License-Identifier: Apache-2.0
// op::BatchedGemm on the host: one Gemm per matrix, in order.
#pragma once

#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/host/kernels.hpp"
#include "tandem/backend/ops/batched_gemm.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::BatchedGemm<T>> {
  static void run(const op::BatchedGemm<T> &b) {
    op::Gemm<T> g = b.gemm;
    for (std::size_t i = 0; i < b.count; ++i) {
      g.a = b.gemm.a + i * b.stride_a;
      g.b = b.gemm.b + i * b.stride_b;
      g.c = b.gemm.c + i * b.stride_c;
      kernels::run(g);
    }
  }
};

} // namespace tandem::backend::host
