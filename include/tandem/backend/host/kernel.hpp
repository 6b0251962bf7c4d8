// SPDX-License-Identifier: Apache-2.0
// host::Kernel<Op>: where an operation that is not in ops.hpp's central list brings its host body.
#pragma once

namespace tandem::backend::host {

// An operation defined in a file of its own (backend/ops/<name>.hpp, or a user's header)
// specialises Kernel<Op> with `static void run(const Op &)`, computing on host memory at once.
// host::Executor::run finds it before the central kernels (kernels.hpp), so an operation plugs in
// without touching a list. The primary template is empty: "no kernel here".
template <class Op> struct Kernel {};

template <class Op>
concept HasKernel = requires(const Op &op) {
  Kernel<Op>::run(op);
};

} // namespace tandem::backend::host
