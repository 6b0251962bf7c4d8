// SPDX-License-Identifier: Apache-2.0
// Helpers of the GPU tests: skipping where there is no GPU, random data, device arrays, comparison.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tandem/backend/cuda/executor.hpp"

#include "../support/random_data.hpp" // test::uniform, test::labels

// CI builds these tests with nvcc on machines without a GPU (and runs `ctest -LE gpu`); where
// they do run without one, each case says so and passes rather than failing.
#define TANDEM_SKIP_WITHOUT_GPU()                                                                                      \
  do {                                                                                                                 \
    if (tandem::backend::cuda::device_count() == 0) {                                                                  \
      MESSAGE("skipped: no CUDA GPU (or no driver) on this machine");                                                  \
      return;                                                                                                          \
    }                                                                                                                  \
  } while (false)

namespace tandem::test {

// An array in one executor's memory, filled from and read back to the host.
template <class T> class DeviceArray {
public:
  DeviceArray(backend::Executor &ex, const std::vector<T> &host) : ex_(ex), n_(host.size()) {
    data_ = static_cast<T *>(ex.allocate(n_ * sizeof(T)));
    ex.upload(data_, host.data(), n_ * sizeof(T));
  }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  ~DeviceArray() {
    try {
      ex_.synchronize();
    } catch (...) {
    }
    ex_.deallocate(data_);
  }
  T *get() const { return data_; }
  std::vector<T> to_host() const {
    std::vector<T> out(n_);
    ex_.download(out.data(), data_, n_ * sizeof(T));
    ex_.synchronize();
    return out;
  }

private:
  backend::Executor &ex_;
  std::size_t n_;
  T *data_ = nullptr;
};

// Runs one operation as the pipeline does (inside a task) and waits, so a failure surfaces here.
template <class Op> void run_on(backend::Executor &ex, const Op &op) {
  ex.submit([&ex, op] { ex.run(op); });
  ex.synchronize();
}

// Relative error of each value, measured against no less than 1% of the largest magnitude: a
// value near zero is a difference of larger ones, and its own relative error says nothing.
template <class T>
void check_close(const std::vector<T> &got, const std::vector<T> &want, double tolerance, const std::string &what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  double largest = 0;
  for (T w : want) largest = std::max(largest, std::abs(static_cast<double>(w)));
  const double floor = std::max(largest * 1e-2, 1e-30);
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const double err = (std::isnan(g) != std::isnan(w)) ? INFINITY
                       : std::isnan(g)                  ? 0
                                                        : std::abs(g - w) / std::max(std::abs(w), floor);
    if (err > worst) worst = err, at = i;
  }
  std::ostringstream os;
  os << what << ": worst relative error " << worst << " at " << at;
  if (!got.empty()) os << " (got " << got[at] << ", want " << want[at] << ")";
  CHECK_MESSAGE(worst <= tolerance, os.str());
}

template <class T> constexpr double tolerance = sizeof(T) == 4 ? 1e-4 : 1e-10;

} // namespace tandem::test
