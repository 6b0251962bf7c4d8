// expect: (TANDEM_WIDTH_MISMATCH.*AtStage<1(UL)?>, [a-z:]*AtLayer<2(UL)?>, [a-z:]*Expects<12(UL)?>, [a-z:]*Receives<10(UL)?>|AtStage<1(UL)?>, [a-z:]*AtLayer<2(UL)?>, [a-z:]*Expects<12(UL)?>, [a-z:]*Receives<10(UL)?>.*TANDEM_WIDTH_MISMATCH)
// expect-nvcc: TANDEM_WIDTH_MISMATCH.*WidthCheck<.*\[with S=1UL, L=2UL, E=12UL, R=10UL\]
// SPDX-License-Identifier: Apache-2.0
// Within stage 1, a ReLU passes width 10 on to a Linear that expects 12.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<12, 2>>>;
static_assert(Net::out_features == 2);
#else
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
static_assert(Net::out_features == 2);
#endif

int main() {}
