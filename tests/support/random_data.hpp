// SPDX-License-Identifier: Apache-2.0
// Test helpers: fresh random data and error measures.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace tandem::test {

// A different stream for every test run would make failures unreproducible; a fixed seed per
// call site with random values (never zeros or constants) is what the tests need.
template <class T> std::vector<T> uniform(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto &x : v) x = static_cast<T>(dist(gen));
  return v;
}

inline std::vector<std::int32_t> labels(std::size_t n, std::size_t classes, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::int32_t> v(n);
  for (auto &x : v) x = static_cast<std::int32_t>(gen() % classes);
  return v;
}

// max |a - b| / max(max |b|, tiny): the error relative to the reference tensor's scale, so one
// near-zero element cannot dominate. A NaN or infinite difference is infinitely wrong; two equal
// tensors of zeros are 0 apart.
template <class A, class B> double relative_error(std::span<const A> a, std::span<const B> b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    diff = std::isfinite(d) ? std::max(diff, d) : INFINITY;
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}
inline double relative_error(double a, double b) {
  return relative_error(std::span<const double>(&a, 1), std::span<const double>(&b, 1));
}
template <class A, class B> double relative_error(const std::vector<A> &a, const std::vector<B> &b) {
  return relative_error(std::span<const A>(a), std::span<const B>(b));
}

// Every parameter of a network, read back in its order: to show that a call changed nothing.
template <class Net> auto snapshot(const Net &net) {
  std::vector<std::vector<typename Net::value_type>> values;
  for (const auto &p : net.parameters()) values.push_back(p.to_host());
  return values;
}

} // namespace tandem::test
