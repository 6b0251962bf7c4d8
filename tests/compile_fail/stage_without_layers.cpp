// expect: TANDEM_STAGE_WITHOUT_LAYERS
// SPDX-License-Identifier: Apache-2.0
// A Stage with a Device and nothing to run.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Stage<Device<0>>::num_layers == 0);
#else
static_assert(Stage<Device<0>, Identity>::num_layers == 1);
#endif

int main() {}
