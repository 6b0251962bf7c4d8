// SPDX-License-Identifier: Apache-2.0
// tandem::compiled: the host kernels of every operation, float and double, and the runtime's parts
// that depend on the value type alone, compiled once. A program linked with it (TANDEM_COMPILED)
// declares them and parses neither the kernels' bodies nor Eigen; the header-only tandem::tandem
// compiles, in each translation unit, what that unit uses.
// This file defines what the headers' TANDEM_INLINE functions are (detail/compiled.hpp).
#define TANDEM_COMPILING
#include "tandem/backend/host/executor.hpp"
#include "tandem/backend/host/kernels_eigen.hpp"
#include "tandem/backend/host/worker.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/ranks.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_in_flight.hpp"
#include "tandem/pipeline/step_trace.hpp"
#include "tandem/timeline.hpp"

namespace tandem::backend::host::kernels {

#define TANDEM_KERNEL(Op)                                                                                              \
  template void run<float>(const op::Op<float> &);                                                                     \
  template void run<double>(const op::Op<double> &);
TANDEM_OPS(TANDEM_KERNEL)
#undef TANDEM_KERNEL
template void bias_gradient<float>(const op::LinearBackward<float> &); // (ReducedProducts')
template void relu_before<float>(const op::LinearBackward<float> &);

} // namespace tandem::backend::host::kernels

// The runtime's parts that depend on the value type only, and on no backend: what every network
// in float (or double) shares, which the headers declare extern under TANDEM_COMPILED.
namespace tandem::detail {

template struct StageState<float>;
template struct StageState<double>;
template class NetworkStepInFlight<float>;
template class NetworkStepInFlight<double>;
template void StepTrace::begin<float>(Timeline &, std::span<StageState<float>>);
template void StepTrace::begin<double>(Timeline &, std::span<StageState<double>>);

} // namespace tandem::detail
