// SPDX-License-Identifier: Apache-2.0
// One network, its stages in two processes: the same program on every rank (SPMD), launched with
//
//   mpiexec -n 2 ./example_05_distributed          (add --oversubscribe where there are fewer cores)
//
// Device<0> lives on rank 0 and Device<1> on rank 1. Rank 0 reads the input, rank 1 the labels;
// each passes an empty span for what its stages do not read, and every rank gets the loss and
// the output. Each rank also trains the same network in one process and fails (exit 1) unless
// the two agree bit for bit.
#include <cstdint>
#include <cstdio>
#include <span>
#include <vector>

#include <tandem/distributed.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;

using Net = Pipeline<Stage<Device<0>, Linear<16, 64>, ReLU, Linear<64, 64>, ReLU>, // rank 0: (b, 64)
                     Stage<Device<1>, Linear<64, 64>, ReLU, Linear<64, 4>>>;       // rank 1: (b, 4)

int main(int argc, char **argv) {
  distributed::Environment env(argc, argv);
  Context ctx(env);
  if (env.rank() == 0) std::printf("%d rank(s)\n%s", env.size(), ctx.describe().c_str());

  Net net(ctx, /*seed=*/42); // the same seed on every rank: each initialises its own stages
  optim::Adam opt(net, {.lr = 1e-3f});
  loss::CrossEntropy ce;

  // A toy task: the class is the quadrant of the first two features.
  constexpr std::size_t batch = 100;
  std::vector<float> x(batch * Net::in_features);
  std::vector<std::int32_t> y(batch);
  Random rng(7);
  for (std::size_t i = 0; i < batch; ++i) {
    for (std::size_t j = 0; j < Net::in_features; ++j) x[i * Net::in_features + j] = float(rng.uniform(-1, 1));
    y[i] = (x[i * Net::in_features] > 0 ? 1 : 0) + (x[i * Net::in_features + 1] > 0 ? 2 : 0);
  }
  const bool first = net.parameter("stage0.0.weight").is_local();
  const bool last = net.parameter("stage1.0.weight").is_local();
  const std::span<const float> my_x = first ? std::span<const float>(x) : std::span<const float>();
  const std::span<const std::int32_t> my_y = last ? std::span<const std::int32_t>(y) : std::span<const std::int32_t>();

  // The reference: the same network in this one process.
  Context single({.devices = "host"});
  Net ref(single, 42);
  optim::Adam ref_opt(ref, {.lr = 1e-3f});

  int failures = 0;
  const schedule::OneFOneB sched{.micro_batches = 8};
  for (int step = 0; step < 20; ++step) {
    const float loss = net.train_step(my_x, my_y, ce, opt, sched);
    const float expected =
        ref.train_step(std::span<const float>(x), std::span<const std::int32_t>(y), ce, ref_opt, sched);
    failures += loss != expected;
    if (env.rank() == 0 && step % 5 == 4) std::printf("step %2d  loss %.6f\n", step + 1, loss);
  }
  const std::vector<float> out = net.forward(my_x, schedule::GPipe{.micro_batches = 4});
  failures += out != ref.forward(std::span<const float>(x), schedule::GPipe{.micro_batches = 4});
  for (const auto &p : net.parameters())
    if (p.is_local()) failures += p.to_host() != ref.parameter(p.name()).to_host();
  std::printf("rank %d: %s\n", env.rank(), failures ? "DIFFERS from one process" : "equals one process bit for bit");
  return failures ? 1 : 0;
}
