// SPDX-License-Identifier: Apache-2.0
// A user's program built without CMake (plain_build.sh): it trains a few steps, saves a checkpoint
// with its LR schedule and the weights, loads both into a second network, and fails (exit 1)
// unless the two networks then agree bit for bit. nvcc compiles it too: checkpoint.hpp must
// compile there as everywhere.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;

using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>,                 // stage 0: 10 -> 20
                     Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>; // stage 1: 20 -> 2

int main(int argc, char **argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "plain_program_checkpoint";
  Context ctx;
  Net net(ctx, 42);
  optim::Adam opt(net, {.lr = 1e-2f});
  optim::CosineAnnealingLR sched(opt, {.T_max = 10});
  loss::CrossEntropy ce;
  std::vector<float> x(64 * Net::in_features);
  std::vector<std::int32_t> y(64);
  Random rng(7);
  for (std::size_t i = 0; i < y.size(); ++i) {
    for (std::size_t j = 0; j < Net::in_features; ++j) x[i * Net::in_features + j] = float(rng.uniform(-1, 1));
    y[i] = x[i * Net::in_features] > 0;
  }
  for (int step = 0; step < 3; ++step) {
    net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 4});
    sched.step();
  }
  save_checkpoint(dir, net, opt, sched);
  save(net, dir / "weights.safetensors");

  Net resumed(ctx, 1), weights(ctx, 2);
  optim::Adam resumed_opt(resumed, {.lr = 1e-2f});
  optim::CosineAnnealingLR resumed_sched(resumed_opt, {.T_max = 10});
  load_checkpoint(dir, resumed, resumed_opt, resumed_sched);
  load(weights, dir / "weights.safetensors");
  int failures = 0;
  for (int step = 0; step < 2; ++step) {
    failures += net.train_step(x, y, ce, opt) != resumed.train_step(x, y, ce, resumed_opt);
    sched.step();
    resumed_sched.step();
  }
  failures += opt.lr() != resumed_opt.lr();
  for (const auto &p : net.parameters()) failures += p.to_host() != resumed.parameter(p.name()).to_host();
  failures += net.forward(std::span<const float>(x)) == weights.forward(std::span<const float>(x)); // trained on
  std::printf("%s\n", failures ? "checkpoint round trip FAILED" : "checkpoint round trip: bit for bit");
  return failures ? 1 : 0;
}
