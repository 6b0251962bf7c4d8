// SPDX-License-Identifier: Apache-2.0
// op::Dropout on the host.
#pragma once

#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/dropout.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::Dropout<T>> {
  static void run(const op::Dropout<T> &d) {
    for (std::size_t i = 0; i < d.n; ++i) d.y[i] = op::dropout_keeps(d.key, d.first + i, d.p) ? d.x[i] * d.scale : T(0);
  }
};

} // namespace tandem::backend::host
