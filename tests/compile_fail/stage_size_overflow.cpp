// expect: (TANDEM_SIZE_OVERFLOW.*ParameterCountCheck<[a-z:]*InStage|ParameterCountCheck<[a-z:]*InStage.*TANDEM_SIZE_OVERFLOW)
// expect-nvcc: TANDEM_SIZE_OVERFLOW.*ParameterCountCheck<Where, [a-z:]*Counts<N...>> \[with Where=tandem::detail::InStage, N=<[0-9UL, ]*>\]
// SPDX-License-Identifier: Apache-2.0
// Layers whose parameters fit one by one but whose sum in one stage does not.
#include <tandem/tandem.hpp>

using namespace tandem;

constexpr std::size_t wide = std::size_t{1} << 30, narrow = std::size_t{1} << 29;

#ifdef TANDEM_COMPILE_FAIL
static_assert(Stage<Device<0>, Linear<narrow, wide>, Linear<wide, narrow>>::parameter_count > 0);
#else
static_assert(Stage<Device<0>, Linear<narrow, wide>>::parameter_count > 0);
#endif

int main() {}
