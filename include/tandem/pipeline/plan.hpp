// SPDX-License-Identifier: Apache-2.0
// detail::Plan: how one step splits its batch into micro-batches, and the pure functions that turn
// a schedule into task lists, check them, walk them in dependency order and give each micro-batch
// a stash entry. Nothing here touches a device.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "tandem/detail/compiled.hpp"
#include "tandem/error.hpp"
#include "tandem/schedule/schedule.hpp"

namespace tandem::detail {

// The lists a step issues, each in its own order: one per stage (a StageSchedule's), or one per
// device (a DeviceSchedule's). Every task names its stage.
using TaskOrders = std::vector<std::vector<schedule::Task>>;

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

// A stage's task list runs each micro-batch's forward once, then its backward once, whole or as
// backward_input then backward_weights.
TANDEM_INLINE void check_order(const std::vector<schedule::Task> &order, std::size_t s, std::size_t m);

// Stage s's tasks, in the order the lists issue them.
constexpr std::vector<schedule::Task> stage_order(const TaskOrders &orders, std::size_t s) {
  std::vector<schedule::Task> order;
  for (const auto &list : orders)
    for (const auto &t : list)
      if (t.stage == s) order.push_back(t);
  return order;
}
// Whether a stage's list splits a backward (backward_input and backward_weights).
constexpr bool splits_backward(const std::vector<schedule::Task> &order) {
  return std::any_of(order.begin(), order.end(),
                     [](const schedule::Task &t) { return t.kind == schedule::Task::backward_input; });
}

// How many devices the stages cycle through (stage s on the device of stage s % D, the first D
// distinct), for a DeviceSchedule; Error where they do not cycle.
[[noreturn]] TANDEM_INLINE void fail_device_cycle(std::span<const std::size_t> devices, const char *schedule);
constexpr std::size_t device_cycle(std::span<const std::size_t> devices, const char *schedule) {
  std::size_t D = 0;
  while (D < devices.size() && std::find(devices.begin(), devices.begin() + D, devices[D]) == devices.begin() + D) ++D;
  bool cycles = D > 0 && devices.size() % D == 0;
  for (std::size_t s = D; cycles && s < devices.size(); ++s) cycles = devices[s] == devices[s % D];
  if (!cycles) fail_device_cycle(devices, schedule);
  return D;
}

// Each stage's own list of a schedule's task lists for m micro-batches (each task naming its
// stage): a StageSchedule's order, or the tasks of a DeviceSchedule's lists that name the stage.
// Unchecked (training_orders checks them); constexpr, for the memory plan.
template <class Sched>
constexpr std::vector<schedule::Task> stage_tasks(const Sched &sched, std::span<const std::size_t> devices,
                                                  std::size_t s, std::size_t m) {
  const std::size_t stages = devices.size();
  std::vector<schedule::Task> order;
  if constexpr (schedule::StageSchedule<Sched>) {
    order = sched.order(s, stages, m);
  } else {
    const std::size_t D = device_cycle(devices, "schedule");
    for (const schedule::Task &t : sched.device_order(s % D, D, stages / D, m))
      if (t.stage == s) order.push_back(t);
  }
  for (auto &t : order) t.stage = s;
  return order;
}

// Inference: every stage runs the forwards of micro-batches 0..m-1.
TANDEM_INLINE TaskOrders forward_orders(std::size_t stages, std::size_t m);

// Calls visit(stage, task) for every task of every list (of a network of `stages` stages), each
// list in its own order, interleaved so that every task comes after those it depends on: a
// forward after the previous stage's forward of its micro-batch, a backward or backward_input
// after the next stage's backward or backward_input of it (the last stage's: after its own
// forward), a backward_weights after its stage's backward_input. A list waits at a task whose
// dependency has not come, as a device's one queue does. Returns the first list it could not
// finish (a dependency that never comes: the lists would deadlock), or the number of lists.
template <class Visit> std::size_t walk(const TaskOrders &orders, std::size_t stages, std::size_t m, Visit &&visit) {
  using schedule::Task;
  const std::size_t Q = orders.size(), S = stages;
  std::vector<std::size_t> next(Q, 0);
  // by stage and micro-batch: forward done, input gradient done (backward or backward_input)
  std::vector<std::vector<char>> forward_done(S, std::vector<char>(m, 0)), input_gradient_done = forward_done;
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t q = 0; q < Q; ++q) {
      while (next[q] < orders[q].size()) {
        const Task t = orders[q][next[q]];
        const std::size_t s = t.stage, k = t.micro_batch;
        bool ready = false;
        switch (t.kind) {
        case Task::forward: ready = s == 0 || forward_done[s - 1][k]; break;
        case Task::backward:
        case Task::backward_input: ready = s + 1 == S ? forward_done[s][k] : input_gradient_done[s + 1][k]; break;
        case Task::backward_weights: ready = input_gradient_done[s][k]; break;
        }
        if (!ready) break;
        visit(s, t);
        if (t.kind == Task::forward) forward_done[s][k] = 1;
        else if (t.kind != Task::backward_weights) input_gradient_done[s][k] = 1;
        ++next[q];
        progress = true;
      }
    }
  }
  for (std::size_t q = 0; q < Q; ++q)
    if (next[q] != orders[q].size()) return q;
  return Q;
}

