// expect: TANDEM_STAGE_NEEDS_DEVICE
// SPDX-License-Identifier: Apache-2.0
// The first argument of a Stage must be a Device.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Stage<Linear<4, 4>, ReLU>::num_layers == 1);
#else
static_assert(Stage<Device<0>, ReLU>::num_layers == 1);
#endif

int main() {}
