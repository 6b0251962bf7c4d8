// expect: TANDEM_UNKNOWN_INPUT_WIDTH
// SPDX-License-Identifier: Apache-2.0
// The first stage has only width-keeping layers, so nothing fixes the network's input width.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Pipeline<Stage<Device<0>, ReLU>, Stage<Device<1>, Linear<4, 2>>>::num_stages == 2);
#else
static_assert(Pipeline<Stage<Device<0>, Linear<4, 4>, ReLU>, Stage<Device<1>, ReLU, Linear<4, 2>>>::num_stages == 2);
#endif

int main() {}
