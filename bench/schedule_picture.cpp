// SPDX-License-Identifier: Apache-2.0
// Pictures of every schedule in schedule_list.hpp (and Naive) on 2 devices (m = 4 by default): the order each
// stage runs as designed, laid out with a forward taking 1 unit and a backward 2, and a real step
// traced on the host backend's worker threads, both drawn by timeline_picture (timeline_picture.hpp).
//
//   bench_schedule_picture [columns] [m]     (default 96 columns for the traced step, m = 4)
//
// F forward, B backward, L loss, O optimizer, with the micro-batch; '.' idle.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <tandem/bubble.hpp>
#include <tandem/tandem.hpp>
#include <tandem/timeline_picture.hpp>

#include "schedule_list.hpp"

using namespace tandem;

namespace {

constexpr std::size_t devices = 2;

// What a task passes on when it ends: a forward its output to the next stage, a backward (or the
// input-gradient half of a split one) its input's gradient to the stage before, the weight-gradient
// half nothing.
enum class Passes { output, gradient, nothing };
struct Role {
  TaskKind kind;
  double length; // in units: a forward 1, a backward 2, each half of a split backward 1
  Passes passes;
};
Role role(schedule::Task::Kind k) {
  switch (k) {
  case schedule::Task::forward: return {TaskKind::forward, 1, Passes::output};
  case schedule::Task::backward: return {TaskKind::backward, 2, Passes::gradient};
  case schedule::Task::backward_input: return {TaskKind::backward_input, 1, Passes::gradient};
  case schedule::Task::backward_weights: return {TaskKind::backward_weights, 1, Passes::nothing};
  }
  return {TaskKind::backward, 2, Passes::gradient};
}

struct Item {
  schedule::Task::Kind kind;
  std::size_t micro_batch, stage;
};

// The order as designed on D devices with v stages each (stage s on Device<s % D>), laid out as
// early as the dependencies allow: a forward after the previous stage's forward of its
// micro-batch, a backward after the next stage's backward of it (the last stage's after its own
// forward), a weight-gradient half after its input-gradient half; each list in its order, one
// task at a time on a device. A schedule's lists: one per stage (order) or one per device
// (device_order). Spans in units, on track d for Device<d>.
template <class Sched> std::vector<TimelineSpan> designed(const Sched &sched, std::size_t D, std::size_t v) {
  const std::size_t m = sched.count(bench::batch), n = D * v;
  std::vector<std::vector<Item>> lists;
  std::vector<std::size_t> device_of_list;
  if constexpr (requires { sched.device_order(D, D, v, m); }) {
    for (std::size_t d = 0; d < D; ++d) {
      lists.emplace_back(), device_of_list.push_back(d);
      for (const auto &t : sched.device_order(d, D, v, m)) lists.back().push_back({t.kind, t.micro_batch, t.stage});
    }
  } else {
    for (std::size_t s = 0; s < n; ++s) {
      lists.emplace_back(), device_of_list.push_back(s % D);
      for (const auto &t : sched.order(s, n, m)) lists.back().push_back({t.kind, t.micro_batch, s});
    }
  }
  std::map<std::tuple<std::size_t, Passes, std::size_t>, double> ready; // (stage, what, micro-batch)
  std::vector<std::size_t> next(lists.size(), 0);
  std::vector<double> free(D, 0);
  std::vector<TimelineSpan> spans;
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t l = 0; l < lists.size(); ++l) {
      for (; next[l] < lists[l].size(); ++next[l], progress = true) {
        const Item t = lists[l][next[l]];
        const Role r = role(t.kind);
        std::vector<std::tuple<std::size_t, Passes, std::size_t>> needs;
        if (r.passes == Passes::output && t.stage > 0) needs.push_back({t.stage - 1, Passes::output, t.micro_batch});
        if (r.passes == Passes::gradient)
          needs.push_back(t.stage + 1 < n ? std::tuple{t.stage + 1, Passes::gradient, t.micro_batch}
                                          : std::tuple{t.stage, Passes::output, t.micro_batch});
        if (r.passes == Passes::nothing) needs.push_back({t.stage, Passes::gradient, t.micro_batch});
        double start = free[device_of_list[l]];
        bool waits = false;
        for (const auto &key : needs) {
          const auto it = ready.find(key);
          if (it == ready.end()) waits = true;
          else start = std::max(start, it->second);
        }
        if (waits) break; // until another list has run what this task needs
        const std::size_t d = device_of_list[l];
        spans.push_back({r.kind, d, t.stage, std::ptrdiff_t(t.micro_batch), start, r.length});
        free[d] = start + r.length;
        if (r.passes != Passes::nothing) ready[{t.stage, r.passes, t.micro_batch}] = free[d];
      }
    }
  }
  for (std::size_t l = 0; l < lists.size(); ++l)
    if (next[l] < lists[l].size()) std::printf("  (list %zu never runs its task %zu: a deadlock)\n", l, next[l]);
  return spans;
}

