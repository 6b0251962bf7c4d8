// SPDX-License-Identifier: Apache-2.0
// cuda::check and cuda::DeviceGuard: every CUDA and cuBLAS return code becomes a tandem::Error.
#pragma once

#include <cstddef>
#include <ostream>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tandem/error.hpp"

// C++20 under nvcc and cudaGraphInstantiate's flags form need CUDA 12.
#if CUDART_VERSION < 12000
#error "TANDEM_CUDA_TOO_OLD: tandem's CUDA backend needs CUDA 12.0 or newer; build without nvcc for the host backend"
#endif

namespace tandem::backend::cuda {

// Where a failure happened, for its message: the physical GPU and the logical device whose
// stage was running there ("cuda:1 (Device<1>)"). A stage is known to its user by its Device<N>.
struct Site {
  int device = 0;
  std::size_t logical = 0;
};

inline std::ostream &operator<<(std::ostream &os, const Site &site) {
  return os << "cuda:" << site.device << " (Device<" << site.logical << ">)";
}

inline void check(cudaError_t status, const char *call, const Site &site) {
  if (status == cudaSuccess) return;
  // Reading the last error resets it, so that a later, unrelated call does not report this one
  // again (sticky errors, such as a kernel fault, stay regardless).
  (void)cudaGetLastError();
  detail::fail(call, " failed on ", site, ": ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

inline void check(cublasStatus_t status, const char *call, const Site &site) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  detail::fail(call, " failed on ", site, ": ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ")");
}

// Makes `device` current for a scope and restores the previous one. The runtime keeps the
// current device per host thread, and the issuing thread drives every GPU in turn: kernels,
// cuBLAS calls and allocations go to whichever device is current, so each entry point sets it.
class DeviceGuard {
public:
  DeviceGuard(int device, const Site &site) {
    check(cudaGetDevice(&previous_), "cudaGetDevice", site);
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice", site);
  }
  DeviceGuard(const DeviceGuard &) = delete;
  DeviceGuard &operator=(const DeviceGuard &) = delete;
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }

private:
  int previous_ = 0;
};

} // namespace tandem::backend::cuda
