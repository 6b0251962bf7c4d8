// expect: (TANDEM_WIDTH_MISMATCH.*AtStage<1(UL)?>, [a-z:]*AtLayer<0(UL)?>, [a-z:]*Expects<30(UL)?>, [a-z:]*Receives<20(UL)?>|AtStage<1(UL)?>, [a-z:]*AtLayer<0(UL)?>, [a-z:]*Expects<30(UL)?>, [a-z:]*Receives<20(UL)?>.*TANDEM_WIDTH_MISMATCH)
// expect-nvcc: TANDEM_WIDTH_MISMATCH.*WidthCheck<.*\[with S=1UL, L=0UL, E=30UL, R=20UL\]
// SPDX-License-Identifier: Apache-2.0
// Stage 0 ends at width 20, stage 1 starts with a Linear that expects 30: the error names stage 1, layer 0, 30 and 20.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<30, 10>, ReLU>>;
static_assert(Net::out_features == 10);
#else
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU>>;
static_assert(Net::out_features == 10);
#endif

int main() {}
