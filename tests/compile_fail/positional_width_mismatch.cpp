// expect: (TANDEM_WIDTH_MISMATCH.*AtStage<0(UL)?>, [a-z:]*AtLayer<1(UL)?>, [a-z:]*Expects<32(UL)?>, [a-z:]*Receives<16(UL)?>|AtStage<0(UL)?>, [a-z:]*AtLayer<1(UL)?>, [a-z:]*Expects<32(UL)?>, [a-z:]*Receives<16(UL)?>.*TANDEM_WIDTH_MISMATCH)
// expect-nvcc: TANDEM_WIDTH_MISMATCH.*WidthCheck<.*\[with S=0UL, L=1UL, E=32UL, R=16UL\]
// SPDX-License-Identifier: Apache-2.0
// Token embeddings of width 16, positions of width 32.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Embedding<10, 16>, PositionalEmbedding<8, 32>, Linear<32, 10>>>;
#else
using Net = Pipeline<Stage<Device<0>, Embedding<10, 32>, PositionalEmbedding<8, 32>, Linear<32, 10>>>;
#endif
static_assert(Net::out_features == 10);

int main() {}
