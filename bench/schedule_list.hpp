// SPDX-License-Identifier: Apache-2.0
// The schedules bench_host_bubble measures and bench_schedule_picture draws, and the networks they
// run on: one list, so that a new schedule joins both programs with one line.
#pragma once

#include <cstddef>
#include <tuple>
#include <vector>

#include <tandem/tandem.hpp>

namespace bench {

using namespace tandem;

// A schedule with micro-batches, its name, and how many stages each device holds (1; 2 for a
// schedule that interleaves virtual stages, Stage<Device<0>>, Stage<Device<1>>, Stage<Device<0>>, ...).
template <class S, std::size_t StagesPerDevice = 1> struct Named {
  using type = S;
  static constexpr std::size_t stages_per_device = StagesPerDevice;
  const char *name;
  S make(std::size_t m) const { return S{.micro_batches = m}; }
};

// Every schedule with micro-batches, in the order of the tables. Naive, the baseline, is not listed.
inline constexpr std::tuple schedules{Named<schedule::GPipe>{"GPipe"}, Named<schedule::OneFOneB>{"1F1B"},
                                      Named<schedule::ZeroBubbleH1>{"ZB-H1"},
                                      Named<schedule::Interleaved1F1B, 2>{"Interleaved1F1B"}};

// Eight layers of Linear<width, width> + ReLU split evenly over n * v stages, stage i on
// Device<i % n>. Batch 1024 at width 512: a stage's task of one micro-batch takes milliseconds on
// a host core even at m = 16, so hand-offs (tens of microseconds) are a small part of it.
constexpr std::size_t width = 512, batch = 1024;
using L = Linear<width, width>;
template <std::size_t D> using Eighth = Stage<Device<D>, L, ReLU>;
template <std::size_t D> using Quarter = Stage<Device<D>, L, ReLU, L, ReLU>;
template <std::size_t D> using Half = Stage<Device<D>, L, ReLU, L, ReLU, L, ReLU, L, ReLU>;

template <std::size_t Devices, std::size_t StagesPerDevice> struct NetOf;
template <> struct NetOf<2, 1> { using type = Pipeline<Half<0>, Half<1>>; };
template <> struct NetOf<4, 1> { using type = Pipeline<Quarter<0>, Quarter<1>, Quarter<2>, Quarter<3>>; };
template <> struct NetOf<2, 2> { using type = Pipeline<Quarter<0>, Quarter<1>, Quarter<0>, Quarter<1>>; };
template <> struct NetOf<4, 2> {
  using type = Pipeline<Eighth<0>, Eighth<1>, Eighth<2>, Eighth<3>, Eighth<0>, Eighth<1>, Eighth<2>, Eighth<3>>;
};
template <std::size_t Devices, std::size_t StagesPerDevice> using Net = typename NetOf<Devices, StagesPerDevice>::type;

// n deterministic values in [-scale, scale].
inline std::vector<float> filled(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(int(i * 7919 % 201) - 100) / 100.0f;
  return v;
}

} // namespace bench
