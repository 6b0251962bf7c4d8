// SPDX-License-Identifier: Apache-2.0
// One training step of a small GPT on the host backend, the number to put beside PyTorch's CPU
// step (bench/torch_gpt_step.py prints that one in the same format): 4 blocks of width 128 with 4
// heads, sequences of 64 characters, a vocabulary of 96, 16 sequences a step, AdamW; two stages
// of two blocks each (example 06's network).
//
//   bench_host_gpt_step [steps]     (default 20 timed steps after 3 warm-up steps, per schedule)
//
// Prints the median step with the 10th and 90th percentiles, for Naive (stage after stage) and
// GPipe with 4 micro-batches (the two stages' worker threads overlap), and the ratio beside the
// ideal n * m / (m + n - 1).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {
constexpr std::size_t V = 96, T = 64, D = 128, H = 4, sequences = 16;
using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, H, T>>;
using Mlp = Residual<LayerNorm<D>, Linear<D, 4 * D>, GELU, Linear<4 * D, D>>;
using Gpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn, Mlp, Attn, Mlp>,
                     Stage<Device<1>, Attn, Mlp, Attn, Mlp, LayerNorm<D>, Linear<D, V>>>;

template <class Sched> double run(const char *name, int steps, const Sched &sched) {
  Context ctx({.host_execution = HostExecution::workers});
  Gpt net(ctx, 1);
  optim::AdamW opt(net, {.lr = 1e-3f});
  Random rng(3);
  std::vector<std::int32_t> x(sequences * T), y(sequences * T);
  for (auto &v : x) v = static_cast<std::int32_t>(rng.next() % V);
  for (auto &v : y) v = static_cast<std::int32_t>(rng.next() % V);
  loss::CrossEntropy loss;
  for (int i = 0; i < 3; ++i) net.train_step(x, y, loss, opt, sched);
  std::vector<double> ms(static_cast<std::size_t>(steps));
  for (auto &t : ms) {
    const auto start = std::chrono::steady_clock::now();
    net.train_step(x, y, loss, opt, sched);
    t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-24s median %8.2f ms   p10 %8.2f   p90 %8.2f   (%d steps)\n", name, ms[ms.size() / 2],
              ms[ms.size() / 10], ms[ms.size() * 9 / 10], steps);
  return ms[ms.size() / 2];
}
} // namespace

int main(int argc, char **argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 20;
  if (steps < 1) {
    std::fprintf(stderr, "usage: %s [steps]\n", argv[0]);
    return 2;
  }
  std::printf("tandem host GPT step: %zu parameters, %zu sequences of %zu tokens, AdamW, 2 stages on 2 worker "
              "threads\n",
              Gpt::parameter_count, sequences, T);
  const double naive = run("Naive", steps, schedule::Naive{});
  const double gpipe = run("GPipe m=4", steps, schedule::GPipe{.micro_batches = 4});
  std::printf("GPipe(4) over Naive: %.2fx (ideal 2 * 4 / 5 = 1.60x)\n", naive / gpipe);
}
