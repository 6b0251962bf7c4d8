// SPDX-License-Identifier: Apache-2.0
// The seed's cost model: a training step's time per schedule, predicted from a network type's
// per-stage costs (layer_cost), its boundary widths and a few constants of the machine.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>

#include "tandem/layers/layer.hpp"
#include "tandem/schedule/gpipe.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/schedule/one_f_one_b.hpp"

namespace tandem {

// What the model needs to know of a machine, each measured once (bench/host_cost_model prints
// them for the host).
struct CostConstants {
  // Multiply-adds per second of one device on a whole batch's products.
  double multiply_adds_per_second = 0;
  // Bytes per second across a boundary; 0: copies cost nothing.
  double link_bytes_per_second = 0;
  // What one stage spends on one micro-batch beyond its arithmetic: issuing its forward and
  // backward tasks and waking the stage that waits for them.
  double task_seconds = 0;
  // Stages that can compute at once (on the host, the cores free to this process: on a machine
  // shared with other work, a fraction of the cores; a GPU per device: all); 0: all. Counted
  // as at least 1 and at most the stages.
  double concurrent_stages = 0;
};

struct StepPrediction {
  std::size_t stages = 0, micro_batches = 0;
  double seconds = 0;      // the step
  double slot_seconds = 0; // the costliest stage's work on one micro-batch (its slot)
  double bubble = 0;       // (n - 1) / (m + n - 1): the share of slots a stage waits through
  // The seed's C: each boundary's values forward and gradients backward, sum s_i * rows * 2 * sizeof(T).
  std::size_t boundary_bytes = 0;
};

namespace detail {
template <class St, std::size_t... J> constexpr std::size_t stage_cost(std::size_t in, std::index_sequence<J...>) {
  const auto w = St::widths(in);
  return (std::size_t{0} + ... + layer_cost<typename St::template layer<J>>(w[J]));
}
} // namespace detail

// Multiply-adds per row of each stage of Net (the sum of layer_cost over its layers at their widths).
template <class Net> constexpr std::array<std::size_t, Net::num_stages> stage_costs() {
  return []<std::size_t... S>(std::index_sequence<S...>) {
    return std::array<std::size_t, Net::num_stages>{detail::stage_cost<typename Net::template stage<S>>(
        Net::template stage_in_features<S>, std::make_index_sequence<Net::template stage<S>::num_layers>{})...};
  }
  (std::make_index_sequence<Net::num_stages>{});
}

namespace detail {

// The step of Net with `batch` samples in m micro-batches, each stage's slot its arithmetic on the
// largest micro-batch, its task cost, and the copy of its input boundary (values in, gradients out).
// A pipelined step of identical micro-batches through stages of slot t_s takes
// sum_s t_s + (m - 1) max_s t_s: every stage once while the pipeline fills and drains, then the
// slowest stage once per further micro-batch (the seed's (m + n - 1) slots where the stages are
// equal; m = 1 is Naive). Where fewer stages than n can compute at once, the step takes at least
// all the work divided among those that can.
template <class Net> constexpr StepPrediction predict(std::size_t batch, std::size_t m, const CostConstants &k) {
  constexpr std::size_t n = Net::num_stages;
  constexpr auto costs = stage_costs<Net>();
  constexpr auto widths = []<std::size_t... S>(std::index_sequence<S...>) {
    return std::array<std::size_t, n>{Net::template stage_in_features<S>...};
  }
  (std::make_index_sequence<n>{});
  m = std::clamp<std::size_t>(m, 1, batch ? batch : 1);
  const std::size_t rows = (batch + m - 1) / m * Net::sequence_length; // the largest micro-batch
  StepPrediction p{.stages = n, .micro_batches = m};
  p.boundary_bytes = Net::boundary_bytes(batch);
  p.bubble = double(n - 1) / double(m + n - 1);
  double sum = 0;
  for (std::size_t s = 0; s < n; ++s) {
    double t = k.multiply_adds_per_second > 0 ? double(costs[s]) * double(rows) / k.multiply_adds_per_second : 0;
    t += k.task_seconds;
    if (s > 0 && k.link_bytes_per_second > 0)
      t += double(widths[s]) * double(rows) * 2 * double(sizeof(typename Net::value_type)) / k.link_bytes_per_second;
    sum += t;
    p.slot_seconds = std::max(p.slot_seconds, t);
  }
  p.seconds = sum + double(m - 1) * p.slot_seconds;
  const double at_once = k.concurrent_stages > 0 ? std::clamp(k.concurrent_stages, 1.0, double(n)) : double(n);
  p.seconds = std::max(p.seconds, double(m) * sum / at_once);
  return p;
}

} // namespace detail

// The predicted step of each schedule: Naive is one micro-batch; GPipe and 1F1B have the same
// slots (1F1B changes when activations are freed, not how long the pipeline idles).
template <class Net>
constexpr StepPrediction predict_step(std::size_t batch, const schedule::Naive &, const CostConstants &k) {
  return detail::predict<Net>(batch, 1, k);
}
template <class Net>
constexpr StepPrediction predict_step(std::size_t batch, const schedule::GPipe &s, const CostConstants &k) {
  return detail::predict<Net>(batch, s.micro_batches, k);
}
template <class Net>
constexpr StepPrediction predict_step(std::size_t batch, const schedule::OneFOneB &s, const CostConstants &k) {
  return detail::predict<Net>(batch, s.micro_batches, k);
}

// The micro-batch count (1..batch) whose predicted GPipe or 1F1B step is the shortest: more
// micro-batches shrink the bubble, and each one adds its task cost to every stage. The smallest
// such count where several tie.
template <class Net> constexpr std::size_t best_micro_batches(std::size_t batch, const CostConstants &k) {
  std::size_t best = 1;
  double shortest = detail::predict<Net>(batch, 1, k).seconds;
  for (std::size_t m = 2; m <= batch; ++m)
    if (const double t = detail::predict<Net>(batch, m, k).seconds; t < shortest) shortest = t, best = m;
  return best;
}

} // namespace tandem
