// expect: (TANDEM_TOKENS_NOT_FIRST.*AtStage<0(UL)?>, [a-z:]*AtLayer<1(UL)?>|AtStage<0(UL)?>, [a-z:]*AtLayer<1(UL)?>.*TANDEM_TOKENS_NOT_FIRST)
// expect-nvcc: TANDEM_TOKENS_NOT_FIRST.*TokenInputCheck<.*\[with S=0UL, L=1UL\]
// SPDX-License-Identifier: Apache-2.0
// An Embedding after another layer: only the network's input holds token ids.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
using Net = Pipeline<Stage<Device<0>, Linear<1, 1>, Embedding<10, 16>, Linear<16, 10>>>;
#else
using Net = Pipeline<Stage<Device<0>, Embedding<10, 16>, Linear<16, 10>>>;
#endif
static_assert(Net::out_features == 10);

int main() {}
