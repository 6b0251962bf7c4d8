// SPDX-License-Identifier: Apache-2.0
// What the reference programs and their PyTorch scripts exchange: numbers written so that Python
// reads back exactly the values tandem used, tensors read back by name, and the norm-wise error
// every comparison uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::reference {

// %.17g of a value's double round-trips, so Python sees the float (or double) tandem uses.
inline std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

template <class T> std::string array(const std::vector<T> &v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += number(static_cast<double>(v[i]));
  }
  return s + "]";
}

using Tensors = std::map<std::string, std::vector<double>>;

// One tensor a line: `name count v1 v2 ...`.
inline Tensors read_tensors(const std::filesystem::path &file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  Tensors t;
  std::string name;
  std::size_t n = 0;
  while (in >> name >> n) {
    auto &v = t[name];
    v.resize(n);
    for (auto &x : v) in >> x;
    if (!in) throw std::runtime_error("truncated tensor '" + name + "' in " + file.string());
  }
  return t;
}

// max_i |got_i - want_i| / max(max_i |want_i|, 1e-30); a NaN is infinitely wrong.
inline double norm_wise_error(const std::vector<double> &got, const std::vector<double> &want) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(got[i] - want[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / std::max(scale, 1e-30);
}

} // namespace tandem::reference
