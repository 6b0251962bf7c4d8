// expect: TANDEM_TARGET_TYPE: this loss \(MSE\) takes targets of the network's value type
// SPDX-License-Identifier: Apache-2.0
// Integer targets for MSE, whose targets are values like the outputs: the first error says so.
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
  optim::SGD opt(net, {.lr = 0.1f});
  const std::vector<float> x(2 * 4, 0.5f);
#ifdef TANDEM_COMPILE_FAIL
  const std::vector<std::int32_t> y(2 * 3, 1);
#else
  const std::vector<float> y(2 * 3, 1.0f);
#endif
  return net.train_step(x, y, loss::MSE{}, opt) > 0 ? 0 : 1;
}
