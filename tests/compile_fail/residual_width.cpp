// expect: (TANDEM_RESIDUAL_WIDTH.*ResidualWidthCheck<[a-z:]*Receives<8(UL)?>, [a-z:]*Expects<6(UL)?>|ResidualWidthCheck<[a-z:]*Receives<8(UL)?>, [a-z:]*Expects<6(UL)?>.*TANDEM_RESIDUAL_WIDTH)
// expect-nvcc: TANDEM_RESIDUAL_WIDTH.*ResidualWidthCheck<.*\[with R=8UL, G=6UL\]
// SPDX-License-Identifier: Apache-2.0
// y = x + f(x) with an f that narrows 8 to 6.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Block = Residual<LayerNorm<8>, Linear<8, 6>>;
#else
using Block = Residual<LayerNorm<8>, Linear<8, 8>>;
#endif
static_assert(Block::in_features == 8);

int main() {}
