// expect: TANDEM_NO_OPTIMIZER: train_step\(x, y, loss, opt\[, schedule\]\) needs the optimizer as its fourth argument
// SPDX-License-Identifier: Apache-2.0
// train_step without the optimizer: the first error says where it goes (and what computes
// gradients without a step).
#include <cstdint>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

struct Net : Pipeline<Stage<Device<0>, Linear<4, 8>, ReLU>, Stage<Device<1>, Linear<8, 3>>> {
  using Pipeline::Pipeline;
};

int main() {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
  optim::Adam opt(net);
  const std::vector<float> x(2 * 4, 0.5f);
  const std::vector<std::int32_t> y{0, 2};
#ifdef TANDEM_COMPILE_FAIL
  return net.train_step(x, y, loss::CrossEntropy{}, schedule::GPipe{.micro_batches = 2}) > 0 ? 0 : 1;
#else
  return net.train_step(x, y, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 2}) > 0 ? 0 : 1;
#endif
}
