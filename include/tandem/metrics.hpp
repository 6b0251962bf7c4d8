// SPDX-License-Identifier: Apache-2.0
// metrics::argmax, metrics::accuracy and metrics::evaluate: what a network's outputs say, on the host.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "tandem/backend/loss_math.hpp"
#include "tandem/error.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/loss/mse.hpp"
#include "tandem/schedule/naive.hpp"

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
// them, one label per row (int32, or int64 as PyTorch keeps them); vectors or spans. Labels of
// another type are one static_assert that says so (TANDEM_LABEL_TYPE, as train_step's).
template <class Outputs, class Labels> double accuracy(const Outputs &outputs, const Labels &labels) {
  using Label = std::remove_cvref_t<decltype(*std::data(labels))>;
  static_assert(std::integral<Label> && !std::same_as<Label, bool>,
                "TANDEM_LABEL_TYPE: metrics::accuracy takes int32 class indices (int64 accepted), one per row: "
                "std::vector<std::int32_t> labels, not floating-point labels");
  const std::span<const float> out(std::data(outputs), std::size(outputs));
  const std::size_t n = std::size(labels);
  if (n == 0 || out.size() % n)
    detail::fail("metrics::accuracy: ", out.size(), " outputs are not whole rows for ", n, " labels");
  const auto predicted = argmax(out, out.size() / n);
  std::size_t right = 0;
  for (std::size_t r = 0; r < n; ++r) right += predicted[r] == std::data(labels)[r];
  return static_cast<double>(right) / static_cast<double>(n);
}

// What evaluate() measures: the mean loss (in double) and, for a classifier, the accuracy.
struct Evaluation {
  double loss = 0;
  std::optional<double> accuracy;
};

// The loss of `net` on (x, y) with no gradient and no update, by forward alone (under any
// schedule; across processes every rank passes y, and x where it runs the first stage): the mean
// over rows of CrossEntropy, with the accuracy, or the mean squared error of MSE. A label outside
// [0, out_features) or targets of the wrong length throw Error.
template <class Net, class X, class Y, class Sched = schedule::Naive>
Evaluation evaluate(Net &net, const X &x, const Y &y, const loss::CrossEntropy & /*loss*/, const Sched &sched = {}) {
  using T = typename Net::value_type;
  const std::vector<T> out = net.forward(std::span<const T>(std::data(x), std::size(x)), sched);
  const std::size_t classes = Net::out_features, rows = out.size() / classes;
  if (std::size(y) != rows) detail::fail("metrics::evaluate: ", rows, " rows of output, but ", std::size(y), " labels");
  double sum = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const auto label = std::data(y)[r];
    if (label < 0 || static_cast<std::size_t>(label) >= classes)
      detail::fail("metrics::evaluate: label ", r, " is ", label, ", outside [0, ", classes, ")");
    sum += backend::cross_entropy_row(out.data() + r * classes, classes, static_cast<std::int32_t>(label), T(0),
                                      static_cast<T *>(nullptr));
  }
  std::vector<float> as_float(out.begin(), out.end());
  return {sum / static_cast<double>(rows), accuracy(as_float, y)};
}
template <class Net, class X, class Y, class Sched = schedule::Naive>
Evaluation evaluate(Net &net, const X &x, const Y &y, const loss::MSE & /*loss*/, const Sched &sched = {}) {
  using T = typename Net::value_type;
  const std::vector<T> out = net.forward(std::span<const T>(std::data(x), std::size(x)), sched);
  if (std::size(y) != out.size())
    detail::fail("metrics::evaluate: ", out.size(), " outputs, but ", std::size(y), " targets");
  double sum = 0;
  for (std::size_t i = 0; i < out.size(); ++i)
    sum += backend::squared_error_at(out[i], static_cast<T>(std::data(y)[i]), T(0), static_cast<T *>(nullptr));
  return {sum / static_cast<double>(out.size()), std::nullopt};
}

} // namespace tandem::metrics
