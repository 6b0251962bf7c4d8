// SPDX-License-Identifier: Apache-2.0
// The losses' per-row and per-element formulas: one definition that the host kernels, the
// whole-network step (small_network.hpp) and CUDA's squared error compute with. (CUDA's
// cross-entropy kernel splits a row over a warp's lanes, so it sums in another order.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <math.h> // NAN

#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/host_device.hpp"

namespace tandem::backend {

// Softmax cross-entropy of one row of `classes` logits against `label`, numerically stable:
// returns the row's loss (log-sum-exp minus the label's logit, in double as the sums add it) and
// writes the gradient of the logits, scale * (softmax - one-hot), where `drow` is given. A label
// outside [0, classes) gives NaN and a zero gradient: the caller says why (the status word).
template <class T>
TANDEM_HOST_DEVICE inline double cross_entropy_row(const T *row, std::size_t classes, std::int32_t label, T scale,
                                                   T *drow) {
  T max = row[0];
  for (std::size_t j = 1; j < classes; ++j) max = row[j] > max ? row[j] : max;
  T sum = 0;
  for (std::size_t j = 0; j < classes; ++j) sum += exp_of(row[j] - max);
  const T log_sum = log_of(sum);
  if (label < 0 || static_cast<std::size_t>(label) >= classes) {
    if (drow)
      for (std::size_t j = 0; j < classes; ++j) drow[j] = T(0);
    return static_cast<double>(NAN); // (numeric_limits' members are host functions to nvcc)
  }
  const auto at = static_cast<std::size_t>(label);
  if (drow)
    for (std::size_t j = 0; j < classes; ++j)
      drow[j] = scale * (exp_of(row[j] - max - log_sum) - (j == at ? T(1) : T(0)));
  return static_cast<double>(log_sum - (row[at] - max));
}

// One element of the squared error: returns (pred - target)^2 in double and writes its gradient,
// 2 * scale * (pred - target) with two_scale = 2 * scale, where `dpred` is given.
template <class T> TANDEM_HOST_DEVICE inline double squared_error_at(T pred, T target, T two_scale, T *dpred) {
  const T diff = pred - target;
  if (dpred) *dpred = two_scale * diff;
  return static_cast<double>(diff) * static_cast<double>(diff);
}

} // namespace tandem::backend
