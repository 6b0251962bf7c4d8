// SPDX-License-Identifier: Apache-2.0
// GPipe and 1F1B across processes against one process of as many worker threads: a balanced MLP of
// one stage per rank (each stage 4 x (Linear 1024 + ReLU), batch 1024), m = 2..16, side by side.
//
//   mpiexec -n 2 ./bench_distributed_schedules [repeats] [trace.json]     (2 or 3 ranks; repeats 5)
//
// Rank r holds stage r. Rank 0 also times the same network in one process (a worker per stage)
// while the other ranks sleep, so both configurations have the machine's cores to themselves; its
// workers may run on every core the machine has, wherever mpiexec bound rank 0.
// Speed-ups divide by the median of Naive steps interleaved with the configuration's own; the
// ideal speed-up of n stages with m micro-batches is n*m/(m+n-1) (it needs n free cores). "per
// call" is the step time of a tiny network at batch 1, where the step is almost all the ranks'
// exchanges. With a file name, one traced GPipe(8) step across the ranks is written there
// (distributed::write_chrome_trace).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

#include <tandem/distributed.hpp>
#include <tandem/tandem.hpp>

#include "schedules_workload.hpp"

using namespace tandem;
using bench::batch, bench::filled, bench::median, bench::Half, bench::Tiny, bench::width;

