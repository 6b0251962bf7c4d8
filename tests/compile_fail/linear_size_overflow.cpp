// expect: (TANDEM_SIZE_OVERFLOW.*Linear(ParameterCountCheck)?<4294967296(UL)?, 4294967296(UL)?>|Linear(ParameterCountCheck)?<4294967296(UL)?, 4294967296(UL)?>.*TANDEM_SIZE_OVERFLOW)
// expect-nvcc: TANDEM_SIZE_OVERFLOW.*LinearParameterCountCheck<In, Out> \[with In=4294967296UL, Out=4294967296UL\]
// SPDX-License-Identifier: Apache-2.0
// Linear<2^32, 2^32> would train 2^64 + 2^32 values: the count wraps to 2^32.
#include <tandem/tandem.hpp>

using namespace tandem;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Linear<std::size_t{1} << 32, std::size_t{1} << 32>::out_features > 0);
#else
static_assert(Linear<std::size_t{1} << 28, std::size_t{1} << 28>::out_features > 0); // 2^56 values fit
#endif

int main() {}