template <std::size_t StagesPerDevice, class Sched>
void picture(const char *name, const Sched &sched, std::size_t columns) {
  const std::size_t m = sched.count(bench::batch);
  std::printf("%s, %zu devices, m = %zu\n\n", name, devices, m);
  // Stages sharing a device with lists of their own (order, not device_order) would take turns on
  // it in an order the pipeline picks, which the designed layout cannot know: their trace only.
  if constexpr (StagesPerDevice == 1 || requires { sched.device_order(devices, devices, StagesPerDevice, m); }) {
    const auto spans = designed(sched, devices, StagesPerDevice);
    double units = 0;
    for (const auto &s : spans) units = std::max(units, s.end_us());
    std::vector<std::string> tracks;
    for (std::size_t d = 0; d < devices; ++d) tracks.push_back("Device<" + std::to_string(d) + ">");
    std::printf("as designed (a forward 1 unit, a backward 2, each half of a split backward 1: 4 columns a "
                "unit):\n%s\n",
                timeline_picture(spans, tracks, std::size_t(units) * 4).c_str());
  }

  using N = bench::Net<devices, StagesPerDevice>;
  Context ctx({.devices = "host", .host_execution = HostExecution::workers});
  N net(ctx, 1);
  optim::SGD opt(net, {.lr = 1e-4f});
  const auto x = bench::filled(bench::batch * N::in_features, 1.0f);
  const auto y = bench::filled(bench::batch * N::out_features, 0.1f);
  const auto step = [&] {
    net.train_step(std::span<const float>(x), std::span<const float>(y), loss::MSE{}, opt, sched);
  };
  step(); // warm-up
  Timeline &tl = ctx.timeline();
  tl.enable();
  tl.clear();
  step();
  const Bubble b = measure_bubble(tl);
  std::printf("traced on the host (%zu columns, %.1f ms; bubble %.3f, formula %.3f):\n%s\n", columns,
              (b.devices.front().last_us - b.devices.front().first_us) / 1e3, b.max,
              double(devices - 1) / double(m + devices - 1), timeline_picture(tl, columns).c_str());
}

} // namespace

int main(int argc, char **argv) {
  const std::size_t columns = argc > 1 ? std::size_t(std::max(8, std::atoi(argv[1]))) : 96;
  const std::size_t micro_batches = argc > 2 ? std::size_t(std::max(1, std::atoi(argv[2]))) : 4;
  std::printf("host backend, worker threads; 8 x (Linear %zu + ReLU) over 2 stages, batch %zu\n\n", bench::width,
              bench::batch);
  picture<1>("Naive", schedule::Naive{}, columns);
  std::apply(
      [&](const auto &...entry) {
        (picture<std::remove_cvref_t<decltype(entry)>::stages_per_device>(entry.name, entry.make(micro_batches),
                                                                          columns),
         ...);
      },
      bench::schedules);
}
