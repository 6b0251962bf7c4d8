// SPDX-License-Identifier: Apache-2.0
// Precision: the arithmetic of float matrix products (ContextOptions::precision).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace tandem {

// Only the products' inputs change: parameters, activations, gradients and optimizer state stay
// float32 (the "master weights"), each product accumulates in float32, and the bias, activations,
// loss and optimizer run in float32 as before. Double-precision work is never reduced.
enum class Precision {
  fp32, // every product exact to float32: PyTorch's default matmul
  tf32, // inputs rounded to TF32 (10-bit mantissa) on tensor cores:
        // torch.backends.cuda.matmul.allow_tf32 = True
  bf16, // inputs rounded to bfloat16 (7-bit mantissa), float32 accumulation: the products of
        // torch.autocast(dtype=torch.bfloat16), whose activations, though, are also rounded
};

inline constexpr const char *name(Precision p) {
  switch (p) {
  case Precision::fp32: return "fp32";
  case Precision::tf32: return "tf32";
  case Precision::bf16: return "bf16";
  }
  return "?";
}

// `v` as a product of precision `p` reads it: its mantissa rounded to the nearest value with
// p's bits (ties to even), exponent kept; NaN and infinity unchanged. The host backend's
// emulation of reduced-precision products, and the tests' reference. (A GPU's conversion may
// differ from this in the last kept bit; the tolerances for reduced precision allow for it.)
inline float round_to(Precision p, float v) {
  if (p == Precision::fp32 || !std::isfinite(v)) return v;
  const int dropped = p == Precision::bf16 ? 16 : 13; // of float32's 23 mantissa bits
  const auto u = std::bit_cast<std::uint32_t>(v);
  const std::uint32_t half = (std::uint32_t{1} << (dropped - 1)) - 1 + ((u >> dropped) & 1);
  return std::bit_cast<float>((u + half) & ~((std::uint32_t{1} << dropped) - 1));
}
inline double round_to(Precision, double v) { return v; } // double products stay double

} // namespace tandem
