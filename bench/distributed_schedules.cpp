// SPDX-License-Identifier: Apache-2.0
// GPipe across two processes against one process of two worker threads: the balanced two-stage
// MLP of bench/host_schedules, m = 1..16, side by side.
//
//   mpiexec -n 2 --bind-to core ./bench_distributed_schedules [repeats]     (default 5)
//
// Rank 0 holds stage 0 and rank 1 stage 1. Rank 0 also times the same network in one process
// (two worker threads) while rank 1 sleeps, so both configurations have the machine's cores to
// themselves. Speed-ups divide by the median of Naive steps interleaved with the configuration's
// own; the ideal speed-up of n stages with m micro-batches is n*m/(m+n-1). "per call" is the step
// time of a tiny network at batch 1, where the step is almost all the ranks' exchanges.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include <tandem/distributed.hpp>
#include <tandem/tandem.hpp>

#include "schedules_workload.hpp"

using namespace tandem;
using bench::batch, bench::filled, bench::median, bench::Net, bench::Tiny, bench::width;

namespace {

// Medians of Naive and of `sched`, interleaved (the load of a shared machine drifts).
template <class N, class Sched>
std::pair<double, double> paired(N &net, optim::SGD &opt, std::span<const float> x, std::span<const float> y,
                                 const Sched &sched, int repeats) {
  const loss::MSE loss;
  auto timed = [&](const auto &s) {
    const auto t0 = std::chrono::steady_clock::now();
    net.train_step(x, y, loss, opt, s);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> base, ms;
  timed(sched); // warm-up: buffers for this micro-batch count
  for (int r = 0; r < repeats; ++r) {
    base.push_back(timed(schedule::Naive{}));
    ms.push_back(timed(sched));
  }
  return {median(base), median(ms)};
}

// Waits for the other rank without taking a core (MPI_Barrier spins).
void idle_barrier(MPI_Comm comm) {
  MPI_Request request;
  MPI_Ibarrier(comm, &request);
  for (int done = 0; !done;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

} // namespace

int main(int argc, char **argv) {
  distributed::Environment env(argc, argv);
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  if (env.size() != 2) {
    if (env.rank() == 0) std::fprintf(stderr, "run on 2 ranks: mpiexec -n 2 %s\n", argv[0]);
    return 1;
  }
  const bool first = env.rank() == 0;
  const auto x = filled(batch * Net::in_features, 1.0f), y = filled(batch * Net::out_features, 0.1f);
  const std::span<const float> my_x = first ? std::span<const float>(x) : std::span<const float>();
  const std::span<const float> my_y = first ? std::span<const float>() : std::span<const float>(y);

  Context ctx(env, {.host_execution = HostExecution::workers});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 1e-4f});
  Context single({.devices = "host", .host_execution = HostExecution::workers});
  std::vector<std::pair<double, double>> ranks2, process1;
  const std::size_t ms[] = {1, 2, 4, 8, 16};
  for (std::size_t m : ms) ranks2.push_back(paired(net, opt, my_x, my_y, schedule::GPipe{.micro_batches = m}, repeats));
  idle_barrier(env.communicator());
  if (first) {
    Net local(single, 1);
    optim::SGD local_opt(local, {.lr = 1e-4f});
    for (std::size_t m : ms)
      process1.push_back(paired(local, local_opt, std::span<const float>(x), std::span<const float>(y),
                                schedule::GPipe{.micro_batches = m}, repeats));
  }
  idle_barrier(env.communicator());

  // The cost of a call's exchanges: a tiny network at batch 1.
  Tiny tiny(ctx, 1);
  optim::SGD tiny_opt(tiny, {.lr = 1e-4f});
  const auto tx = filled(16, 1.0f), ty = filled(16, 0.1f);
  const auto [tiny_ms, unused] =
      paired(tiny, tiny_opt, first ? std::span<const float>(tx) : std::span<const float>(),
             first ? std::span<const float>() : std::span<const float>(ty), schedule::Naive{}, repeats * 20);
  (void)unused;
  if (!first) return 0;

  std::printf("2-stage MLP, 2 x 4 x (Linear %zu->%zu + ReLU), batch %zu, MSE, SGD, GPipe; medians of %d steps\n", width,
              width, batch, repeats);
  std::printf("%4s | %12s %9s %9s | %12s %9s %9s | %6s\n", "m", "2 ranks ms", "speed-up", "of ideal", "1 proc ms",
              "speed-up", "of ideal", "ideal");
  for (std::size_t i = 0; i < std::size(ms); ++i) {
    const double m = double(ms[i]), ideal = 2 * m / (m + 1);
    const auto [rb, r] = ranks2[i];
    const auto [pb, p] = process1[i];
    std::printf("%4zu | %12.1f %8.2fx %8.0f%% | %12.1f %8.2fx %8.0f%% | %5.2fx\n", ms[i], r, rb / r,
                100 * rb / r / ideal, p, pb / p, 100 * pb / p / ideal, ideal);
  }
  std::printf("per call across 2 ranks (tiny network, batch 1, Naive): %.1f us\n", tiny_ms * 1e3);
}
