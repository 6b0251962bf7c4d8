// SPDX-License-Identifier: Apache-2.0
// The Schedule concept: how a step splits its batch and in which order each stage, or each device,
// works.
#pragma once

#include <concepts>
#include <cstddef>
#include <vector>

namespace tandem::schedule {

// One unit of a stage's work on one micro-batch: its forward, and its backward either whole or
// split in two. backward_input computes the input's gradient (which the stage before waits for)
// and the whole backward of layers that cannot split; backward_weights the parameters' gradients
// of the layers that can (SplitBackward), which nothing waits for until the update. A split
// micro-batch runs backward_input, then backward_weights, on its stage.
struct Task {
  enum Kind { forward, backward, backward_input, backward_weights } kind;
  std::size_t micro_batch;
  // The stage it runs on. A stage's own order (StageSchedule) may leave it 0: the pipeline fills
  // it in; a device's order (DeviceSchedule) names it.
  std::size_t stage = 0;
  friend bool operator==(const Task &, const Task &) = default;
};

// A schedule says how many micro-batches a step has, and the order of the tasks, in one of two
// forms. The pipeline issues the lists as far as the dependencies between stages allow, so the
// lists alone decide which stages can overlap and how many activations each one holds.
//   count(batch): the micro-batches of a step of `batch` samples;
// and either
//   order(stage, stages, m): each stage's own list (StageSchedule); stages that share a device
//     have theirs issued there in an order the pipeline picks;
// or
//   device_order(d, D, v, m): each device's one list, for a network whose stages cycle through
//     D devices, v stages each (stage s on the cycle's device s % D): which stage works next on
//     device d (DeviceSchedule). Interleaved stages need this.
template <class S>
concept StageSchedule = requires(const S &s, std::size_t n) {
  { s.count(n) } -> std::convertible_to<std::size_t>;
  { s.order(n, n, n) } -> std::convertible_to<std::vector<Task>>;
};
template <class S>
concept DeviceSchedule = requires(const S &s, std::size_t n) {
  { s.count(n) } -> std::convertible_to<std::size_t>;
  { s.device_order(n, n, n, n) } -> std::convertible_to<std::vector<Task>>;
};
template <class S>
concept Schedule = StageSchedule<S> || DeviceSchedule<S>;

namespace detail {
constexpr std::vector<Task> all_forward_then_backward(std::size_t m) {
  std::vector<Task> tasks;
  for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::forward, k});
  for (std::size_t k = m; k-- > 0;) tasks.push_back({Task::backward, k});
  return tasks;
}
} // namespace detail

} // namespace tandem::schedule
