// SPDX-License-Identifier: Apache-2.0
// The seed model's training step on the host backend, the number to put beside PyTorch's CPU step
// (bench/torch_seed_step.py prints that one in the same format).
//
//   bench_host_seed_step [steps]     (default 2000 timed steps, after 50 warm-up steps)
//
// Per-step wall times; the median is printed, with the 10th and 90th percentiles, for Naive and
// for GPipe with 4 micro-batches. A step this small is dominated by hand-offs between the two
// worker threads (forward to stage 1, gradient back to stage 0, the loss back to the caller).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

template <class Sched> void run(const char *name, Net &net, optim::SGD &opt, int steps, const Sched &sched) {
  constexpr std::size_t batch = 64;
  Random rng(3);
  std::vector<float> x(batch * Net::in_features);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  std::vector<std::int32_t> y(batch);
  for (auto &v : y) v = static_cast<std::int32_t>(rng.next() % Net::out_features);
  loss::CrossEntropy loss;
  for (int i = 0; i < 50; ++i) net.train_step(x, y, loss, opt, sched);
  std::vector<double> us(static_cast<std::size_t>(steps));
  for (auto &t : us) {
    const auto start = std::chrono::steady_clock::now();
    net.train_step(x, y, loss, opt, sched);
    t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  }
  std::sort(us.begin(), us.end());
  std::printf("%-28s median %8.1f us   p10 %8.1f   p90 %8.1f   (%d steps)\n", name, us[us.size() / 2],
              us[us.size() / 10], us[us.size() * 9 / 10], steps);
}
} // namespace

int main(int argc, char **argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 2000;
  Context ctx({.devices = "host"});
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.01f});
  std::printf("seed model 10-20-10-2, batch 64, SGD lr 0.01, host backend (two worker threads)\n");
  run("tandem Naive", net, opt, steps, schedule::Naive{});
  run("tandem GPipe m=4", net, opt, steps, schedule::GPipe{.micro_batches = 4});
}
