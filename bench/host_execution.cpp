// SPDX-License-Identifier: Apache-2.0
// Where a host step should run: on one worker thread per stage, or on the calling thread. The
// sweep behind tandem::host_inline_flops (ContextOptions::host_execution = automatic).
//
//   bench_host_execution [steps]     (default 200 timed steps per configuration, after 20 warm-up)
//
// A two-stage MLP, each stage Linear<W, W>, ReLU, Linear<W, W>, batch 256, trained with SGD under
// Naive and GPipe m=4, for widths W from 16 to 512. Each row names the work of one stage on one
// micro-batch (6 flops per parameter and sample) and the median step time both ways; "workers /
// calling" above 1 means the calling thread is faster. Workers pay a hand-off per task and win
// only where stages overlap on free cores.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {
constexpr std::size_t batch = 256;

template <class Net, class Sched> double median_step_us(HostExecution where, const Sched &sched, int steps) {
  Context ctx({.devices = "host", .host_execution = where});
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.01f});
  loss::MSE loss;
  Random rng(7);
  std::vector<float> x(batch * Net::in_features), y(batch * Net::out_features);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  for (auto &v : y) v = static_cast<float>(rng.uniform(-1, 1));
  for (int i = 0; i < 20; ++i) net.train_step(x, y, loss, opt, sched);
  std::vector<double> us(static_cast<std::size_t>(steps));
  for (auto &t : us) {
    const auto start = std::chrono::steady_clock::now();
    net.train_step(x, y, loss, opt, sched);
    t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  }
  std::nth_element(us.begin(), us.begin() + steps / 2, us.end());
  return us[static_cast<std::size_t>(steps / 2)];
}

template <std::size_t W> void row(int steps) {
  using Net =
      Pipeline<Stage<Device<0>, Linear<W, W>, ReLU, Linear<W, W>>, Stage<Device<1>, Linear<W, W>, ReLU, Linear<W, W>>>;
  const auto report = [&](const char *name, auto sched, std::size_t m) {
    const double flops = 6.0 * double(Net::template stage<0>::parameter_count) * double(batch / m);
    const double workers = median_step_us<Net>(HostExecution::workers, sched, steps);
    const double calling = median_step_us<Net>(HostExecution::calling_thread, sched, steps);
    std::printf("%5zu  %-10s %14.3g  %12.1f  %12.1f  %8.2f  %s\n", W, name, flops, workers, calling, workers / calling,
                host_step_on_calling_thread(m, flops) ? "calling" : "workers");
  };
  report("Naive", schedule::Naive{}, 1);
  report("GPipe m=4", schedule::GPipe{.micro_batches = 4}, 4);
}
} // namespace

int main(int argc, char **argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 200;
  if (steps < 1) {
    std::fprintf(stderr, "usage: bench_host_execution [steps]\n");
    return 2;
  }
  std::printf("two stages of Linear<W,W>, ReLU, Linear<W,W>; batch %zu; SGD; median of %d steps\n", batch, steps);
  std::printf("%5s  %-10s %14s  %12s  %12s  %8s  %s\n", "W", "schedule", "flops/task", "workers us", "calling us",
              "ratio", "automatic");
  row<16>(steps);
  row<32>(steps);
  row<64>(steps);
  row<128>(steps);
  row<256>(steps);
  row<512>(steps);
}
