// expect: optim::SGD has no default learning rate \(as in PyTorch\): pass one, as in optim::SGD opt\(net, \{\.lr = 0\.1f\}\)
// SPDX-License-Identifier: Apache-2.0
// optim::SGD made from a network alone: torch.optim.SGD has no default rate, so neither has tandem's.
#include <tandem/tandem.hpp>

using namespace tandem;
using Net = Pipeline<Stage<Device<0>, Linear<4, 4>>>;

int main() {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
#ifdef TANDEM_COMPILE_FAIL
  optim::SGD opt(net);
#else
  optim::SGD opt(net, {.lr = 0.1f});
#endif
  optim::Adam adam(net); // Adam has PyTorch's defaults
  return opt.lr() == 0.1f && adam.lr() == 1e-3f ? 0 : 1;
}
