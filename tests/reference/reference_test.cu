// SPDX-License-Identifier: Apache-2.0
// The PyTorch reference cases on the CUDA backend: the same program, compiled by nvcc so that
// Context maps devices to GPUs; reference_test.cpp picks the GPU tolerance (1e-4) from the backend.
#include "reference_test.cpp"
