// SPDX-License-Identifier: Apache-2.0
// The Schedule concept: how a step splits its batch and in which order each stage works.
#pragma once

#include <concepts>
#include <cstddef>
#include <vector>

namespace tandem::schedule {

// One unit of a stage's work: the forward or backward pass of one micro-batch.
struct Task {
  enum Kind { forward, backward } kind;
  std::size_t micro_batch;
  friend bool operator==(const Task &, const Task &) = default;
};

// A schedule says how many micro-batches a step has and, for each stage, the order of its tasks.
// The pipeline issues every stage's list as far as the cross-stage dependencies allow, so the
// lists alone decide which stages can overlap and how many activations each one holds.
template <class S>
concept Schedule = requires(const S &s, std::size_t n) {
  { s.count(n) } -> std::convertible_to<std::size_t>;
  { s.order(n, n, n) } -> std::convertible_to<std::vector<Task>>;
};

namespace detail {
constexpr std::vector<Task> all_forward_then_backward(std::size_t m) {
  std::vector<Task> tasks;
  for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::forward, k});
  for (std::size_t k = m; k-- > 0;) tasks.push_back({Task::backward, k});
  return tasks;
}
} // namespace detail

} // namespace tandem::schedule
