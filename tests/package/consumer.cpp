// SPDX-License-Identifier: Apache-2.0
// A downstream program, built against an installed tandem and against its source tree.
#include <tandem/tandem.hpp>

#include <vector>

using Net = tandem::Pipeline<tandem::Stage<tandem::Device<0>, tandem::Linear<4, 3>, tandem::ReLU>,
                             tandem::Stage<tandem::Device<1>, tandem::Linear<3, 2>>>;
static_assert(Net::in_features == 4);
static_assert(Net::out_features == 2);

int main() {
  tandem::Context ctx({.devices = "host"});
  Net net(ctx, 1);
  auto y = net.forward(std::vector<float>(2 * 4, 0.5f)); // (2, 2)
  return y.size() == 4 ? 0 : 1;
}
