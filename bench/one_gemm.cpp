// SPDX-License-Identifier: Apache-2.0
// The yardstick of scripts/compile-times.sh: the smallest useful Eigen program, one float product
// of row-major matrices, as tandem's host backend computes one.
#include <cstdio>

#include <Eigen/Core>

int main() {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Matrix a = Matrix::Random(64, 32), b = Matrix::Random(32, 16);
  Matrix c(64, 16);
  c.noalias() = a * b;
  std::printf("%f\n", static_cast<double>(c.sum()));
}
