// expect: (TANDEM_NOT_A_LAYER.*LayerArgumentCheck<1(UL)?, (int|double)>|LayerArgumentCheck<1(UL)?, (int|double)>.*TANDEM_NOT_A_LAYER)
// expect-nvcc: TANDEM_NOT_A_LAYER.*LayerArgumentCheck<Index, L> \[with Index=1UL, L=double\]
// SPDX-License-Identifier: Apache-2.0
// A type that is not a layer, as the second layer of a stage: the error names its index and type.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Stage<Device<0>, Linear<4, 4>, double>::num_layers == 2);
#else
static_assert(Stage<Device<0>, Linear<4, 4>, Tanh>::num_layers == 2);
#endif

int main() {}