// The schedule's task lists for a step of m micro-batches on stages whose devices are `devices`
// (by stage), checked, and refused before any work is issued where they wait on each other.
template <class Sched>
TaskOrders training_orders(const Sched &sched, const std::vector<std::size_t> &devices, std::size_t m) {
  const std::size_t stages = devices.size();
  TaskOrders orders;
  const char *what = "stage";
  if constexpr (schedule::StageSchedule<Sched>) {
    for (std::size_t s = 0; s < stages; ++s) {
      orders.push_back(sched.order(s, stages, m));
      for (auto &t : orders.back()) t.stage = s;
    }
  } else {
    what = "device";
    const std::size_t D = device_cycle(devices, "schedule");
    for (std::size_t d = 0; d < D; ++d) {
      orders.push_back(sched.device_order(d, D, stages / D, m));
      for (const auto &t : orders.back())
        if (t.stage >= stages || t.stage % D != d)
          fail("schedule: the task order of device ", devices[d], " lists stage ", t.stage,
               ", which is not one of its ", stages / D, " stages (stage s runs on the device of stage s % ", D, ")");
    }
  }
  for (std::size_t s = 0; s < stages; ++s) check_order(stage_order(orders, s), s, m);
  if (const std::size_t q = walk(orders, stages, m, [](std::size_t, schedule::Task) {}); q < orders.size())
    fail("schedule: the task order of ", what, " ", what[0] == 'd' ? devices[q] : q,
         " cannot be issued (it waits for a task that never comes: the orders would deadlock)");
  return orders;
}

// Which stash entry (a set of a stage's inner activations) each micro-batch uses, in the stage's
// task order: taken by its forward, given back by its backward (or right after the forward when
// none follows, as in inference). `entries` is how many the schedule keeps alive at once. An
// entry is reused only after the backward that freed it, on the same stream: no race.
// A split backward gives its entry back after backward_weights, which still reads it.
struct StashPlan {
  std::vector<std::size_t> entry; // by micro-batch
  std::size_t entries = 0;
};
constexpr StashPlan assign_stash(const std::vector<schedule::Task> &order, std::size_t m) {
  const bool training = std::any_of(order.begin(), order.end(),
                                    [](const schedule::Task &t) { return t.kind != schedule::Task::forward; });
  StashPlan plan{std::vector<std::size_t>(m, 0), 0};
  std::vector<std::size_t> free;
  for (const auto &t : order) {
    std::size_t &entry = plan.entry[t.micro_batch];
    if (t.kind == schedule::Task::forward) {
      if (free.empty()) free.push_back(plan.entries++);
      entry = free.back();
      free.pop_back();
      if (!training) free.push_back(entry);
    } else if (t.kind != schedule::Task::backward_input) {
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
  using schedule::Task;
  // by micro-batch, the tasks so far: 0 none, 1 forward, 2 backward_input, 3 its backward (done)
  std::vector<int> at(m, 0);
  static constexpr const char *names[] = {"forward", "backward", "backward_input", "backward_weights"};
  for (const auto &t : order) {
    if (t.micro_batch >= m) fail("schedule: stage ", s, " lists micro-batch ", t.micro_batch, " of ", m);
    int &a = at[t.micro_batch];
    const int want = t.kind == Task::forward ? 0 : t.kind == Task::backward_weights ? 2 : 1;
    if (a != want)
      fail("schedule: stage ", s, " runs micro-batch ", t.micro_batch, "'s ", names[t.kind],
           " twice or out of order (a forward, then a backward or a backward_input and backward_weights)");
    a = t.kind == Task::forward ? 1 : t.kind == Task::backward_input ? 2 : 3;
  }
  for (std::size_t k = 0; k < m; ++k)
    if (at[k] != 3)
      fail("schedule: stage ", s, " never runs micro-batch ", k, "'s ",
           at[k] == 2 ? "backward_weights"
           : at[k]    ? "backward"
                      : "forward");
}

TANDEM_INLINE void fail_device_cycle(std::span<const std::size_t> devices, const char *schedule) {
  std::string list;
  for (const std::size_t d : devices) list += (list.empty() ? "" : ", ") + std::to_string(d);
  fail(schedule,
       ": a per-device schedule needs stages that cycle through their devices (stage s on the device of "
       "stage s % D, each of the D devices holding the same number of stages), but the stages' devices are (",
       list, ")");
}

TANDEM_INLINE TaskOrders forward_orders(std::size_t stages, std::size_t m) {
  TaskOrders orders(stages);
  for (std::size_t s = 0; s < stages; ++s)
    for (std::size_t k = 0; k < m; ++k) orders[s].push_back({schedule::Task::forward, k, s});
  return orders;
}

#endif

} // namespace tandem::detail
