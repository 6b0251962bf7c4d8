// SPDX-License-Identifier: Apache-2.0
// TANDEM_HOST_DEVICE: a function both backends compile, the CUDA one for its kernels too.
#pragma once

#if defined(__CUDACC__)
#define TANDEM_HOST_DEVICE __host__ __device__
#else
#define TANDEM_HOST_DEVICE
#endif
