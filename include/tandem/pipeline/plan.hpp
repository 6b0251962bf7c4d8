// SPDX-License-Identifier: Apache-2.0
// detail::Plan: how one step splits its batch into micro-batches, and the pure functions that turn
// a schedule into task lists, check them, walk them in dependency order and give each micro-batch
// a stash entry. Nothing here touches a device.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "tandem/detail/compiled.hpp"
#include "tandem/error.hpp"
#include "tandem/schedule/schedule.hpp"

namespace tandem::detail {

using TaskOrders = std::vector<std::vector<schedule::Task>>; // one task list per stage

// Micro-batch k is rows [offset[k], offset[k] + rows[k]) of the batch's `batch` rows.
struct Plan {
  std::size_t batch = 0, m = 0;
  std::vector<std::size_t> offset, rows;

  // `samples` samples of `per_sample` rows each (a sequence's tokens; 1 for row-wise networks) in
  // m micro-batches of whole samples, as evenly as possible: the first samples % m get one more.
  static Plan split(std::size_t samples, std::size_t m, std::size_t per_sample = 1) {
    Plan p{samples * per_sample, m, {}, {}};
    for (std::size_t k = 0, at = 0; k < m; ++k) {
      const std::size_t rows = (samples / m + (k < samples % m ? 1 : 0)) * per_sample;
      p.offset.push_back(at);
      p.rows.push_back(rows);
      at += rows;
    }
    return p;
  }
  std::size_t max_rows() const { return rows.empty() ? 0 : *std::max_element(rows.begin(), rows.end()); }
};

// The rows of a (batch, features) row-major input of `values` values.
TANDEM_INLINE std::size_t batch_rows(std::size_t values, std::size_t features, const char *call);
// The samples in `rows` rows of whole sequences of `per_sample` rows each.
TANDEM_INLINE std::size_t batch_samples(std::size_t rows, std::size_t per_sample, const char *call);

// The schedule's micro-batch count for `batch`, checked.
template <class Sched> std::size_t micro_batches(const Sched &sched, std::size_t batch, const char *call) {
  const std::size_t m = sched.count(batch);
  if (m == 0 || m > batch)
    fail(call, ": the schedule splits a batch of ", batch, " samples into ", m,
         " micro-batches, but needs 1 <= micro_batches <= batch (each micro-batch needs a sample); ", "use at most ",
         batch, " micro-batches for this batch");
  return m;
}

// A stage's task list runs each micro-batch's forward once, then its backward once.
TANDEM_INLINE void check_order(const std::vector<schedule::Task> &order, std::size_t s, std::size_t m);

// Inference: every stage runs the forwards of micro-batches 0..m-1.
TANDEM_INLINE TaskOrders forward_orders(std::size_t stages, std::size_t m);

// Calls visit(s, task) for every task of every stage's order, each stage's in its own order,
// interleaved so that every task comes after those it depends on: a forward after the previous
// stage's forward of its micro-batch, a backward after the next stage's backward of it (the last
// stage's: after its own forward). Returns the first stage whose order it could not finish (a
// dependency that never comes), or the number of stages.
template <class Visit> std::size_t walk(const TaskOrders &orders, std::size_t m, Visit &&visit) {
  const std::size_t S = orders.size();
  std::vector<std::size_t> next(S, 0);
  std::vector<std::vector<char>> forward_done(S, std::vector<char>(m, 0)), backward_done = forward_done;
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t s = 0; s < S; ++s) {
      while (next[s] < orders[s].size()) {
        const schedule::Task t = orders[s][next[s]];
        const std::size_t k = t.micro_batch;
        const bool forward = t.kind == schedule::Task::forward;
        if (forward ? s > 0 && !forward_done[s - 1][k] : (s + 1 == S ? !forward_done[s][k] : !backward_done[s + 1][k]))
          break;
        visit(s, t);
        (forward ? forward_done : backward_done)[s][k] = 1;
        ++next[s];
        progress = true;
      }
    }
  }
  for (std::size_t s = 0; s < S; ++s)
    if (next[s] != orders[s].size()) return s;
  return S;
}

