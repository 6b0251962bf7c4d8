// SPDX-License-Identifier: Apache-2.0
// Naive vs GPipe vs 1F1B on the host backend: a balanced two-stage MLP, each stage a worker thread.
//
//   bench_host_schedules [repeats]     (default 5 timed steps per configuration, after one warm-up)
//
// Speed-ups divide by the median of Naive steps interleaved with the configuration's own; "cores"
// is the process's CPU time over wall time (2.00 = both workers busy throughout; less on a
// machine shared with other work, which then also lowers the speed-up).
//
// The ideal speed-up of n stages with m micro-batches over Naive is n*m/(m+n-1): the pipeline's
// fill and drain leave (n-1) of (m+n-1) slots idle. It needs n free cores.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <tandem/tandem.hpp>

#include "schedules_workload.hpp"

#ifdef _OPENMP
#error "build the benchmark without OpenMP: Eigen would then split products over threads of its own"
#endif

using namespace tandem;
using bench::batch, bench::filled, bench::median, bench::Net, bench::Tiny, bench::width;

namespace {

struct Timing {
  double ms = 0;    // median wall time of a step
  double cores = 0; // median process CPU time over wall time: 2 when both workers computed throughout
};

double cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e3 + double(t.tv_nsec) / 1e6;
}

// Times `repeats` steps of `sched`, each right after a Naive step, so that both medians come from
// the same stretch of time: on a shared machine the load drifts, and a ratio of two medians taken
// minutes apart would measure the drift.
template <class N, class Sched>
std::pair<Timing, Timing> paired(N &net, optim::SGD &opt, const std::vector<float> &x, const std::vector<float> &y,
                                 const Sched &sched, int repeats) {
  const loss::MSE loss;
  auto timed = [&](const auto &s, std::vector<double> &ms, std::vector<double> &cores) {
    const double c0 = cpu_ms();
    const auto t0 = std::chrono::steady_clock::now();
    net.train_step(std::span<const float>(x), std::span<const float>(y), loss, opt, s);
    const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ms.push_back(wall);
    cores.push_back((cpu_ms() - c0) / wall);
  };
  std::vector<double> base_ms, base_cores, ms, cores;
  timed(sched, ms, cores); // warm-up: buffers for this micro-batch count are allocated on the first step
  ms.clear(), cores.clear();
  for (int r = 0; r < repeats; ++r) {
    timed(schedule::Naive{}, base_ms, base_cores);
    timed(sched, ms, cores);
  }
  return {{median(base_ms), median(base_cores)}, {median(ms), median(cores)}};
}

} // namespace

int main(int argc, char **argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  std::printf("host backend, %u hardware threads, Eigen threads %d, SIMD: %s\n", std::thread::hardware_concurrency(),
              Eigen::nbThreads(), Eigen::SimdInstructionSetsInUse());
  std::printf("model: 2 stages x 4 x (Linear %zu->%zu + ReLU), batch %zu, MSE, SGD; medians of %d steps\n\n", width,
              width, batch, repeats);

  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 1e-4f});
  const auto x = filled(batch * Net::in_features, 1.0f), y = filled(batch * Net::out_features, 0.1f);

  std::printf("%-8s %4s %10s %12s %6s %9s %7s\n", "schedule", "m", "step ms", "samples/s", "cores", "speed-up",
              "ideal");
  auto row = [&](const char *name, std::size_t m, Timing t, double naive_ms) {
    const double n = Net::num_stages, ideal = n * double(m) / (double(m) + n - 1);
    std::printf("%-8s %4zu %10.1f %12.0f %6.2f %8.2fx %6.2fx\n", name, m, t.ms, double(batch) / t.ms * 1e3, t.cores,
                naive_ms / t.ms, ideal);
    std::fflush(stdout);
  };
  const auto [naive, unused] = paired(net, opt, x, y, schedule::Naive{}, repeats);
  row("Naive", 1, naive, naive.ms);
  for (std::size_t m : {2, 4, 8, 16}) {
    const auto [base, gpipe] = paired(net, opt, x, y, schedule::GPipe{.micro_batches = m}, repeats);
    row("GPipe", m, gpipe, base.ms);
    const auto [base2, ofob] = paired(net, opt, x, y, schedule::OneFOneB{.micro_batches = m}, repeats);
    row("1F1B", m, ofob, base2.ms);
  }

  // Hand-off cost: one-row micro-batches of a tiny model, so each task is a few microseconds of
  // compute and the rest is waking the next stage's worker.
  Tiny tiny(ctx, 1);
  optim::SGD tiny_opt(tiny, {.lr = 1e-4f});
  const std::size_t tb = 256;
  const auto tx = filled(tb * 16, 1.0f), ty = filled(tb * 16, 0.1f);
  const auto [one, many] = paired(tiny, tiny_opt, tx, ty, schedule::GPipe{.micro_batches = tb}, repeats * 4);
  std::printf("\nhand-off cost: tiny 2-stage model, batch %zu: Naive %.3f ms, GPipe m=%zu %.3f ms "
              "(%.1f us per micro-batch for 4 tasks and 2 cross-thread copies)\n",
              tb, one.ms, tb, many.ms, (many.ms - one.ms) * 1e3 / double(tb));
}
