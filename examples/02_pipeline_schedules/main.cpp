// SPDX-License-Identifier: Apache-2.0
// One model trained with Naive, GPipe and 1F1B: the step time of each, whether the stages ran at
// the same time, and a Chrome trace of one step per schedule (open it in https://ui.perfetto.dev).
//
//   example_02_pipeline_schedules [trace-directory]     (default: the current directory)
//
// Fails (exit 1) if the schedules disagree on a loss: a schedule may change speed, never results.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

// Two balanced stages: about the same work on each, so neither waits for the other in steady state.
using Net = Pipeline<Stage<Device<0>, Linear<512, 512>, ReLU, Linear<512, 512>, ReLU>,                   // (b, 512)
                     Stage<Device<1>, Linear<512, 512>, ReLU, Linear<512, 512>, ReLU, Linear<512, 10>>>; // (b, 10)

constexpr std::size_t batch = 256, timed_steps = 5;

struct Result {
  std::vector<float> losses;
  double step_ms = 0;
  double both_busy_ms = 0, traced_step_ms = 0;
  double accuracy = 0; // on the training batch, after the steps
};

// How long both devices were busy at once in the traced step: the overlap the pipeline bought.
std::pair<double, double> overlap_ms(const Timeline &tl) {
  std::vector<std::pair<double, double>> busy[2];
  double begin = 1e300, end = 0;
  for (const auto &s : tl.spans()) {
    begin = std::min(begin, s.start_us);
    end = std::max(end, s.end_us());
    const std::string &track = tl.tracks()[s.track];
    if (track == "Device<0>") busy[0].emplace_back(s.start_us, s.end_us());
    if (track == "Device<1>") busy[1].emplace_back(s.start_us, s.end_us());
  }
  double both = 0; // spans on one track never overlap, so pairwise intersections add up
  for (const auto &[a0, a1] : busy[0])
    for (const auto &[b0, b1] : busy[1]) both += std::max(0.0, std::min(a1, b1) - std::max(a0, b0));
  return {both / 1e3, (end - begin) / 1e3};
}

template <class Sched>
Result train(Context &ctx, const char *name, const Sched &sched, const std::vector<float> &x,
             const std::vector<std::int32_t> &y, const std::string &trace_dir) {
  Net net(ctx, /*seed=*/42); // every schedule starts from the same weights
  optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
  const loss::CrossEntropy loss;
  Result r;
  auto step = [&] { r.losses.push_back(net.train_step(x, y, loss, opt, sched)); };

  step(); // warm-up: allocates this schedule's buffers
  std::vector<double> ms;
  for (std::size_t i = 0; i < timed_steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  r.step_ms = ms[ms.size() / 2];

  // One more step with the timeline on (kept out of the timing: recording adds events).
  Timeline &tl = ctx.timeline();
  tl.clear();
  tl.enable();
  step();
  tl.enable(false);
  std::tie(r.both_busy_ms, r.traced_step_ms) = overlap_ms(tl);
  r.accuracy = metrics::accuracy(net.forward(x), y);
  const std::string path = trace_dir + "/02_" + name + ".trace.json";
  tl.write_chrome_trace(path);
  std::printf("%-6s step %7.1f ms (median of %zu)   both stages busy %6.1f of %6.1f ms in the traced step   %s\n", name,
              r.step_ms, timed_steps, r.both_busy_ms, r.traced_step_ms, path.c_str());
  return r;
}

int main(int argc, char **argv) {
  const std::string trace_dir = argc > 1 ? argv[1] : ".";
  Context ctx;

  // A learnable task: the label is the largest of ten fixed sums of the inputs.
  Random rng(3);
  std::vector<float> x(batch * Net::in_features);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  std::vector<float> sums(batch * 10);
  for (std::size_t i = 0; i < batch; ++i)
    for (std::size_t j = 0; j < Net::in_features; ++j) sums[i * 10 + j % 10] += x[i * Net::in_features + j];
  const std::vector<std::int32_t> y = metrics::argmax(sums, 10);

  const std::size_t m = 4;
  std::printf("batch %zu, %zu micro-batches for GPipe and 1F1B (ideal speed-up on 2 free cores: %.2fx)\n", batch, m,
              2.0 * double(m) / double(m + 1));
  const Result naive = train(ctx, "naive", schedule::Naive{}, x, y, trace_dir);
  const Result gpipe = train(ctx, "gpipe", schedule::GPipe{.micro_batches = m}, x, y, trace_dir);
  const Result ofob = train(ctx, "1f1b", schedule::OneFOneB{.micro_batches = m}, x, y, trace_dir);
  std::printf("%s", ctx.describe().c_str());
  std::printf("speed-up over Naive: GPipe %.2fx, 1F1B %.2fx\n", naive.step_ms / gpipe.step_ms,
              naive.step_ms / ofob.step_ms);
  std::printf("loss: %.6f -> %.6f over %zu steps, training accuracy %.1f %%\n", naive.losses.front(),
              naive.losses.back(), naive.losses.size(), 100 * naive.accuracy);

  bool ok = naive.losses.back() < naive.losses.front();
  if (!ok) std::printf("FAILED: the loss did not decrease\n");
  for (const Result *r : {&gpipe, &ofob}) {
    for (std::size_t i = 0; i < naive.losses.size(); ++i) {
      const double want = naive.losses[i], got = r->losses[i];
      if (!(std::abs(got - want) <= 1e-5 * std::abs(want))) {
        std::printf("FAILED: step %zu: %s loss %.8f, Naive %.8f\n", i, r == &gpipe ? "GPipe" : "1F1B", got, want);
        ok = false;
      }
    }
  }
  return ok ? 0 : 1;
}
