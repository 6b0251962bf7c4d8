// expect: (TANDEM_BALANCED_DEVICES.*BalancedDeviceCountCheck<4(UL)?, 3(UL)?>|BalancedDeviceCountCheck<4(UL)?, 3(UL)?>.*TANDEM_BALANCED_DEVICES)
// expect-nvcc: TANDEM_BALANCED_DEVICES.*BalancedDeviceCountCheck<.*\[with Devices=4UL, Layers=3UL\]
// SPDX-License-Identifier: Apache-2.0
// Balanced asked for more devices than it has layers to give them.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Balanced<4, Linear<8, 8>, ReLU, Linear<8, 2>>::num_stages == 4);
#else
static_assert(Balanced<3, Linear<8, 8>, ReLU, Linear<8, 2>>::num_stages == 3);
#endif

int main() {}
