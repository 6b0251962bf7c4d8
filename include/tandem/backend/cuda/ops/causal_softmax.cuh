// SPDX-License-Identifier: Apache-2.0
// op::CausalSoftmax / CausalSoftmaxBackward on a GPU: one warp per row, its lanes striding along
// the row, with warp shuffles for the row's max and sums (cross_entropy's pattern).
#pragma once

#include <cstddef>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/causal_softmax.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// The max is subtracted before exp, as on the host, so no exponent overflows. In place (y == x) is
// safe: the max and the sum only read, and the last pass has each lane read x[j] before writing
// y[j] at the same place; the shuffles order the passes within the warp.
template <class T> __global__ void causal_softmax(std::size_t rows, std::size_t n, const T *x, T *y) {
  const unsigned lane = threadIdx.x % 32;
  const std::size_t stride = std::size_t(gridDim.x) * warps;
  for (std::size_t r = std::size_t(blockIdx.x) * warps + threadIdx.x / 32; r < rows; r += stride) {
    const std::size_t seen = r % n + 1; // positions 0..t
    const T *in = x + r * n;
    T *out = y + r * n;
    T top = in[0];
    for (std::size_t j = lane; j < seen; j += 32) top = in[j] > top ? in[j] : top;
    top = math::warp_max(top);
    T sum = 0;
    for (std::size_t j = lane; j < seen; j += 32) sum += math::exp(in[j] - top);
    const T inv = T(1) / math::warp_sum(sum);
    for (std::size_t j = lane; j < n; j += 32) out[j] = j < seen ? math::exp(in[j] - top) * inv : T(0);
  }
}

// dx = y * (dy - sum_j y_j dy_j) over the seen positions, 0 past them. dx may be dy: each lane
// reads dy[j] before writing dx[j] at the same place, after the warp's sum.
template <class T>
__global__ void causal_softmax_backward(std::size_t rows, std::size_t n, const T *y, const T *dy, T *dx) {
  const unsigned lane = threadIdx.x % 32;
  const std::size_t stride = std::size_t(gridDim.x) * warps;
  for (std::size_t r = std::size_t(blockIdx.x) * warps + threadIdx.x / 32; r < rows; r += stride) {
    const std::size_t seen = r % n + 1;
    const T *yr = y + r * n, *dyr = dy + r * n;
    T *out = dx + r * n;
    T dot = 0;
    for (std::size_t j = lane; j < seen; j += 32) dot += yr[j] * dyr[j];
    dot = math::warp_sum(dot);
    for (std::size_t j = lane; j < n; j += 32) out[j] = j < seen ? yr[j] * (dyr[j] - dot) : T(0);
  }
}
} // namespace kernels

template <class T> struct Kernel<op::CausalSoftmax<T>> {
  static void run(const op::CausalSoftmax<T> &s, const kernels::Launch &l) {
    if (s.rows == 0 || s.seq_len == 0) return;
    kernels::causal_softmax<<<kernels::blocks_for(s.rows, kernels::warps), kernels::threads, 0, l.stream>>>(
        s.rows, s.seq_len, s.x, s.y);
    kernels::check_launch("causal_softmax", l);
  }
};

template <class T> struct Kernel<op::CausalSoftmaxBackward<T>> {
  static void run(const op::CausalSoftmaxBackward<T> &s, const kernels::Launch &l) {
    if (s.rows == 0 || s.seq_len == 0) return;
    kernels::causal_softmax_backward<<<kernels::blocks_for(s.rows, kernels::warps), kernels::threads, 0, l.stream>>>(
        s.rows, s.seq_len, s.y, s.dy, s.dx);
    kernels::check_launch("causal_softmax_backward", l);
  }
};

} // namespace tandem::backend::cuda
