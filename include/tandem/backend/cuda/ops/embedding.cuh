// SPDX-License-Identifier: Apache-2.0
// op::EmbeddingForward / EmbeddingBackward on a GPU. The backward adds without atomics, each
// weight row's gradient in row order as on the host: the same bits on both, every run.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/ops/embedding.hpp"

namespace tandem::backend::cuda {

namespace kernels {
template <class T> struct EmbeddingGather {
  std::size_t width;
  const std::int32_t *ids;
  const T *weight;
  T *y;
  __device__ void operator()(std::size_t i) const {
    y[i] = weight[static_cast<std::size_t>(ids[i / width]) * width + i % width];
  }
};

// dweight[ids[r]] += dy[r], r in order. A thread owns one column of the weight rows in its block's
// share of the vocabulary (ids[r] % gridDim.y == blockIdx.y) and walks every row, so each sum has
// one owner adding in row order. The id is the same across a block: no divergence.
template <class T>
__global__ void embedding_scatter(std::size_t rows, std::size_t width, const std::int32_t *ids, const T *dy,
                                  T *dweight) {
  const std::size_t col = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= width) return;
  for (std::size_t r = 0; r < rows; ++r) {
    const auto id = static_cast<std::size_t>(ids[r]);
    if (id % gridDim.y == blockIdx.y) dweight[id * width + col] += dy[r * width + col];
  }
}
} // namespace kernels

template <class T> struct Kernel<op::EmbeddingForward<T>> {
  static void run(const op::EmbeddingForward<T> &f, const kernels::Launch &l) {
    kernels::launch_each(f.rows * f.width, kernels::EmbeddingGather<T>{f.width, f.ids, f.weight, f.y},
                         "EmbeddingForward", l);
  }
};

template <class T> struct Kernel<op::EmbeddingBackward<T>> {
  static void run(const op::EmbeddingBackward<T> &b, const kernels::Launch &l) {
    if (b.width == 0) return;
    // Zero, then add: the host's order too (0 + dy[r] is dy[r]), so the sums match bit for bit.
    if (!b.accumulate && b.vocab > 0)
      check(cudaMemsetAsync(b.dweight, 0, b.vocab * b.width * sizeof(T), l.stream), "cudaMemsetAsync", l.site);
    if (b.rows == 0 || b.vocab == 0) return;
    // Column blocks across, vocabulary shares down, up to max_blocks blocks in all: every share
    // reads all the ids (a few kilobytes, from cache), each dy row is read by one share.
    const unsigned across = static_cast<unsigned>((b.width + kernels::threads - 1) / kernels::threads);
    const unsigned down = static_cast<unsigned>(
        std::clamp<std::size_t>(kernels::max_blocks / std::max(across, 1u), 1, std::min<std::size_t>(b.vocab, 65535)));
    kernels::embedding_scatter<<<dim3(across, down), kernels::threads, 0, l.stream>>>(b.rows, b.width, b.ids, b.dy,
                                                                                      b.dweight);
    kernels::check_launch("embedding_scatter", l);
  }
};

} // namespace tandem::backend::cuda
