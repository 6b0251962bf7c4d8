// SPDX-License-Identifier: Apache-2.0
// The seed model's training step on the host backend, the number to put beside PyTorch's CPU step
// (bench/torch_seed_step.py prints that one in the same format).
//
//   bench_host_seed_step [steps] [--json PATH]     (default 2000 timed steps, after 50 warm-up steps)
//
// Per-step wall times; the median is printed, with the 10th and 90th percentiles, for Naive and
// for GPipe with 4 micro-batches: as the library runs them by default (a step this small on the
// calling thread), then with each stage on its own worker thread, where hand-offs between the
// threads (forward to stage 1, gradient back to stage 0, the loss back to the caller) dominate.
// --json also writes the medians in bench_gpu_step's schema, for bench/compare.py beside
// `torch_seed_step.py --json` (workloads seed and seed_gpipe4).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

struct Timing {
  double median = 0, p10 = 0, p90 = 0;
};

template <class Sched> Timing run(const char *name, Net &net, optim::SGD &opt, int steps, const Sched &sched) {
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
  return {us[us.size() / 2], us[us.size() / 10], us[us.size() * 9 / 10]};
}

// bench/compare.py's input; the schema is bench_gpu_step's (bench/gpu_step.cu).
bool write_json(const char *path, int steps, const Timing &naive, const Timing &gpipe) {
  std::FILE *f = std::fopen(path, "w");
  if (!f) return false;
  std::fprintf(f, "{\n  \"schema\": \"tandem-bench/1\",\n  \"impl\": \"tandem\",\n  \"device\": \"host\",\n"
                  "  \"machine\": {\"backend\": \"host\", \"workers\": 2},\n  \"skipped\": null,\n  \"results\": [");
  const struct {
    const char *id, *label;
    const Timing &t;
  } rows[] = {{"seed", "seed model 10-20-10-2", naive}, {"seed_gpipe4", "seed model 10-20-10-2, GPipe m=4", gpipe}};
  // 6 * batch * (10*20 + 20*10 + 10*2): the nominal count bench_gpu_step uses.
  const double flop = 6.0 * 64 * 420;
  for (std::size_t i = 0; i < 2; ++i)
    std::fprintf(f,
                 "%s\n    {\"workload\": \"%s\", \"label\": \"%s\", \"variant\": \"tandem\", \"input\": \"host "
                 "memory\", \"batch\": 64, \"steps\": %d, \"warmup\": 50, \"median_us\": %.3f, \"p10_us\": %.3f, "
                 "\"p90_us\": %.3f, \"flop\": %.6g}",
                 i ? "," : "", rows[i].id, rows[i].label, steps, rows[i].t.median, rows[i].t.p10, rows[i].t.p90, flop);
  std::fprintf(f, "\n  ]\n}\n");
  return std::fclose(f) == 0;
}
} // namespace

int main(int argc, char **argv) {
  int steps = 2000;
  const char *json = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
    else steps = std::atoi(argv[i]);
  }
  if (steps < 1) {
    std::fprintf(stderr, "usage: bench_host_seed_step [steps] [--json PATH]\n");
    return 2;
  }
  std::printf("seed model 10-20-10-2, batch 64, SGD lr 0.01, host backend\n");
  // The default (HostExecution::automatic runs a step this small on the calling thread), then the
  // same steps with every stage on its own worker thread, for the hand-offs' cost beside it.
  Context ctx({.devices = "host"});
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.01f});
  const Timing naive = run("tandem Naive", net, opt, steps, schedule::Naive{});
  const Timing gpipe = run("tandem GPipe m=4", net, opt, steps, schedule::GPipe{.micro_batches = 4});
  Context threaded({.devices = "host", .host_execution = HostExecution::workers});
  Net on_workers(threaded, 42);
  optim::SGD opt_workers(on_workers, {.lr = 0.01f});
  run("tandem Naive, workers", on_workers, opt_workers, steps, schedule::Naive{});
  run("tandem GPipe m=4, workers", on_workers, opt_workers, steps, schedule::GPipe{.micro_batches = 4});
  if (json && !write_json(json, steps, naive, gpipe)) {
    std::fprintf(stderr, "bench_host_seed_step: cannot write %s\n", json);
    return 1;
  }
}
