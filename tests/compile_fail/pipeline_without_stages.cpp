// expect: TANDEM_PIPELINE_WITHOUT_STAGES
// SPDX-License-Identifier: Apache-2.0
// A Pipeline of nothing.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Pipeline<>::num_stages == 0);
#else
static_assert(Pipeline<Stage<Device<0>, Linear<3, 2>>>::num_stages == 1);
#endif

int main() {}
