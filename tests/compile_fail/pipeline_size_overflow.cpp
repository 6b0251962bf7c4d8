// expect: (TANDEM_SIZE_OVERFLOW.*ParameterCountCheck<[a-z:]*InPipeline|ParameterCountCheck<[a-z:]*InPipeline.*TANDEM_SIZE_OVERFLOW)
// expect-nvcc: TANDEM_SIZE_OVERFLOW.*ParameterCountCheck<Where, [a-z:]*Counts<N...>> \[with Where=tandem::detail::InPipeline, N=<[0-9UL, ]*>\]
// SPDX-License-Identifier: Apache-2.0
// Stages whose parameters fit one by one but whose sum does not: 16 x (2^59 + 2^30) values.
#include <tandem/tandem.hpp>

using namespace tandem;

constexpr std::size_t wide = std::size_t{1} << 30, narrow = std::size_t{1} << 29;
using Half = Stage<Device<0>, Linear<narrow, wide>>; // 2^59 + 2^30 values
using Back = Stage<Device<1>, Linear<wide, narrow>>; // 2^59 + 2^29

#ifdef TANDEM_COMPILE_FAIL
static_assert(Pipeline<Half, Back>::parameter_count > 0);
#else
static_assert(Pipeline<Half>::parameter_count > 0);
#endif

int main() {}
