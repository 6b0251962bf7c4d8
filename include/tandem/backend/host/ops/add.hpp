// SPDX-License-Identifier: Apache-2.0
// op::Add on the host.
#pragma once

#include <cstddef>

#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/ops/add.hpp"

namespace tandem::backend::host {

template <class T> struct Kernel<op::Add<T>> {
  static void run(const op::Add<T> &s) {
    for (std::size_t i = 0; i < s.n; ++i) s.y[i] = s.a[i] + s.b[i];
  }
};

} // namespace tandem::backend::host
