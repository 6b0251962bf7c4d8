// SPDX-License-Identifier: Apache-2.0
// The step plan's pure functions (pipeline/plan.hpp), without a network or a device: splitting a
// batch, checking and walking task lists, and giving micro-batches stash entries.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <random>
#include <vector>

#include <tandem/pipeline/plan.hpp>
#include <tandem/schedule/gpipe.hpp>
#include <tandem/schedule/one_f_one_b.hpp>

using tandem::Error;
using tandem::detail::TaskOrders;
using tandem::schedule::Task;

namespace {

template <class Sched> TaskOrders orders_of(const Sched &sched, std::size_t stages, std::size_t m) {
  TaskOrders orders(stages);
  for (std::size_t s = 0; s < stages; ++s) orders[s] = sched.order(s, stages, m);
  return orders;
}

// Walks `orders` and checks that each task comes once, in its stage's order, after what it needs.
void check_walk(const TaskOrders &orders, std::size_t m) {
  const std::size_t S = orders.size();
  std::vector<std::vector<int>> fwd(S, std::vector<int>(m, -1)), bwd = fwd;
  std::vector<std::size_t> next(S, 0);
  int clock = 0;
  const std::size_t result = tandem::detail::walk(orders, m, [&](std::size_t s, Task t) {
    REQUIRE(next[s] < orders[s].size());
    CHECK(orders[s][next[s]] == t);
    ++next[s];
    auto &when = t.kind == Task::forward ? fwd[s][t.micro_batch] : bwd[s][t.micro_batch];
    CHECK(when == -1);
    when = clock++;
  });
  CHECK(result == S);
  // Inference lists have no backward tasks.
  const bool training =
      std::any_of(orders.front().begin(), orders.front().end(), [](const Task &t) { return t.kind == Task::backward; });
  for (std::size_t s = 0; s < S; ++s) {
    CHECK(next[s] == orders[s].size());
    for (std::size_t k = 0; k < m; ++k) {
      if (s > 0) CHECK(fwd[s - 1][k] < fwd[s][k]);
      if (!training) CHECK(bwd[s][k] == -1);
      else if (s + 1 < S) CHECK(bwd[s + 1][k] < bwd[s][k]);
      else CHECK(fwd[s][k] < bwd[s][k]);
    }
  }
}

// The most micro-batches alive at once in one stage's order, and that live ones never share an entry.
std::size_t check_stash(const std::vector<Task> &order, std::size_t m) {
  const auto plan = tandem::detail::assign_stash(order, m);
  const bool training = std::any_of(order.begin(), order.end(), [](const Task &t) { return t.kind == Task::backward; });
  std::vector<int> owner(plan.entries, -1);
  std::size_t live = 0, peak = 0;
  for (const Task &t : order) {
    const std::size_t e = plan.entry[t.micro_batch];
    REQUIRE(e < plan.entries);
    if (t.kind == Task::forward) {
      CHECK(owner[e] == -1);
      owner[e] = static_cast<int>(t.micro_batch);
      peak = std::max(peak, ++live);
      if (!training) owner[e] = -1, --live;
    } else {
      CHECK(owner[e] == static_cast<int>(t.micro_batch));
      owner[e] = -1;
      --live;
    }
  }
  CHECK(plan.entries == peak);
  return plan.entries;
}

} // namespace

TEST_CASE("plan: a batch splits into micro-batches that differ by at most one row, the larger first") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t batch = 1 + rng() % 1000;
    const std::size_t m = 1 + rng() % batch;
    const auto p = tandem::detail::Plan::split(batch, m);
    REQUIRE(p.rows.size() == m);
    std::size_t at = 0;
    for (std::size_t k = 0; k < m; ++k) {
      CHECK(p.offset[k] == at);
      CHECK(p.rows[k] == batch / m + (k < batch % m ? 1 : 0));
      at += p.rows[k];
    }
    CHECK(at == batch);
    CHECK(p.max_rows() == (batch + m - 1) / m);
  }
}