namespace {

using Net2 = bench::Net;
using Net3 = Pipeline<Half,
                      Stage<Device<1>, Linear<width, width>, ReLU, Linear<width, width>, ReLU, Linear<width, width>,
                            ReLU, Linear<width, width>, ReLU>,
                      Stage<Device<2>, Linear<width, width>, ReLU, Linear<width, width>, ReLU, Linear<width, width>,
                            ReLU, Linear<width, width>, ReLU>>;

const std::size_t micro_batches[] = {2, 4, 8, 16};

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

// Waits for the other ranks without taking a core (MPI_Barrier spins).
void idle_barrier(MPI_Comm comm) {
  MPI_Request request;
  MPI_Ibarrier(comm, &request);
  for (int done = 0; !done;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// The one-way time of a message of each size between ranks 0 and 1: half the median round trip
// of MPI_Isend/MPI_Irecv on tandem's communicator, as a boundary crossing uses them.
std::vector<double> one_way_us(MPI_Comm comm, int rank, const std::vector<std::size_t> &sizes) {
  std::vector<double> out;
  for (const std::size_t bytes : sizes) {
    std::vector<char> buffer(bytes);
    std::vector<double> trips;
    for (int i = 0; i < 21; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      MPI_Request r;
      if (rank == 0) {
        MPI_Isend(buffer.data(), int(bytes), MPI_BYTE, 1, 0, comm, &r);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
        MPI_Irecv(buffer.data(), int(bytes), MPI_BYTE, 1, 0, comm, &r);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Irecv(buffer.data(), int(bytes), MPI_BYTE, 0, 0, comm, &r);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
        MPI_Isend(buffer.data(), int(bytes), MPI_BYTE, 0, 0, comm, &r);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
      }
      trips.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    out.push_back(median(trips) / 2);
  }
  return out;
}

// Lets the calling thread, and the threads it starts from now on, run on every core of the machine:
// mpiexec binds a rank to one core where there are at most two ranks, which would leave the
// one-process comparison's two workers one core. Returns the binding to restore.
#ifdef __linux__
cpu_set_t unbind() {
  cpu_set_t before, all;
  CPU_ZERO(&before);
  sched_getaffinity(0, sizeof before, &before);
  CPU_ZERO(&all);
  for (unsigned c = 0; c < std::thread::hardware_concurrency(); ++c) CPU_SET(c, &all);
  sched_setaffinity(0, sizeof all, &all);
  return before;
}
void rebind(const cpu_set_t &before) { sched_setaffinity(0, sizeof before, &before); }
#else
int unbind() { return 0; }
void rebind(int) {}
#endif

// Each schedule at each micro-batch count: (Naive ms, schedule ms), GPipe's first.
template <class N>
std::vector<std::pair<double, double>> sweep(N &net, optim::SGD &opt, std::span<const float> x,
                                             std::span<const float> y, int repeats) {
  std::vector<std::pair<double, double>> out;
  for (std::size_t m : micro_batches)
    out.push_back(paired(net, opt, x, y, schedule::GPipe{.micro_batches = m}, repeats));
  for (std::size_t m : micro_batches)
    out.push_back(paired(net, opt, x, y, schedule::OneFOneB{.micro_batches = m}, repeats));
  return out;
}

template <class N> int run(distributed::Environment &env, int repeats, const char *trace) {
  constexpr std::size_t n = N::num_stages;
  const bool first = env.rank() == 0, last = env.rank() + 1 == static_cast<int>(n);
  const auto x = filled(batch * N::in_features, 1.0f), y = filled(batch * N::out_features, 0.1f);
  const std::span<const float> my_x = first ? std::span<const float>(x) : std::span<const float>();
  const std::span<const float> my_y = last ? std::span<const float>(y) : std::span<const float>();

  Context ctx(env, {.host_execution = HostExecution::workers});
  std::vector<std::pair<double, double>> ranks, process;
  {
    N net(ctx, 1);
    optim::SGD opt(net, {.lr = 1e-4f});
    ranks = sweep(net, opt, my_x, my_y, repeats);
    if (trace) {
      ctx.timeline().clear();
      ctx.timeline().enable(true);
      net.train_step(my_x, my_y, loss::MSE{}, opt, schedule::GPipe{.micro_batches = 8});
      ctx.timeline().enable(false);
      distributed::write_chrome_trace(env, ctx.timeline(), trace);
    }
  }
  idle_barrier(env.communicator());
  if (first) {
    const auto binding = unbind();
    {
      Context single({.devices = "host", .host_execution = HostExecution::workers});
      N local(single, 1);
      optim::SGD local_opt(local, {.lr = 1e-4f});
      process = sweep(local, local_opt, x, y, repeats);
    }
    rebind(binding);
  }
  idle_barrier(env.communicator());

  // The cost of a call's exchanges: a tiny network at batch 1.
  Tiny tiny(ctx, 1);
  optim::SGD tiny_opt(tiny, {.lr = 1e-4f});
  const auto tx = filled(16, 1.0f), ty = filled(16, 0.1f);
  const auto [tiny_ms, unused] =
      paired(tiny, tiny_opt, first ? std::span<const float>(tx) : std::span<const float>(),
             env.rank() == 1 ? std::span<const float>(ty) : std::span<const float>(), schedule::Naive{}, repeats * 20);
  (void)unused;
  // From a tiny boundary to this workload's at m = 8 and at m = 1 (batch/m rows of `width` floats).
  const std::vector<std::size_t> sizes = {64, 4096, 65536, batch * width * 4 / 8, batch * width * 4};
  const auto one_way = one_way_us(env.communicator(), env.rank(), sizes);
  if (!first) return 0;

  std::printf("%zu-stage MLP, %zu x 4 x (Linear %zu->%zu + ReLU), batch %zu, MSE, SGD; medians of %d steps\n", n, n,
              width, width, batch, repeats);
  std::printf("%-6s %3s | %10s %9s %9s | %10s %9s %9s | %6s\n", "", "m", std::to_string(n).append(" ranks ms").c_str(),
              "speed-up", "of ideal", "1 proc ms", "speed-up", "of ideal", "ideal");
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    const std::size_t mi = micro_batches[i % std::size(micro_batches)];
    const double m = double(mi), ideal = double(n) * m / (m + double(n) - 1);
    const auto [rb, r] = ranks[i];
    const auto [pb, p] = process[i];
    std::printf("%-6s %3zu | %10.1f %8.2fx %8.0f%% | %10.1f %8.2fx %8.0f%% | %5.2fx\n",
                i < std::size(micro_batches) ? "GPipe" : "1F1B", mi, r, rb / r, 100 * rb / r / ideal, p, pb / p,
                100 * pb / p / ideal, ideal);
  }
  std::printf("per call across %zu ranks (tiny network, batch 1, Naive): %.1f us\n", n, tiny_ms * 1e3);
  std::printf("one message between ranks 0 and 1 (half a round trip, median of 21):");
  for (std::size_t i = 0; i < sizes.size(); ++i) std::printf(" %zu B %.1f us;", sizes[i], one_way[i]);
  std::printf("\n");
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  distributed::Environment env(argc, argv);
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const char *trace = argc > 2 ? argv[2] : nullptr;
  if (env.rank() == 0)
    std::printf("MPI thread level %s\n", env.thread_level() >= MPI_THREAD_MULTIPLE ? "multiple" : "below multiple");
  if (env.size() == 2) return run<Net2>(env, repeats, trace);
  if (env.size() == 3) return run<Net3>(env, repeats, trace);
  if (env.rank() == 0) std::fprintf(stderr, "run on 2 or 3 ranks: mpiexec -n 2 %s\n", argv[0]);
  return 1;
}
