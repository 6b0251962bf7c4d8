// SPDX-License-Identifier: Apache-2.0
// cuda::Kernel<Op>: where an operation that is not in ops.hpp's central list brings its CUDA body.
#pragma once

namespace tandem::backend::cuda {

namespace kernels {
struct Launch;
}

// As host::Kernel (backend/host/kernel.hpp): a specialisation with
// `static void run(const Op &, const kernels::Launch &)` enqueues the operation on the launch's
// stream; cuda::Executor::run finds it before the central kernels (kernels.cuh).
template <class Op> struct Kernel {};

template <class Op>
concept HasKernel = requires(const Op &op, const kernels::Launch &l) {
  Kernel<Op>::run(op, l);
};

} // namespace tandem::backend::cuda
