// SPDX-License-Identifier: Apache-2.0
// Example 01 compiled by nvcc: the same source as main.cpp, so that on a machine with GPUs each
// stage runs on its GPU (without one, the program says so and runs on the host backend).
#include "main.cpp"