TEST_CASE("plan: walk issues GPipe and 1F1B task lists in dependency order") {
  for (std::size_t S = 1; S <= 5; ++S)
    for (std::size_t m = 1; m <= 8; ++m) {
      check_walk(orders_of(tandem::schedule::GPipe{.micro_batches = m}, S, m), m);
      check_walk(orders_of(tandem::schedule::OneFOneB{.micro_batches = m}, S, m), m);
      check_walk(tandem::detail::forward_orders(S, m), m);
    }
}

TEST_CASE("plan: stash entries are as many as the schedule keeps alive (GPipe m, 1F1B stages - stage)") {
  for (std::size_t S = 1; S <= 5; ++S)
    for (std::size_t m = 1; m <= 8; ++m)
      for (std::size_t s = 0; s < S; ++s) {
        CHECK(check_stash(tandem::schedule::GPipe{.micro_batches = m}.order(s, S, m), m) == m);
        CHECK(check_stash(tandem::schedule::OneFOneB{.micro_batches = m}.order(s, S, m), m) == std::min(S - s, m));
        CHECK(check_stash(tandem::detail::forward_orders(S, m)[s], m) == 1);
      }
}

TEST_CASE("plan: task lists that wait on each other are refused before anything is issued") {
  // Stage 1 wants micro-batch 1 first; stage 0 runs it only after micro-batch 0's backward,
  // which needs stage 1's backward of 0, which comes after stage 1's forward of 1.
  TaskOrders orders{{{Task::forward, 0}, {Task::backward, 0}, {Task::forward, 1}, {Task::backward, 1}},
                    {{Task::forward, 1}, {Task::forward, 0}, {Task::backward, 0}, {Task::backward, 1}}};
  std::size_t visited = 0;
  CHECK(tandem::detail::walk(orders, 2, [&](std::size_t, Task) { ++visited; }) == 0);
  CHECK(visited == 1); // stage 0's first forward, and nothing after it

  struct Deadlocked {
    TaskOrders orders;
    std::size_t count(std::size_t) const { return 2; }
    std::vector<Task> order(std::size_t s, std::size_t, std::size_t) const { return orders[s]; }
  };
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(Deadlocked{orders}, 2, 2),
                       doctest::Contains("task order of stage 0 cannot be issued"), Error);
}

TEST_CASE("plan: a task list must run each micro-batch's forward, then its backward, once") {
  using tandem::detail::check_order;
  CHECK_NOTHROW(check_order({{Task::forward, 0}, {Task::forward, 1}, {Task::backward, 1}, {Task::backward, 0}}, 0, 2));
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 2}, {Task::backward, 2}}, 1, 2),
                       doctest::Contains("stage 1 lists micro-batch 2 of 2"), Error);
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 0}, {Task::forward, 0}, {Task::backward, 0}}, 0, 1),
                       doctest::Contains("twice or out of order"), Error);
  CHECK_THROWS_WITH_AS(check_order({{Task::backward, 0}, {Task::forward, 0}}, 0, 1),
                       doctest::Contains("twice or out of order"), Error);
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 0}, {Task::backward, 0}}, 3, 2),
                       doctest::Contains("stage 3 never runs micro-batch 1"), Error);
}

TEST_CASE("plan: batch and micro-batch counts are checked") {
  using tandem::detail::batch_rows;
  CHECK(batch_rows(640, 10, "forward") == 64);
  CHECK_THROWS_WITH_AS(batch_rows(641, 10, "forward"), doctest::Contains("641 values"), Error);
  CHECK_THROWS_WITH_AS(batch_rows(0, 10, "train_step"), doctest::Contains("train_step: the input has 0 values"), Error);
  CHECK(tandem::detail::micro_batches(tandem::schedule::GPipe{.micro_batches = 4}, 4, "x") == 4);
  CHECK_THROWS_WITH_AS(tandem::detail::micro_batches(tandem::schedule::GPipe{.micro_batches = 5}, 4, "train_step"),
                       doctest::Contains("use at most 4 micro-batches"), Error);
}
