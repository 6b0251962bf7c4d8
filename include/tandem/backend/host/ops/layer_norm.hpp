// SPDX-License-Identifier: Apache-2.0
// op::LayerNormForward / LayerNormBackward on the host. Sums in double: a row's statistics then
// do not depend on its width's rounding, and float results are float64's rounded.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/layer_norm.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::LayerNormForward<T>> {
  static void run(const op::LayerNormForward<T> &f) {
    const std::size_t n = f.width;
    for (std::size_t r = 0; r < f.rows; ++r) {
      const T *x = f.x + r * n;
      T *y = f.y + r * n;
      double sum = 0;
      for (std::size_t i = 0; i < n; ++i) sum += x[i];
      const double mean = sum / double(n);
      double squares = 0;
      for (std::size_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
      const double rstd = 1.0 / std::sqrt(squares / double(n) + f.eps);
      for (std::size_t i = 0; i < n; ++i)
        y[i] = static_cast<T>((x[i] - mean) * rstd * double(f.weight[i]) + double(f.bias[i]));
      f.mean[r] = static_cast<T>(mean);
      f.rstd[r] = static_cast<T>(rstd);
    }
  }
};

template <class T> struct Kernel<op::LayerNormBackward<T>> {
  static void run(const op::LayerNormBackward<T> &b) {
    const std::size_t n = b.width;
    std::vector<double> dweight(n, 0.0), dbias(n, 0.0);
    for (std::size_t r = 0; r < b.rows; ++r) {
      const T *x = b.x + r * n, *dy = b.dy + r * n;
      const double mean = b.mean[r], rstd = b.rstd[r];
      // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight
      double g_sum = 0, gx_sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const double xhat = (x[i] - mean) * rstd, g = double(dy[i]) * double(b.weight[i]);
        g_sum += g;
        gx_sum += g * xhat;
        dweight[i] += double(dy[i]) * xhat;
        dbias[i] += dy[i];
      }
      if (!b.dx) continue;
      T *dx = b.dx + r * n;
      for (std::size_t i = 0; i < n; ++i) {
        const double xhat = (x[i] - mean) * rstd, g = double(dy[i]) * double(b.weight[i]);
        dx[i] = static_cast<T>(rstd * (g - g_sum / double(n) - xhat * gx_sum / double(n)));
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      b.dweight[i] = static_cast<T>(b.accumulate ? double(b.dweight[i]) + dweight[i] : dweight[i]);
      b.dbias[i] = static_cast<T>(b.accumulate ? double(b.dbias[i]) + dbias[i] : dbias[i]);
    }
  }
};

} // namespace tandem::backend::host
