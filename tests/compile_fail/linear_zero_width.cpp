// expect: (TANDEM_LINEAR_ZERO_WIDTH.*LinearWidthsArePositive<0(UL)?, 4(UL)?>|LinearWidthsArePositive<0(UL)?, 4(UL)?>.*TANDEM_LINEAR_ZERO_WIDTH)
// expect-nvcc: TANDEM_LINEAR_ZERO_WIDTH.*LinearWidthsArePositive<In, Out> \[with In=0UL, Out=4UL\]
// SPDX-License-Identifier: Apache-2.0
// Linear<0, N> has no input.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Linear<0, 4>::out_features == 4);
#else
static_assert(Linear<1, 4>::out_features == 4);
#endif

int main() {}
