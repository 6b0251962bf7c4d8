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

#include <tandem/tandem.hpp>

#include "schedule_list.hpp"

using namespace tandem;

namespace {

constexpr std::size_t devices = 2;

// Each stage's order as designed, laid out as early as the dependencies allow: a forward after the
// previous stage's forward of its micro-batch, a backward after the next stage's backward of it,
// each stage's tasks in its order. Spans in units (a forward 1, a backward 2), stage s on track s.
template <class Sched> std::vector<TimelineSpan> designed(const Sched &sched, std::size_t n) {
  using schedule::Task;
  const std::size_t m = sched.count(bench::batch);
  std::vector<std::vector<Task>> order(n);
  for (std::size_t s = 0; s < n; ++s) order[s] = sched.order(s, n, m);
  std::map<std::tuple<std::size_t, int, std::size_t>, double> end; // (stage, kind, micro-batch)
  std::vector<std::size_t> next(n, 0);
  std::vector<double> free(n, 0);
  std::vector<TimelineSpan> spans;
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t s = 0; s < n; ++s) {
      while (next[s] < order[s].size()) {
        const Task t = order[s][next[s]];
        // A new kind of task: its TaskKind, length and dependency go here.
        const bool fwd = t.kind == Task::forward;
        const bool first = fwd ? s == 0 : s + 1 == n;
        const auto dep = fwd ? std::tuple{s - 1, int(Task::forward), t.micro_batch}
                             : std::tuple{s + 1, int(Task::backward), t.micro_batch};
        if (!first && !end.count(dep)) break; // waits for another stage
        const double start = std::max(free[s], first ? 0.0 : end.at(dep)), length = fwd ? 1 : 2;
        spans.push_back(
            {fwd ? TaskKind::forward : TaskKind::backward, s, s, std::ptrdiff_t(t.micro_batch), start, length});
        end[{s, int(t.kind), t.micro_batch}] = free[s] = start + length;
        ++next[s], progress = true;
      }
    }
  }
  for (std::size_t s = 0; s < n; ++s)
    if (next[s] < order[s].size())
      std::printf("  (stage %zu never runs task %zu of its order: a deadlock)\n", s, next[s]);
  return spans;
}

template <std::size_t StagesPerDevice, class Sched>
void picture(const char *name, const Sched &sched, std::size_t columns) {
  const std::size_t m = sched.count(bench::batch);
  std::printf("%s, %zu devices, m = %zu\n\n", name, devices, m);
  // The designed picture lays out one stage per device; an interleaving schedule's is drawn from
  // its trace only.
  if constexpr (StagesPerDevice == 1) {
    const auto spans = designed(sched, devices);
    double units = 0;
    for (const auto &s : spans) units = std::max(units, s.end_us());
    std::vector<std::string> tracks;
    for (std::size_t d = 0; d < devices; ++d) tracks.push_back("Device<" + std::to_string(d) + ">");
    std::printf("as designed (a forward 1 unit, a backward 2: 4 columns a unit):\n%s\n",
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
