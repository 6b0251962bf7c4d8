// SPDX-License-Identifier: Apache-2.0
// The operations every backend implements, one argument struct each.
//
// A layer, loss or optimizer describes its work with these structs and hands them to its
// stage's Executor; the host backend runs them with Eigen, the CUDA backend with cuBLAS and
// kernels. All matrices are row-major; pointers refer to memory of the executing device.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem::backend {

enum class Activation { identity, relu, sigmoid, tanh, gelu, gelu_tanh };

namespace op {

// C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, row-major with leading dimensions.
template <class T> struct Gemm {
  bool trans_a = false, trans_b = false;
  std::size_t m = 0, n = 0, k = 0;
  T alpha = 1;
  const T *a = nullptr;
  std::size_t lda = 0;
  const T *b = nullptr;
  std::size_t ldb = 0;
  T beta = 0;
  T *c = nullptr;
  std::size_t ldc = 0;
};

// y (batch, out) = x (batch, in) * weight^T + bias, weight (out, in) as in PyTorch. A backend may
// fuse the bias (and, with `activation`, the activation) into the product's epilogue.
template <class T> struct LinearForward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *x = nullptr, *weight = nullptr, *bias = nullptr;
  T *y = nullptr;
};

// dx = dy * weight (skipped when dx is null), dweight += dy^T * x, dbias += column sums of dy.
// Gradients accumulate so that micro-batches add up to the whole batch's gradient.
template <class T> struct LinearBackward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *x = nullptr, *weight = nullptr, *dy = nullptr;
  T *dx = nullptr, *dweight = nullptr, *dbias = nullptr;
};

template <class T> struct ActivationForward {
  Activation kind = Activation::identity;
  std::size_t n = 0;
  const T *x = nullptr;
  T *y = nullptr;
};

// dx = dy * f'(x); backends may read x or y (the saved output), whichever PyTorch uses.
template <class T> struct ActivationBackward {
  Activation kind = Activation::identity;
  std::size_t n = 0;
  const T *x = nullptr, *y = nullptr, *dy = nullptr;
  T *dx = nullptr;
};

template <class T> struct Fill {
  std::size_t n = 0;
  T value = 0;
  T *dst = nullptr;
};

// Softmax cross-entropy on rows of logits: *loss += scale * sum_r (logsumexp(row r) - row r[label r]),
// dlogits = scale * (softmax - onehot). Either output may be null.
template <class T> struct CrossEntropy {
  std::size_t rows = 0, classes = 0;
  const T *logits = nullptr;
  const std::int32_t *labels = nullptr;
  T scale = 1;
  T *loss = nullptr, *dlogits = nullptr;
};

// *loss += scale * sum (pred - target)^2, dpred = 2 * scale * (pred - target).
template <class T> struct SquaredError {
  std::size_t n = 0;
  const T *pred = nullptr, *target = nullptr;
  T scale = 1;
  T *loss = nullptr, *dpred = nullptr;
};

// torch.optim.SGD for one flat parameter block. `first` seeds the momentum buffer with the
// gradient, as PyTorch does on its first step.
template <class T> struct SgdStep {
  std::size_t n = 0;
  T *params = nullptr;
  const T *grads = nullptr;
  T *momentum_buffer = nullptr;
  T lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, first = false;
};

// torch.optim.Adam (decoupled = false) and AdamW (decoupled = true); step counts from 1.
template <class T> struct AdamStep {
  std::size_t n = 0;
  T *params = nullptr;
  const T *grads = nullptr;
  T *exp_avg = nullptr, *exp_avg_sq = nullptr, *max_exp_avg_sq = nullptr;
  T lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  bool decoupled = false, amsgrad = false;
  std::int64_t step = 1;
};

} // namespace op
} // namespace tandem::backend