// The schedule's task lists for a step of m micro-batches, checked, and refused before any work
// is issued where they wait on each other.
template <class Sched> TaskOrders training_orders(const Sched &sched, std::size_t stages, std::size_t m) {
  TaskOrders orders(stages);
  for (std::size_t s = 0; s < stages; ++s) {
    orders[s] = sched.order(s, stages, m);
    check_order(orders[s], s, m);
  }
  if (const std::size_t s = walk(orders, m, [](std::size_t, schedule::Task) {}); s < stages)
    fail("schedule: the task order of stage ", s, " cannot be issued (a dependency never comes)");
  return orders;
}

// Which stash entry (a set of a stage's inner activations) each micro-batch uses, in the stage's
// task order: taken by its forward, given back by its backward (or right after the forward when
// none follows, as in inference). `entries` is how many the schedule keeps alive at once. An
// entry is reused only after the backward that freed it, on the same stream: no race.
struct StashPlan {
  std::vector<std::size_t> entry; // by micro-batch
  std::size_t entries = 0;
};
constexpr StashPlan assign_stash(const std::vector<schedule::Task> &order, std::size_t m) {
  const bool training = std::any_of(order.begin(), order.end(),
                                    [](const schedule::Task &t) { return t.kind == schedule::Task::backward; });
  StashPlan plan{std::vector<std::size_t>(m, 0), 0};
  std::vector<std::size_t> free;
  for (const auto &t : order) {
    std::size_t &entry = plan.entry[t.micro_batch];
    if (t.kind == schedule::Task::forward) {
      if (free.empty()) free.push_back(plan.entries++);
      entry = free.back();
      free.pop_back();
      if (!training) free.push_back(entry);
    } else {
      free.push_back(entry);
    }
  }
  return plan;
}

// Defined here in a header-only program; in one linked with tandem::compiled, in src/compiled.cpp.
#if TANDEM_INLINE_DEFINITIONS
TANDEM_INLINE std::size_t batch_rows(std::size_t values, std::size_t features, const char *call) {
  if (values == 0 || values % features != 0)
    fail(call, ": the input has ", values, " values, which is not a positive whole number of rows of ", features,
         " features (row-major (batch, ", features, "))");
  return values / features;
}

TANDEM_INLINE std::size_t batch_samples(std::size_t rows, std::size_t per_sample, const char *call) {
  if (rows % per_sample != 0)
    fail(call, ": the batch has ", rows, " rows (tokens), which is not a whole number of sequences of ", per_sample,
         " (row b * ", per_sample, " + t is position t of sequence b); pass whole sequences");
  return rows / per_sample;
}

TANDEM_INLINE void check_order(const std::vector<schedule::Task> &order, std::size_t s, std::size_t m) {
  std::vector<int> f(m, 0), b(m, 0);
  for (const auto &t : order) {
    if (t.micro_batch >= m) fail("schedule: stage ", s, " lists micro-batch ", t.micro_batch, " of ", m);
    auto &c = t.kind == schedule::Task::forward ? f[t.micro_batch] : b[t.micro_batch];
    if (++c > 1 || (t.kind == schedule::Task::backward && !f[t.micro_batch]))
      fail("schedule: stage ", s, " runs micro-batch ", t.micro_batch, "'s ",
           t.kind == schedule::Task::forward ? "forward" : "backward", " twice or out of order");
  }
  for (std::size_t k = 0; k < m; ++k)
    if (!f[k] || !b[k]) fail("schedule: stage ", s, " never runs micro-batch ", k);
}

TANDEM_INLINE TaskOrders forward_orders(std::size_t stages, std::size_t m) {
  TaskOrders orders(stages);
  for (auto &o : orders)
    for (std::size_t k = 0; k < m; ++k) o.push_back({schedule::Task::forward, k});
  return orders;
}

#endif

} // namespace tandem::detail
