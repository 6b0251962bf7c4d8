// SPDX-License-Identifier: Apache-2.0
// Executor::run's dispatch: an operation goes to the run of the backend that owns the executor,
// which calls that backend's kernel for it. Only the operations some code runs are compiled.
#pragma once

#include "tandem/backend/executor.hpp"
#include "tandem/backend/host/executor.hpp"
#include "tandem/error.hpp"

#ifdef TANDEM_CUDA_BACKEND
#include "tandem/backend/cuda/executor.hpp"
#endif

namespace tandem::backend {

// Without the CUDA backend compiled in: the host only. A CUDA executor can reach here only from
// a program that mixes translation units compiled by nvcc with ones that were not.
template <> struct Dispatch<false> {
  template <class Op> static void run(Executor &ex, const Op &op) {
    if (ex.kind() != Kind::host)
      detail::fail("run on ", ex.name(), ": this code was compiled without the CUDA backend (not by nvcc, or with ",
                   "TANDEM_HOST_ONLY), so it runs operations on host executors only");
    static_cast<host::Executor &>(ex).run(op);
  }
};

#ifdef TANDEM_CUDA_BACKEND
template <> struct Dispatch<true> {
  template <class Op> static void run(Executor &ex, const Op &op) {
    if (ex.kind() == Kind::cuda) static_cast<cuda::Executor &>(ex).run(op);
    else static_cast<host::Executor &>(ex).run(op);
  }
};
#endif

} // namespace tandem::backend
