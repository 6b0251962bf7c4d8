// SPDX-License-Identifier: Apache-2.0
// The cost model (tandem/cost_model.hpp) against the host backend's measured steps: an MLP of 12
// Linear<1024, 1024> + ReLU pairs, balanced over 2, 3 and 4 stages (Balanced), each stage a worker
// thread, batch 512, MSE, SGD.
//
//   bench_host_cost_model [repeats]     (default 5 timed steps per configuration, after one warm-up)
//
// The constants come from this run, before the table: multiply-adds per second from the network
// on one stage under Naive (the whole batch, one task per direction), the task cost from a tiny
// two-stage network's step at 256 one-row micro-batches against its step at one, the link's
// bytes per second from memcpy of one boundary, the concurrent stages from the hardware threads.
// Each row then gives the predicted and the measured (median) step, and the gap
// (predicted - measured) / measured; then the prediction again with the multiply-adds per second
// measured on a micro-batch's rows (batch / m: smaller products run slower than the whole
// batch's, which the model's one constant does not see). The steps of one network run
// round-robin, so that a drift in the machine's load touches every configuration alike.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <tandem/tandem.hpp>

#include "schedules_workload.hpp"

#ifdef _OPENMP
#error "build the benchmark without OpenMP: Eigen would then split products over threads of its own"
#endif

using namespace tandem;
using bench::filled, bench::median;

namespace {

constexpr std::size_t width = 1024, batch = 512, pairs = 12;

template <std::size_t N, std::size_t... J>
auto deep(std::index_sequence<J...>) -> Balanced<N, std::conditional_t<J % 2 == 0, Linear<width, width>, ReLU>...>;
template <std::size_t N> using Deep = decltype(deep<N>(std::make_index_sequence<2 * pairs>{}));

using Tiny = Pipeline<Stage<Device<0>, Linear<16, 16>>, Stage<Device<1>, Linear<16, 16>>>;

using Sched = std::variant<schedule::Naive, schedule::GPipe, schedule::OneFOneB>;

double cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e3 + double(t.tv_nsec) / 1e6;
}

struct Measured {
  double ms = 0, cores = 0;
};

// Median wall time (and CPU over wall) of `repeats` steps of each schedule, taken round-robin
// after one warm-up step each.
template <class Net>
std::vector<Measured> measure(Context &ctx, std::size_t rows, const std::vector<Sched> &schedules, int repeats) {
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 1e-4f});
  const loss::MSE loss;
  const auto x = filled(rows * Net::in_features, 1.0f), y = filled(rows * Net::out_features, 0.1f);
  auto step = [&](const Sched &s) {
    std::visit(
        [&](const auto &sched) {
          net.train_step(std::span<const float>(x), std::span<const float>(y), loss, opt, sched);
        },
        s);
  };
  std::vector<std::vector<double>> ms(schedules.size()), cores(schedules.size());
  for (const auto &s : schedules) step(s);
  for (int r = 0; r < repeats; ++r)
    for (std::size_t i = 0; i < schedules.size(); ++i) {
      const double c0 = cpu_ms();
      const auto t0 = std::chrono::steady_clock::now();
      step(schedules[i]);
      const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      ms[i].push_back(wall);
      cores[i].push_back((cpu_ms() - c0) / wall);
    }
  std::vector<Measured> out;
  for (std::size_t i = 0; i < schedules.size(); ++i) out.push_back({median(ms[i]), median(cores[i])});
  return out;
}

const char *name_of(const Sched &s) {
  return std::holds_alternative<schedule::Naive>(s)   ? "Naive"
         : std::holds_alternative<schedule::GPipe>(s) ? "GPipe"
                                                      : "1F1B";
}
std::size_t micro_batches_of(const Sched &s) {
  return std::visit(
      [](const auto &sched) -> std::size_t {
        if constexpr (requires { sched.micro_batches; }) return sched.micro_batches;
        else return 1;
      },
      s);
}

// Multiply-adds per second of the whole network on one stage, on `rows` rows at once.
double throughput(Context &ctx, std::size_t rows, double task_seconds, int repeats);

