// expect: optim::SGD has no default learning rate \(as in PyTorch\): pass one, as in optim::SGD opt\(net, \{\.lr = 0\.1f\}\)
// SPDX-License-Identifier: Apache-2.0
// optim::SGD's options without a rate: the other fields have PyTorch's defaults, lr has none.
#include <tandem/tandem.hpp>

using namespace tandem;
using Net = Pipeline<Stage<Device<0>, Linear<4, 4>>>;

int main() {
  Context ctx({.devices = "host"});
  Net net(ctx, 1);
#ifdef TANDEM_COMPILE_FAIL
  optim::SGD opt(net, {.momentum = 0.9f});
#else
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
#endif
  return opt.lr() == 0.1f ? 0 : 1;
}
