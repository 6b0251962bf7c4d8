// SPDX-License-Identifier: Apache-2.0
// The seed experiment: a small network split over two devices, trained with cross-entropy and
// SGD. Stage 0 holds Linear(10, 20) + ReLU, stage 1 Linear(20, 10) + ReLU + Linear(10, 2);
// activations cross forward and their gradients cross back, inserted by the pipeline. With fewer
// than two GPUs (or no nvcc) it runs on the host backend, as the seed falls back to the CPU.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>,                 // part1: (64, 10) -> (64, 20)
                     Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>; // part2: (64, 20) -> (64, 2)

int main() {
  constexpr std::size_t batch = 64, epochs = 5;
  Context ctx;
  Net net(ctx, /*seed=*/42);
  optim::SGD opt(net, {.lr = 0.01f});
  loss::CrossEntropy loss;

  // One random batch, as the seed draws: x ~ N(0, 1), labels in {0, 1}.
  Random rng(7);
  std::vector<float> x(batch * Net::in_features);
  for (auto &v : x) // Box-Muller
    v = static_cast<float>(std::sqrt(-2 * std::log(1 - rng.uniform(0, 1))) *
                           std::cos(2 * std::numbers::pi * rng.uniform(0, 1)));
  std::vector<std::int32_t> y(batch);
  for (auto &v : y) v = static_cast<std::int32_t>(rng.next() % Net::out_features);

  std::printf("Device mapping:\n%s", ctx.describe().c_str());
  std::printf("part1 (stage0.0.weight) lives on %s\n", net.parameter("stage0.0.weight").executor().name().c_str());
  std::printf("part2 (stage1.0.weight) lives on %s\n", net.parameter("stage1.0.weight").executor().name().c_str());

  float first = 0, last = 0;
  for (std::size_t epoch = 0; epoch < epochs; ++epoch) {
    last = net.train_step(x, y, loss, opt);
    if (epoch == 0) first = last;
    std::printf("Epoch %zu, Loss: %.6f\n", epoch + 1, last);
  }

  // The seed's estimate of the traffic, C = sum s_i * b * 2, against what the pipeline moved.
  const std::size_t estimate = Net::boundary_bytes(batch);
  std::printf(
      "Boundary traffic per step: C = 20 * %zu * 2 = %zu values = %zu bytes; measured %zu bytes over %zu steps\n",
      batch, estimate / sizeof(float), estimate, net.transferred_bytes(), epochs);
  // Amdahl's law bounds the speed-up of n devices when a fraction a of the work runs in parallel.
  for (double a : {0.5, 0.9, 0.99})
    std::printf("Amdahl bound for n = 2 devices, parallel fraction %.2f: S = %.3f\n", a, 1 / (1 - a + a / 2));

  bool ok = true;
  if (!(std::isfinite(last) && last < first)) {
    std::printf("FAILED: the loss did not decrease (%.6f -> %.6f)\n", first, last);
    ok = false;
  }
  // Every step moves C bytes, or none where both stages share one GPU.
  if (net.transferred_bytes() != epochs * estimate && net.transferred_bytes() != 0) {
    std::printf("FAILED: moved %zu bytes, expected %zu\n", net.transferred_bytes(), epochs * estimate);
    ok = false;
  }
  return ok ? 0 : 1;
}
