// expect: (TANDEM_SEQUENCE_LENGTH_MISMATCH.*AtStage<1(UL)?>, [a-z:]*AtLayer<0(UL)?>, [a-z:]*SequenceOf<8(UL)?>, [a-z:]*SequenceOf<16(UL)?>|AtStage<1(UL)?>, [a-z:]*AtLayer<0(UL)?>, [a-z:]*SequenceOf<8(UL)?>, [a-z:]*SequenceOf<16(UL)?>.*TANDEM_SEQUENCE_LENGTH_MISMATCH)
// expect-nvcc: TANDEM_SEQUENCE_LENGTH_MISMATCH.*SequenceLengthCheck<.*\[with S=1UL, L=0UL, A=8UL, B=16UL\]
// SPDX-License-Identifier: Apache-2.0
// Positions for sequences of 8, attention over sequences of 16.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Embedding<10, 16>, PositionalEmbedding<8, 16>>,
                     Stage<Device<1>, CausalSelfAttention<16, 2, 16>, Linear<16, 10>>>;
#else
using Net = Pipeline<Stage<Device<0>, Embedding<10, 16>, PositionalEmbedding<8, 16>>,
                     Stage<Device<1>, CausalSelfAttention<16, 2, 8>, Linear<16, 10>>>;
#endif
static_assert(Net::out_features == 10);

int main() {}
