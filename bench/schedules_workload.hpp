// SPDX-License-Identifier: Apache-2.0
// The workload bench_host_schedules times in one process and bench_distributed_schedules across
// ranks, written once so that the two stay the same: two stages of 4 x (Linear 1024 + ReLU),
// batch 1024, a tiny net for the hand-offs, and the helpers both use.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include <tandem/tandem.hpp>

namespace bench {

using namespace tandem;

constexpr std::size_t width = 1024, batch = 1024;
using Half = Stage<Device<0>, Linear<width, width>, ReLU, Linear<width, width>, ReLU, Linear<width, width>, ReLU,
                   Linear<width, width>, ReLU>;
using Net = Pipeline<Half, Stage<Device<1>, Linear<width, width>, ReLU, Linear<width, width>, ReLU,
                                 Linear<width, width>, ReLU, Linear<width, width>, ReLU>>;
// Tiny stages: the step time is almost all hand-offs.
using Tiny = Pipeline<Stage<Device<0>, Linear<16, 16>>, Stage<Device<1>, Linear<16, 16>>>;

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// n deterministic values in [-scale, scale].
inline std::vector<float> filled(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(int(i * 7919 % 201) - 100) / 100.0f;
  return v;
}

} // namespace bench
