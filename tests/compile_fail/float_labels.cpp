// expect: TANDEM_LABEL_TYPE: CrossEntropy takes int32 class indices \(int64 accepted\)
// SPDX-License-Identifier: Apache-2.0
// Float labels for CrossEntropy: the first error says it takes int32 class indices. The twin
// passes int64 labels, PyTorch's habit, which train_step accepts.
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
#ifdef TANDEM_COMPILE_FAIL
  const std::vector<float> y{0, 2};
#else
  const std::vector<std::int64_t> y{0, 2};
#endif
  return net.train_step(x, y, loss::CrossEntropy{}, opt) > 0 ? 0 : 1;
}
