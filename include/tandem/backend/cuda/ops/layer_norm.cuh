// SPDX-License-Identifier: Apache-2.0
// op::LayerNormForward / LayerNormBackward on a GPU: one warp per row, its lanes striding along
// the row, with warp shuffles for the row's sums. A row's statistics are computed in T: in float
// registers and shuffles for float (the host sums in double; at widths 100 to 4096 a CPU emulation
// of this order puts mean and rstd within 2e-7 of the host's), in double for double. The weight
// and bias gradients are column sums in double, as on the host, by a second kernel without
// atomics: the same bits every run.
#pragma once

#include <cstddef>

#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/layer_norm.hpp"

namespace tandem::backend::cuda {

namespace kernels {
// The mean and the biased variance in two passes over the row (x is re-read from cache): no
// cancellation of a one-pass sum of squares.
template <class T> __global__ void layer_norm_forward(op::LayerNormForward<T> f) {
  const unsigned lane = threadIdx.x % 32;
  const std::size_t n = f.width, stride = std::size_t(gridDim.x) * warps;
  for (std::size_t r = std::size_t(blockIdx.x) * warps + threadIdx.x / 32; r < f.rows; r += stride) {
    const T *x = f.x + r * n;
    T *y = f.y + r * n;
    T sum = 0;
    for (std::size_t i = lane; i < n; i += 32) sum += x[i];
    const T mean = math::warp_sum(sum) / T(n);
    T squares = 0;
    for (std::size_t i = lane; i < n; i += 32) squares += (x[i] - mean) * (x[i] - mean);
    const T rstd = T(1) / math::sqrt(math::warp_sum(squares) / T(n) + T(f.eps));
    for (std::size_t i = lane; i < n; i += 32) y[i] = (x[i] - mean) * rstd * f.weight[i] + f.bias[i];
    if (lane == 0) f.mean[r] = mean, f.rstd[r] = rstd;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight, xhat = (x - mean) * rstd.
template <class T> __global__ void layer_norm_dx(op::LayerNormBackward<T> b) {
  const unsigned lane = threadIdx.x % 32;
  const std::size_t n = b.width, stride = std::size_t(gridDim.x) * warps;
  for (std::size_t r = std::size_t(blockIdx.x) * warps + threadIdx.x / 32; r < b.rows; r += stride) {
    const T *x = b.x + r * n, *dy = b.dy + r * n;
    T *dx = b.dx + r * n;
    const T mean = b.mean[r], rstd = b.rstd[r];
    T g_sum = 0, gx_sum = 0;
    for (std::size_t i = lane; i < n; i += 32) {
      const T g = dy[i] * b.weight[i];
      g_sum += g;
      gx_sum += g * ((x[i] - mean) * rstd);
    }
    const T g_mean = math::warp_sum(g_sum) / T(n), gx_mean = math::warp_sum(gx_sum) / T(n);
    for (std::size_t i = lane; i < n; i += 32)
      dx[i] = rstd * (dy[i] * b.weight[i] - g_mean - (x[i] - mean) * rstd * gx_mean);
  }
}

// dweight (+)= the column sums of dy * xhat, dbias (+)= those of dy, in double with one rounding
// to T, as the host adds them. column_sum_add's shape: a block takes 32 columns, its 16 thread
// rows stride down the rows (coalesced reads along a row), then add up in a fixed order.
template <class T> __global__ void layer_norm_params(op::LayerNormBackward<T> b) {
  __shared__ double weight_part[16][33], bias_part[16][33]; // 33: no bank conflicts on the sum below
  const std::size_t col = std::size_t(blockIdx.x) * 32 + threadIdx.x;
  double dw = 0, db = 0;
  if (col < b.width)
    for (std::size_t r = threadIdx.y; r < b.rows; r += 16) {
      const double dy = b.dy[r * b.width + col];
      dw += dy * ((double(b.x[r * b.width + col]) - double(b.mean[r])) * double(b.rstd[r]));
      db += dy;
    }
  weight_part[threadIdx.y][threadIdx.x] = dw;
  bias_part[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y != 0 || col >= b.width) return;
  dw = 0, db = 0;
  for (int j = 0; j < 16; ++j) dw += weight_part[j][threadIdx.x], db += bias_part[j][threadIdx.x];
  b.dweight[col] = static_cast<T>(b.accumulate ? double(b.dweight[col]) + dw : dw);
  b.dbias[col] = static_cast<T>(b.accumulate ? double(b.dbias[col]) + db : db);
}
} // namespace kernels

template <class T> struct Kernel<op::LayerNormForward<T>> {
  static void run(const op::LayerNormForward<T> &f, const kernels::Launch &l) {
    if (f.rows == 0 || f.width == 0) return;
    kernels::layer_norm_forward<<<kernels::blocks_for(f.rows, kernels::warps), kernels::threads, 0, l.stream>>>(f);
    kernels::check_launch("layer_norm_forward", l);
  }
};

template <class T> struct Kernel<op::LayerNormBackward<T>> {
  static void run(const op::LayerNormBackward<T> &b, const kernels::Launch &l) {
    if (b.width == 0) return;
    if (b.dx && b.rows > 0) {
      kernels::layer_norm_dx<<<kernels::blocks_for(b.rows, kernels::warps), kernels::threads, 0, l.stream>>>(b);
      kernels::check_launch("layer_norm_dx", l);
    }
    // (With no rows, the gradients are still set to zero or kept, as on the host.)
    kernels::layer_norm_params<<<static_cast<unsigned>((b.width + 31) / 32), dim3(32, 16), 0, l.stream>>>(b);
    kernels::check_launch("layer_norm_params", l);
  }
};

} // namespace tandem::backend::cuda
