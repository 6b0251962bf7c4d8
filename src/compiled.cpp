// SPDX-License-Identifier: Apache-2.0
// tandem::compiled: the host kernels of every operation, float and double, compiled once. A program
// linked with it (TANDEM_COMPILED) declares them and parses neither their bodies nor Eigen; the
// header-only tandem::tandem compiles, in each translation unit, the kernels that unit runs.
#include "tandem/backend/host/kernels_eigen.hpp"

namespace tandem::backend::host::kernels {

#define TANDEM_KERNEL(Op)                                                                                              \
  template void run<float>(const op::Op<float> &);                                                                     \
  template void run<double>(const op::Op<double> &);
TANDEM_OPS(TANDEM_KERNEL)
#undef TANDEM_KERNEL
template void bias_gradient<float>(const op::LinearBackward<float> &); // (ReducedProducts')
template void relu_before<float>(const op::LinearBackward<float> &);

} // namespace tandem::backend::host::kernels
