// SPDX-License-Identifier: Apache-2.0
// The cost model (tandem/cost_model.hpp) against the host backend's measured steps: an MLP of 12
// Linear<1024, 1024> + ReLU pairs, balanced over 2, 3 and 4 stages (Balanced), each stage a worker
// thread, batch 512, MSE, SGD.
//
//   bench_host_cost_model [repeats]     (default 5 timed steps per configuration, after one warm-up)
//
// The constants come from this run: the task cost from a tiny two-stage network's step at 256
// one-row micro-batches against its step at one, the link's bytes per second from memcpy of one
// boundary, and for each network, measured beside its rows, the concurrent stages (the hardware
// threads' products side by side against one alone) and the multiply-adds per second (from its
// own Naive step, whose gap is therefore 0). Each row then gives the predicted and the measured
// (median) step and the gap (predicted - measured) / measured; then the prediction again at the
// multiply-adds per second of a micro-batch's rows (batch / m rows run their products slower than
// the whole batch's, by a ratio measured on the network as one stage, which the model's one
// constant does not see). The steps of one network run round-robin, so that a drift in the
// machine's load touches every configuration alike.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <Eigen/Core>
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

// Multiply-adds per second of the whole network on one stage, on batch / m rows for each m of
// `ms`, the networks' steps taken round-robin.
std::vector<double> throughputs(Context &ctx, const std::vector<std::size_t> &ms, double task_seconds, int repeats);

// Stages that compute at once: the hardware threads times one thread's time on a product over
// the time of one product on each thread together (2 where both cores are free to this process;
// near 1 where other work holds one).
double concurrency(int repeats) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<Eigen::MatrixXf> a(threads, Eigen::MatrixXf::Ones(width, width)),
      b(threads, Eigen::MatrixXf::Ones(width, batch / 2)), c(threads, Eigen::MatrixXf(width, batch / 2));
  auto product = [&](unsigned i) { c[i].noalias() = a[i] * b[i]; };
  auto seconds = [](auto &&f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> one, all;
  for (int r = 0; r < repeats; ++r) {
    one.push_back(seconds([&] { product(0); }));
    all.push_back(seconds([&] {
      std::vector<std::thread> workers;
      for (unsigned i = 0; i < threads; ++i) workers.emplace_back(product, i);
      for (auto &w : workers) w.join();
    }));
  }
  return double(threads) * median(one) / median(all);
}

// The table of one network. Its own Naive step, measured in the same round-robin, gives the
// multiply-adds per second (so Naive's gap is 0 by construction, and a drift in the machine's
// load between networks does not enter the other rows); efficiency[m] scales that to batch / m rows.
template <class Net> void table(Context &ctx, CostConstants k, const std::vector<double> &efficiency, int repeats) {
  std::vector<Sched> schedules{schedule::Naive{}};
  for (std::size_t m : {2, 4, 8, 16}) {
    schedules.push_back(schedule::GPipe{.micro_batches = m});
    schedules.push_back(schedule::OneFOneB{.micro_batches = m});
  }
  k.concurrent_stages = concurrency(repeats);
  const auto measured = measure<Net>(ctx, batch, schedules, repeats);
  std::size_t total = 0;
  for (std::size_t c : stage_costs<Net>()) total += c;
  {
    CostConstants free_arithmetic = k; // what Naive spends beyond its arithmetic: tasks and copies
    free_arithmetic.multiply_adds_per_second = 0;
    const double other = predict_step<Net>(batch, schedule::Naive{}, free_arithmetic).seconds;
    k.multiply_adds_per_second = double(total) * double(batch) / (measured[0].ms / 1e3 - other);
  }
  std::printf("\n%zu stages; multiply-adds per row: %zu in the costliest stage, %zu in all; calibrated %.2f G "
              "multiply-adds/s, %.2f concurrent stages; predicted best m %zu\n",
              Net::num_stages, std::ranges::max(stage_costs<Net>()), total, k.multiply_adds_per_second / 1e9,
              k.concurrent_stages, best_micro_batches<Net>(batch, k));
  std::printf("%-6s %4s %7s %13s %12s %7s %6s %15s %7s\n", "sched", "m", "bubble", "predicted ms", "measured ms", "gap",
              "cores", "at R(rows/m) ms", "gap");
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    const auto p = std::visit([&](const auto &s) { return predict_step<Net>(batch, s, k); }, schedules[i]);
    CostConstants small = k;
    small.multiply_adds_per_second *= efficiency[micro_batches_of(schedules[i])];
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

  CostConstants k;
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
  // How much slower the products run on a micro-batch's rows than on the whole batch's: the whole
  // network on one stage, one task each way.
  std::vector<double> efficiency(17, 1.0);
  const auto rates = throughputs(ctx, {1, 2, 4, 8, 16}, k.task_seconds, repeats);
  const double whole = rates[0];
  for (std::size_t i = 1; i < rates.size(); ++i) efficiency[std::size_t{1} << i] = rates[i] / whole;
  std::printf("constants: task %.1f us, link %.2f GB/s; one stage: %.2f G multiply-adds/s on %zu rows, relative to "
              "that on batch / m rows:",
              k.task_seconds * 1e6, k.link_bytes_per_second / 1e9, whole / 1e9, batch);
  for (std::size_t m : {2, 4, 8, 16}) std::printf(" m=%zu %.2f", m, efficiency[m]);
  std::printf("\n");

  table<Deep<2>>(ctx, k, efficiency, repeats);
  table<Deep<3>>(ctx, k, efficiency, repeats);
  table<Deep<4>>(ctx, k, efficiency, repeats);
}

namespace {
std::vector<double> throughputs(Context &ctx, const std::vector<std::size_t> &ms, double task_seconds, int repeats) {
  using One = Deep<1>;
  std::vector<std::unique_ptr<One>> nets;
  std::vector<optim::SGD> opts;
  opts.reserve(ms.size()); // each optimizer stays where it was built
  std::vector<std::vector<float>> xs, ys;
  for (std::size_t m : ms) {
    nets.push_back(std::make_unique<One>(ctx, 1));
    opts.emplace_back(*nets.back(), optim::SGDOptions{.lr = 1e-4f});
    xs.push_back(filled(batch / m * One::in_features, 1.0f));
    ys.push_back(filled(batch / m * One::out_features, 0.1f));
  }
  const loss::MSE loss;
  std::vector<std::vector<double>> seconds(ms.size());
  for (int r = -1; r < repeats; ++r) // r = -1: warm-up
    for (std::size_t i = 0; i < ms.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      nets[i]->train_step(std::span<const float>(xs[i]), std::span<const float>(ys[i]), loss, opts[i]);
      if (r >= 0) seconds[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  std::vector<double> rates;
  for (std::size_t i = 0; i < ms.size(); ++i)
    rates.push_back(double(stage_costs<One>()[0]) * double(batch / ms[i]) / (median(seconds[i]) - task_seconds));
  return rates;
}
} // namespace
