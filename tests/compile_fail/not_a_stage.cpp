// expect: (TANDEM_NOT_A_STAGE.*StageArgumentCheck<1(UL)?, [a-z:]*Linear<4(UL)?, 2(UL)?> ?>|StageArgumentCheck<1(UL)?, [a-z:]*Linear<4(UL)?, 2(UL)?> ?>.*TANDEM_NOT_A_STAGE)
// expect-nvcc: TANDEM_NOT_A_STAGE.*StageArgumentCheck<Index, S> \[with Index=1UL, S=tandem::Linear<4UL, 2UL>\]
// SPDX-License-Identifier: Apache-2.0
// A layer where a Stage belongs.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Pipeline<Stage<Device<0>, Linear<4, 4>>, Linear<4, 2>>::num_stages == 2);
#else
static_assert(Pipeline<Stage<Device<0>, Linear<4, 4>>, Stage<Device<0>, Linear<4, 2>>>::num_stages == 2);
#endif

int main() {}
