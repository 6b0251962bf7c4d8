// SPDX-License-Identifier: Apache-2.0
// Random: the deterministic generator parameters are initialised with.
#pragma once

#include <cmath>
#include <cstdint>

namespace tandem {

// splitmix64: small, fast, and its output is fixed by the algorithm alone, so a seed gives the
// same weights with every compiler and standard library (std::uniform_real_distribution does not).
class Random {
public:
  explicit Random(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [lo, hi), from the top 53 bits.
  double uniform(double lo, double hi) {
    const double u = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return lo + (hi - lo) * u;
  }

  // Normal with mean 0 and standard deviation `stddev` (Box-Muller, one draw of two uniforms).
  double normal(double stddev = 1.0) {
    const double u1 = 1.0 - uniform(0.0, 1.0), u2 = uniform(0.0, 1.0); // u1 in (0, 1]: log(u1) is finite
    return stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  // A generator for one named place (stage, layer), independent of how many numbers others drew.
  static Random derive(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
    Random r(seed ^ (0xD1B54A32D192ED03ull * (a + 1)) ^ (0x8CB92BA72F3D8DD7ull * (b + 1)));
    r.next();
    return r;
  }

private:
  std::uint64_t state_;
};

} // namespace tandem
