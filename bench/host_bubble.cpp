// SPDX-License-Identifier: Apache-2.0
// The bubble measured from the timeline (bubble.hpp) beside the formula, and the step time over
// Naive's, for every schedule in schedule_list.hpp on 2 and 4 stages, host backend, worker threads.
//
//   bench_host_bubble [repeats]     (default 5 traced and 5 timed steps per row, after a warm-up)
//
// bubble: the median over traced steps of the largest idle fraction of a device (the first
// stage's device, whose window is the whole step); mean: the same for the mean over devices; per
// device: each device's idle fraction (median), Device<0> first.
// formula: GPipe's and 1F1B's (n-1)/(m+n-1). step/Naive: the best untraced step of the schedule over
// the best Naive step, the two alternating in the same stretch of time; ideal (m+n-1)/(n m).
// Traced steps are separate from timed ones: tracing adds events and a wait at the step's end.
// On a machine shared with other work, `chrt -r 1 bench_host_bubble` keeps the workers from waiting
// for a core between tasks (docs/performance.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <thread>
#include <tuple>
#include <vector>

#include <tandem/bubble.hpp>
#include <tandem/tandem.hpp>

#include "schedule_list.hpp"

#ifdef _OPENMP
#error "build the benchmark without OpenMP: Eigen would then split products over threads of its own"
#endif

using namespace tandem;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Row {
  double bubble = 0, mean = 0; // medians over traced steps
  std::vector<double> device;  // each device's idle fraction, median over traced steps
  double ms = 0, naive_ms = 0; // best untraced steps
};

template <class N, class Sched> Row measure(Context &ctx, N &net, optim::SGD &opt, const Sched &sched, int repeats) {
  const auto x = bench::filled(bench::batch * N::in_features, 1.0f);
  const auto y = bench::filled(bench::batch * N::out_features, 0.1f);
  const loss::MSE loss;
  auto step = [&](const auto &s) {
    const auto t0 = std::chrono::steady_clock::now();
    net.train_step(std::span<const float>(x), std::span<const float>(y), loss, opt, s);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  Row r;
  step(sched); // warm-up: buffers for this micro-batch count are allocated on the first step
  std::vector<double> ms, naive_ms, bubble, mean;
  std::vector<std::vector<double>> device;
  for (int i = 0; i < repeats; ++i) {
    naive_ms.push_back(step(schedule::Naive{}));
    ms.push_back(step(sched));
  }
  Timeline &tl = ctx.timeline();
  tl.enable();
  for (int i = 0; i < repeats; ++i) {
    tl.clear();
    step(sched);
    const Bubble b = measure_bubble(tl);
    bubble.push_back(b.max);
    mean.push_back(b.mean);
    device.resize(std::max(device.size(), b.devices.size()));
    for (std::size_t d = 0; d < b.devices.size(); ++d) device[d].push_back(b.devices[d].idle_fraction());
  }
  tl.enable(false);
  tl.clear();
  r.bubble = median(bubble), r.mean = median(mean);
  for (const auto &d : device) r.device.push_back(median(d));
  r.ms = *std::min_element(ms.begin(), ms.end());
  r.naive_ms = *std::min_element(naive_ms.begin(), naive_ms.end());
  return r;
}

void print(std::size_t n, const char *name, std::size_t m, const Row &r) {
  const double formula = double(n - 1) / double(m + n - 1), ideal = double(m + n - 1) / double(n * m);
  std::printf("%2zu %-16s %3zu %7.3f %7.3f %8.3f %10.1f %10.1f %10.2f %7.2f  ", n, name, m, r.bubble, r.mean, formula,
              r.ms, r.naive_ms, r.ms / r.naive_ms, ideal);
  for (std::size_t d = 0; d < r.device.size(); ++d) std::printf("%s%.2f", d ? " " : "", r.device[d]);
  std::printf("\n");
  std::fflush(stdout);
}

// Every row of one schedule on n devices, on a network of its own (so that an interleaving
// schedule gets its stages-per-device layout) and Naive on the same network beside it.
template <std::size_t n, class Entry> void rows(const Entry &entry, int repeats) {
  using N = bench::Net<n, Entry::stages_per_device>;
  Context ctx({.devices = "host", .host_execution = HostExecution::workers});
  N net(ctx, 1);
  optim::SGD opt(net, {.lr = 1e-4f});
  for (std::size_t m : {4, 8, 16}) print(n, entry.name, m, measure(ctx, net, opt, entry.make(m), repeats));
}

template <std::size_t n> void table(int repeats) {
  {
    Context ctx({.devices = "host", .host_execution = HostExecution::workers});
    bench::Net<n, 1> net(ctx, 1);
    optim::SGD opt(net, {.lr = 1e-4f});
    // Naive's "m" is 1: its formula is (n-1)/n.
    print(n, "Naive", 1, measure(ctx, net, opt, schedule::Naive{}, repeats));
  }
  std::apply([&](const auto &...entry) { (rows<n>(entry, repeats), ...); }, bench::schedules);
}

} // namespace

int main(int argc, char **argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const unsigned cores = std::thread::hardware_concurrency();
  std::printf("host backend, worker threads, %u hardware threads; model: 8 x (Linear %zu->%zu + ReLU) split "
              "evenly over the stages, batch %zu, MSE, SGD; %d traced and %d timed steps per row\n",
              cores, bench::width, bench::width, bench::batch, repeats, repeats);
  if (cores < 4)
    std::printf("note: 4 stages on %u hardware threads oversubscribe: at most %u workers compute at once, so a device "
                "idles about 1 - %u/4 of a step whatever the schedule (a worker parked in the middle of a task counts "
                "as busy), and a step cannot fall below 1/%u of Naive's\n",
                cores, cores, cores, cores);
  std::printf("\n%2s %-16s %3s %7s %7s %8s %10s %10s %10s %7s  %s\n", "n", "schedule", "m", "bubble", "mean", "formula",
              "step ms", "Naive ms", "step/Naive", "ideal", "per device");
  table<2>(repeats);
  table<4>(repeats);
}
