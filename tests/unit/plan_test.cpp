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
#include <tandem/schedule/interleaved_1f1b.hpp>
#include <tandem/schedule/one_f_one_b.hpp>
#include <tandem/schedule/zero_bubble_h1.hpp>

using tandem::Error;
using tandem::detail::TaskOrders;
using tandem::schedule::Task;

namespace {

// A stage schedule's lists, checked and walked as a step's are (training_orders): one per stage,
// each task naming its stage. `devices`: a stage's device, by stage (0, 1, ... where none given).
template <class Sched>
TaskOrders orders_of(const Sched &sched, std::size_t stages, std::size_t m, std::vector<std::size_t> devices = {}) {
  for (std::size_t s = devices.size(); s < stages; ++s) devices.push_back(s);
  return tandem::detail::training_orders(sched, devices, m);
}

// Walks `orders` (of S stages) and checks that each task comes once, in its list's order, after
// what it needs.
void check_walk(const TaskOrders &orders, std::size_t S, std::size_t m) {
  // by stage and micro-batch, when the forward, the input gradient, the weight gradient came
  std::vector<std::vector<int>> fwd(S, std::vector<int>(m, -1)), bwd = fwd, wgt = fwd;
  std::vector<std::size_t> next(orders.size(), 0);
  int clock = 0;
  const std::size_t result = tandem::detail::walk(orders, S, m, [&](std::size_t s, Task t) {
    CHECK(t.stage == s);
    // the next task of exactly one list
    std::size_t lists = 0;
    for (std::size_t q = 0; q < orders.size(); ++q)
      if (next[q] < orders[q].size() && orders[q][next[q]] == t) ++next[q], ++lists;
    CHECK(lists == 1);
    auto &when = t.kind == Task::forward            ? fwd[s][t.micro_batch]
                 : t.kind == Task::backward_weights ? wgt[s][t.micro_batch]
                                                    : bwd[s][t.micro_batch];
    CHECK(when == -1);
    when = clock++;
    if (t.kind == Task::backward) wgt[s][t.micro_batch] = when;
  });
  CHECK(result == orders.size());
  bool training = false;
  for (const auto &list : orders)
    for (const Task &t : list) training = training || t.kind != Task::forward;
  for (std::size_t q = 0; q < orders.size(); ++q) CHECK(next[q] == orders[q].size());
  for (std::size_t s = 0; s < S; ++s) {
    for (std::size_t k = 0; k < m; ++k) {
      CHECK(fwd[s][k] >= 0);
      if (s > 0) CHECK(fwd[s - 1][k] < fwd[s][k]);
      if (!training) continue;
      CHECK(bwd[s][k] >= 0);
      CHECK(bwd[s][k] <= wgt[s][k]);
      if (s + 1 < S) CHECK(bwd[s + 1][k] < bwd[s][k]);
      else CHECK(fwd[s][k] < bwd[s][k]);
    }
  }
}

// The most micro-batches alive at once in one stage's order, and that live ones never share an entry.
std::size_t check_stash(const std::vector<Task> &order, std::size_t m) {
  const auto plan = tandem::detail::assign_stash(order, m);
  const bool training = std::any_of(order.begin(), order.end(), [](const Task &t) { return t.kind != Task::forward; });
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
      if (t.kind == Task::backward_input) continue; // (backward_weights still reads the entry)
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

TEST_CASE("plan: walk issues GPipe, 1F1B, ZB-H1 and Interleaved1F1B task lists in dependency order") {
  for (std::size_t S = 1; S <= 5; ++S)
    for (std::size_t m = 1; m <= 8; ++m) {
      check_walk(orders_of(tandem::schedule::GPipe{.micro_batches = m}, S, m), S, m);
      check_walk(orders_of(tandem::schedule::OneFOneB{.micro_batches = m}, S, m), S, m);
      check_walk(orders_of(tandem::schedule::ZeroBubbleH1{.micro_batches = m}, S, m), S, m);
      check_walk(tandem::detail::forward_orders(S, m), S, m);
    }
  // D devices of v stages each (stage s on device s % D): one list per device
  for (std::size_t D = 1; D <= 4; ++D)
    for (std::size_t v = 1; v <= 3; ++v)
      for (std::size_t m = D; m <= 4 * D; m += D) {
        INFO("devices ", D, ", stages per device ", v, ", micro_batches ", m);
        std::vector<std::size_t> devices;
        for (std::size_t s = 0; s < D * v; ++s) devices.push_back(10 + s % D);
        const auto orders = orders_of(tandem::schedule::Interleaved1F1B{.micro_batches = m}, D * v, m, devices);
        CHECK(orders.size() == D);
        check_walk(orders, D * v, m);
        // and each stage's stash holds at most what the device's warm-up leaves alive
        for (std::size_t s = 0; s < D * v; ++s) CHECK(check_stash(tandem::detail::stage_order(orders, s), m) <= m);
      }
}

TEST_CASE("plan: ZB-H1 holds min(stages, m) micro-batches on every stage, 1F1B's most") {
  for (std::size_t S = 1; S <= 5; ++S)
    for (std::size_t m = 1; m <= 8; ++m)
      for (std::size_t s = 0; s < S; ++s)
        CHECK(check_stash(tandem::schedule::ZeroBubbleH1{.micro_batches = m}.order(s, S, m), m) == std::min(S, m));
}

TEST_CASE("plan: a per-device order that would deadlock is refused, and so are stages that do not cycle") {
  // Device 0 (stages 0 and 2) wants stage 2's forward of micro-batch 0 first: it needs stage 1's,
  // which needs stage 0's, behind it on the same device.
  struct BadInterleaving {
    std::size_t count(std::size_t) const { return 2; }
    std::vector<Task> device_order(std::size_t d, std::size_t D, std::size_t, std::size_t m) const {
      std::vector<Task> tasks;
      for (std::size_t s : {d + D, d}) // the device's later stage first
        for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::forward, k, s});
      for (std::size_t s : {d + D, d})
        for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::backward, k, s});
      return tasks;
    }
  };
  static_assert(tandem::schedule::Schedule<BadInterleaving> && !tandem::schedule::StageSchedule<BadInterleaving>);
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(BadInterleaving{}, {0, 1, 0, 1}, 2),
                       doctest::Contains("the task order of device 0 cannot be issued"), Error);
  // The same lists with each device's earlier stage first go through.
  struct GoodInterleaving {
    std::size_t count(std::size_t) const { return 2; }
    std::vector<Task> device_order(std::size_t d, std::size_t D, std::size_t, std::size_t m) const {
      std::vector<Task> tasks;
      for (std::size_t s : {d, d + D})
        for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::forward, k, s});
      for (std::size_t s : {d + D, d})
        for (std::size_t k = 0; k < m; ++k) tasks.push_back({Task::backward, k, s});
      return tasks;
    }
  };
  check_walk(tandem::detail::training_orders(GoodInterleaving{}, {0, 1, 0, 1}, 2), 4, 2);
  // A device's list may name only its own stages.
  struct Stray {
    std::size_t count(std::size_t) const { return 1; }
    std::vector<Task> device_order(std::size_t, std::size_t, std::size_t, std::size_t) const {
      return {{Task::forward, 0, 1}, {Task::backward, 0, 1}};
    }
  };
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(Stray{}, {0, 1}, 1),
                       doctest::Contains("device 0 lists stage 1, which is not one of its 1 stages"), Error);
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(GoodInterleaving{}, {0, 1, 1, 0}, 2),
                       doctest::Contains("the stages' devices are (0, 1, 1, 0)"), Error);
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(GoodInterleaving{}, {0, 1, 0}, 2),
                       doctest::Contains("the stages' devices are (0, 1, 0)"), Error);
  CHECK(tandem::detail::device_cycle(std::vector<std::size_t>{3, 5, 3, 5, 3, 5}, "x") == 2);
  CHECK_THROWS_WITH_AS(tandem::schedule::Interleaved1F1B{.micro_batches = 3}.device_order(0, 2, 2, 3),
                       doctest::Contains("micro_batches = 3 is not a multiple of the 2 devices"), Error);
}