// at_rows[m]: the throughput on a micro-batch of batch / m rows, for the second prediction.
template <class Net> void table(Context &ctx, const CostConstants &k, const std::vector<double> &at_rows, int repeats) {
  std::vector<Sched> schedules{schedule::Naive{}};
  for (std::size_t m : {2, 4, 8, 16}) {
    schedules.push_back(schedule::GPipe{.micro_batches = m});
    schedules.push_back(schedule::OneFOneB{.micro_batches = m});
  }
  const auto measured = measure<Net>(ctx, batch, schedules, repeats);
  std::printf(
      "\n%zu stages, %zu multiply-adds per row in the costliest stage (of %zu), predicted best m %zu\n",
      Net::num_stages, std::ranges::max(stage_costs<Net>()),
      [] {
        std::size_t t = 0;
        for (std::size_t c : stage_costs<Net>()) t += c;
        return t;
      }(),
      best_micro_batches<Net>(batch, k));
  std::printf("%-6s %4s %7s %13s %12s %7s %6s %15s %7s\n", "sched", "m", "bubble", "predicted ms", "measured ms", "gap",
              "cores", "at R(rows/m) ms", "gap");
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    const auto p = std::visit([&](const auto &s) { return predict_step<Net>(batch, s, k); }, schedules[i]);
    CostConstants small = k;
    small.multiply_adds_per_second = at_rows[micro_batches_of(schedules[i])];
    const auto q = std::visit([&](const auto &s) { return predict_step<Net>(batch, s, small); }, schedules[i]);
    const double ms = measured[i].ms;
    std::printf("%-6s %4zu %7.2f %13.1f %12.1f %+6.0f%% %6.2f %15.1f %+6.0f%%\n", name_of(schedules[i]),
                micro_batches_of(schedules[i]), p.bubble, p.seconds * 1e3, ms, (p.seconds * 1e3 - ms) / ms * 100,
                measured[i].cores, q.seconds * 1e3, (q.seconds * 1e3 - ms) / ms * 100);
  }
  std::fflush(stdout);
}

} // namespace

int main(int argc, char **argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  Context ctx({.devices = "host", .host_execution = HostExecution::workers});
  std::printf("host backend, %u hardware threads; MLP of %zu x (Linear %zu->%zu + ReLU), batch %zu, MSE, SGD; "
              "medians of %d steps\n",
              std::thread::hardware_concurrency(), pairs, width, width, batch, repeats);

  CostConstants k{.concurrent_stages = std::max(1u, std::thread::hardware_concurrency())};
  // The task cost: a tiny network's step at 256 one-row micro-batches, less its step at one.
  {
    const std::size_t rows = 256;
    const auto t = measure<Tiny>(ctx, rows, {schedule::Naive{}, schedule::GPipe{.micro_batches = rows}}, repeats * 4);
    k.task_seconds = std::max(0.0, (t[1].ms - t[0].ms) / 1e3 / double(rows - 1));
  }
  // The link: memcpy of one boundary's values.
  {
    std::vector<float> a = filled(batch * width, 1.0f), b(a.size());
    std::vector<double> s;
    for (int r = 0; r < 50; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), a.size() * sizeof(float));
      s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      a[std::size_t(r)] = b[std::size_t(r) + 1]; // keeps the copies from being folded away
    }
    k.link_bytes_per_second = double(a.size() * sizeof(float)) / median(s);
  }
  // The arithmetic: the whole network on one stage, one task each way, on the whole batch (the
  // model's constant) and on the micro-batches' rows (the second prediction's).
  k.multiply_adds_per_second = throughput(ctx, batch, k.task_seconds, repeats);
  std::vector<double> at_rows(17, k.multiply_adds_per_second);
  for (std::size_t m : {2, 4, 8, 16}) at_rows[m] = throughput(ctx, batch / m, k.task_seconds, repeats);
  std::printf("constants: %.2f G multiply-adds/s, task %.1f us, link %.2f GB/s, %zu concurrent stages\n",
              k.multiply_adds_per_second / 1e9, k.task_seconds * 1e6, k.link_bytes_per_second / 1e9,
              k.concurrent_stages);
  std::printf("G multiply-adds/s on batch / m rows:");
  for (std::size_t m : {2, 4, 8, 16}) std::printf(" m=%zu %.2f", m, at_rows[m] / 1e9);
  std::printf("\n");

  table<Deep<2>>(ctx, k, at_rows, repeats);
  table<Deep<3>>(ctx, k, at_rows, repeats);
  table<Deep<4>>(ctx, k, at_rows, repeats);
}

namespace {
double throughput(Context &ctx, std::size_t rows, double task_seconds, int repeats) {
  using One = Deep<1>;
  const auto t = measure<One>(ctx, rows, {schedule::Naive{}}, repeats);
  return double(stage_costs<One>()[0]) * double(rows) / (t[0].ms / 1e3 - task_seconds);
}
} // namespace
