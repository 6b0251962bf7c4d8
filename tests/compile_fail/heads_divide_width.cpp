// expect: (TANDEM_HEADS_DIVIDE_WIDTH.*HeadsDivideWidth<10(UL)?, 3(UL)?>|HeadsDivideWidth<10(UL)?, 3(UL)?>.*TANDEM_HEADS_DIVIDE_WIDTH)
// expect-nvcc: TANDEM_HEADS_DIVIDE_WIDTH.*HeadsDivideWidth<.*\[with D=10UL, Heads=3UL\]
// SPDX-License-Identifier: Apache-2.0
// Three heads cannot split a width of 10.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Linear<4, 10>, CausalSelfAttention<10, 3, 8>, Linear<10, 2>>>;
#else
using Net = Pipeline<Stage<Device<0>, Linear<4, 10>, CausalSelfAttention<10, 2, 8>, Linear<10, 2>>>;
#endif
static_assert(Net::out_features == 2);

int main() {}
