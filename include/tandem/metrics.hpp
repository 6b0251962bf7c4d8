// SPDX-License-Identifier: Apache-2.0
// metrics::argmax and metrics::accuracy: what a classifier's outputs say, on the host.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "tandem/error.hpp"

namespace tandem::metrics {

// The class of each row of `outputs` (rows, classes), row-major as forward returns it: the first
// largest value, a NaN counting as the largest (torch.argmax(outputs, dim=1)).
inline std::vector<std::int32_t> argmax(std::span<const float> outputs, std::size_t classes) {
  if (classes == 0 || outputs.size() % classes)
    detail::fail("metrics::argmax: ", outputs.size(), " outputs are not whole rows of ", classes, " classes");
  std::vector<std::int32_t> out(outputs.size() / classes);
  for (std::size_t r = 0; r < out.size(); ++r) {
    const float *row = outputs.data() + r * classes;
    std::size_t best = 0;
    for (std::size_t c = 1; c < classes && !std::isnan(row[best]); ++c)
      if (row[c] > row[best] || std::isnan(row[c])) best = c;
    out[r] = static_cast<std::int32_t>(best);
  }
  return out;
}

// The fraction of rows whose argmax is their label: outputs (rows, classes) as forward returns
// them, one label per row (int32, or int64 as PyTorch keeps them); vectors or spans.
template <class Outputs, class Labels>
requires std::integral<std::remove_cvref_t<decltype(*std::data(std::declval<const Labels &>()))>>
double accuracy(const Outputs &outputs, const Labels &labels) {
  const std::span<const float> out(std::data(outputs), std::size(outputs));
  const std::size_t n = std::size(labels);
  if (n == 0 || out.size() % n)
    detail::fail("metrics::accuracy: ", out.size(), " outputs are not whole rows for ", n, " labels");
  const auto predicted = argmax(out, out.size() / n);
  std::size_t right = 0;
  for (std::size_t r = 0; r < n; ++r) right += predicted[r] == std::data(labels)[r];
  return static_cast<double>(right) / static_cast<double>(n);
}

} // namespace tandem::metrics