TEST_CASE("plan: ZB-H1's lists: 1F1B's forwards, a backward_input for each backward, the weights later") {
  for (std::size_t S = 1; S <= 4; ++S)
    for (std::size_t m = 1; m <= 6; ++m)
      for (std::size_t s = 0; s < S; ++s) {
        const auto zb = tandem::schedule::ZeroBubbleH1{.micro_batches = m}.order(s, S, m);
        std::vector<Task> without_weights;
        for (const Task &t : zb)
          if (t.kind != Task::backward_weights)
            without_weights.push_back({t.kind == Task::backward_input ? Task::backward : t.kind, t.micro_batch});
        CHECK(without_weights == tandem::schedule::OneFOneB{.micro_batches = m}.order(s, S, m));
        // the weight gradients in micro-batch order, as 1F1B adds its gradients
        std::size_t next = 0;
        for (const Task &t : zb)
          if (t.kind == Task::backward_weights) CHECK(t.micro_batch == next++);
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
                    {{Task::forward, 1, 1}, {Task::forward, 0, 1}, {Task::backward, 0, 1}, {Task::backward, 1, 1}}};
  std::size_t visited = 0;
  CHECK(tandem::detail::walk(orders, 2, 2, [&](std::size_t, Task) { ++visited; }) == 0);
  CHECK(visited == 1); // stage 0's first forward, and nothing after it

  struct Deadlocked {
    TaskOrders orders;
    std::size_t count(std::size_t) const { return 2; }
    std::vector<Task> order(std::size_t s, std::size_t, std::size_t) const { return orders[s]; }
  };
  CHECK_THROWS_WITH_AS(tandem::detail::training_orders(Deadlocked{orders}, {0, 1}, 2),
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
  // a split backward: backward_input, then backward_weights
  CHECK_NOTHROW(check_order({{Task::forward, 0},
                             {Task::backward_input, 0},
                             {Task::forward, 1},
                             {Task::backward, 1},
                             {Task::backward_weights, 0}},
                            0, 2));
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 0}, {Task::backward_weights, 0}, {Task::backward_input, 0}}, 0, 1),
                       doctest::Contains("backward_weights twice or out of order"), Error);
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 0}, {Task::backward_input, 0}, {Task::backward, 0}}, 0, 1),
                       doctest::Contains("twice or out of order"), Error);
  CHECK_THROWS_WITH_AS(check_order({{Task::forward, 0}, {Task::backward_input, 0}}, 0, 1),
                       doctest::Contains("never runs micro-batch 0's backward_weights"), Error);
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
