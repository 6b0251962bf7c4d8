// SPDX-License-Identifier: Apache-2.0
// host kernels: the operations of backend/ops.hpp on host memory. Declared here, computed with
// Eigen in kernels_eigen.hpp, which a program linked with tandem::compiled (TANDEM_COMPILED) never
// parses: there every kernel was compiled once, in float and double (src/compiled.cpp).
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "tandem/backend/ops.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::host::kernels {

// run(op) for every operation.
#define TANDEM_DECLARE_KERNEL(Op) template <class T> void run(const op::Op<T> &);
TANDEM_OPS(TANDEM_DECLARE_KERNEL)
#undef TANDEM_DECLARE_KERNEL

// The parts of a Linear's backward that are not products: its bias gradient (the column sums of
// dy), and the gradient through the ReLU before it (relu_before).
template <class T> void bias_gradient(const op::LinearBackward<T> &b);
template <class T> void relu_before(const op::LinearBackward<T> &b);

// Products of reduced precision (Precision::tf32, bf16), emulated: every operand of a float
// product is rounded (round_to) into scratch memory first, and Eigen's float32 product then sums
// exactly the values tensor cores would be given. What is not a product (the bias, its
// gradient, the ReLU of a fused Linear) reads the float32 values, as on a GPU.
class ReducedProducts {
public:
  explicit ReducedProducts(Precision p) : precision_(p) {}

  // The operations it runs. Its runs are templates so that a product's kernel is compiled only
  // where something runs it.
  template <class Op>
  static constexpr bool takes = std::is_same_v<Op, op::Gemm<float>> || std::is_same_v<Op, op::LinearForward<float>> ||
                                std::is_same_v<Op, op::LinearBackward<float>>;

  template <class T> void run(const op::Gemm<T> &g) {
    static_assert(takes<op::Gemm<T>>);
    if (g.m == 0 || g.n == 0 || g.k == 0) return kernels::run(g);
    auto r = g;
    r.a = rounded(0, g.a, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda);
    r.b = rounded(1, g.b, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb);
    kernels::run(r);
  }
  template <class T> void run(const op::LinearForward<T> &f) {
    static_assert(takes<op::LinearForward<T>>);
    auto r = f;
    r.x = rounded(0, f.x, f.batch, f.in, f.in);
    r.weight = rounded(1, f.weight, f.out, f.in, f.in);
    kernels::run(r);
  }
  template <class T> void run(const op::LinearBackward<T> &b) {
    static_assert(takes<op::LinearBackward<T>>);
    auto r = b;
    r.x = rounded(0, b.x, b.batch, b.in, b.in);
    r.weight = rounded(1, b.weight, b.out, b.in, b.in);
    r.dy = rounded(2, b.dy, b.batch, b.out, b.out);
    r.dbias = nullptr;
    r.relu_before = false;
    kernels::run(r);
    bias_gradient(b); // from the unrounded dy
    relu_before(b);   // where the unrounded x is positive, as a GPU's mask from the forward says
  }

private:
  // A (rows, cols) matrix with leading dimension ld, rounded into scratch slot `slot` (same ld).
  const float *rounded(std::size_t slot, const float *src, std::size_t rows, std::size_t cols, std::size_t ld) {
    if (!src || rows == 0 || cols == 0) return src;
    auto &dst = scratch_[slot];
    const std::size_t n = (rows - 1) * ld + cols;
    if (dst.size() < n) dst.resize(n); // grows to the largest operand, then stays
    for (std::size_t i = 0; i < n; ++i) dst[i] = round_to(precision_, src[i]);
    return dst.data();
  }

  Precision precision_;
  std::vector<float> scratch_[3];
};

#ifdef TANDEM_COMPILED
#define TANDEM_EXTERN_KERNEL(Op)                                                                                       \
  extern template void run<float>(const op::Op<float> &);                                                              \
  extern template void run<double>(const op::Op<double> &);
TANDEM_OPS(TANDEM_EXTERN_KERNEL)
#undef TANDEM_EXTERN_KERNEL
extern template void bias_gradient<float>(const op::LinearBackward<float> &);
extern template void relu_before<float>(const op::LinearBackward<float> &);
#endif

} // namespace tandem::backend::host::kernels

#ifndef TANDEM_COMPILED
#include "tandem/backend/host/kernels_eigen.hpp"
#endif
