// SPDX-License-Identifier: Apache-2.0
// op::Dropout: elementwise y = x * keep / (1 - p), the mask a pure function of a key and each
// element's place, so it is the same under every schedule, rank count and backend, and a
// recomputed forward or the backward finds it again without keeping it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tandem/backend/host_device.hpp"

namespace tandem::backend::op {

// splitmix64's finaliser over (key, element): one draw per element, uniform in [0, 1) from 24
// bits, kept where it is >= p.
TANDEM_HOST_DEVICE inline bool dropout_keeps(std::uint64_t key, std::uint64_t element, float p) {
  std::uint64_t z = key + 0x9E3779B97F4A7C15ull * (element + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f >= p;
}

// Forward (dy, dx of the backward as x, y): y[i] = keeps(key, first + i) ? x[i] * scale : 0, with
// scale = 1 / (1 - p). `first` is the element's place in the whole batch. y may be x.
template <class T> struct Dropout {
  std::size_t n = 0;
  std::uint64_t key = 0, first = 0;
  float p = 0;
  T scale = 1;
  const T *x = nullptr;
  T *y = nullptr;
};

} // namespace tandem::backend::op

#include "tandem/backend/host/ops/dropout.hpp"
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#include "tandem/backend/cuda/ops/dropout.cuh"
#endif
