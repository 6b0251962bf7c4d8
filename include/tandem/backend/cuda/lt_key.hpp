// SPDX-License-Identifier: Apache-2.0
// lt::Key: what makes two of cuda::Lt's products the same plan, and its hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include <cublasLt.h>

namespace tandem::backend::cuda::lt {

// The products Lt makes (the matrices of each in make_plan).
enum class Product { linear_forward, weight_gradient, input_gradient };
// The pointers' alignments are part of the key: the heuristic picks an algorithm for the
// alignments it is told (A, B, C, D through the preference, the bias from the pointer it finds
// in the descriptor), and that algorithm may need them on every later call.
struct Key {
  Product product;
  std::size_t batch, in, out;
  cublasLtEpilogue_t epilogue; // whether it reads or writes a bias vector: uses_bias()
  std::uint32_t align_a, align_b, align_d, align_bias;
  std::uint32_t align_aux = 0; // of the aux (a ReLU mask, GELU's input), for the epilogues that use one
  bool operator==(const Key &) const = default;
};
struct KeyHash {
  std::size_t operator()(const Key &k) const noexcept {
    std::size_t h = static_cast<std::size_t>(k.product);
    for (const std::size_t v :
         {k.batch, k.in, k.out, static_cast<std::size_t>(k.epilogue), std::size_t{k.align_a}, std::size_t{k.align_b},
          std::size_t{k.align_d}, std::size_t{k.align_bias}, std::size_t{k.align_aux}})
      h = (h ^ v) * 1099511628211u; // FNV-1a's prime: a multiply mixes each field into every bit above it
    return h;
  }
};
} // namespace tandem::backend::cuda::lt
