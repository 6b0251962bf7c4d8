// SPDX-License-Identifier: Apache-2.0
// The operations every backend implements, one argument struct each.
//
// A layer, loss or optimizer describes its work with these structs and hands them to its
// stage's Executor; the host backend runs them with Eigen, the CUDA backend with cuBLAS and
// kernels. All matrices are row-major; pointers refer to memory of the executing device.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <math.h> // pow, sqrt: the same names on the host and in CUDA

#include "tandem/backend/host_device.hpp"

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

// y (batch, out) = act(x (batch, in) * weight^T + bias), weight (out, in) as in PyTorch, act
// identity or relu. A backend may fuse the bias and the ReLU into the product's epilogue.
// relu_mask (with relu; may be null): Executor::relu_mask_bytes(batch, out) bytes where it may
// keep which outputs were positive, in a format of its own, for the LinearBackward of the next
// Linear (its relu_before). Whether it does is the backend's affair: one that did not reads x
// there instead.
template <class T> struct LinearForward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *x = nullptr, *weight = nullptr, *bias = nullptr;
  T *y = nullptr;
  Activation activation = Activation::identity;
  void *relu_mask = nullptr;
  // With an activation: where z = x * weight^T + bias, the activation's input, is kept beside its
  // output y (null: nowhere). A Linear followed by GELU(tanh) needs it, as that backward reads z;
  // a GPU writes it from the product's epilogue (cuBLASLt's GELU_AUX_BIAS).
  T *pre_activation = nullptr;
};

// dx = dy * weight (skipped when dx is null), dweight += dy^T * x, dbias += column sums of dy.
// Gradients accumulate so that micro-batches add up to the whole batch's gradient; with
// `accumulate` off they are set instead (a step's first micro-batch: no zeroing beforehand).
//
// relu_before: x is the output of a ReLU that follows another Linear (the one before), and this
// operation takes the ReLU's backward into its own: dx is the gradient at the ReLU's input,
// (dy * weight) where x is not <= 0 and 0 elsewhere (PyTorch's threshold_backward on the ReLU's
// output: a NaN passes),
// and dbias_before (may be null) gets that Linear's bias gradient, dx's column sums, set or added
// as `accumulate` says. relu_mask is the mask the Linear before was given in its LinearForward
// (null: none): a backend that kept one there may read it instead of x, so a GPU applies the
// ReLU's gradient and sums the bias gradient in the product's epilogue (cuBLASLt DRELU_BGRAD).
template <class T> struct LinearBackward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *x = nullptr, *weight = nullptr, *dy = nullptr;
  T *dx = nullptr, *dweight = nullptr, *dbias = nullptr;
  bool accumulate = true;
  bool relu_before = false;
  const void *relu_mask = nullptr;
  T *dbias_before = nullptr;
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
// dlogits = scale * (softmax - onehot). Either output may be null. A label outside [0, classes)
// reads nothing outside its row: the loss becomes NaN and, where `invalid` is given, *invalid is
// set to 1 (labels already on the device are checked there, without a round trip to the host).
template <class T> struct CrossEntropy {
  std::size_t rows = 0, classes = 0;
  const T *logits = nullptr;
  const std::int32_t *labels = nullptr;
  T scale = 1;
  T *loss = nullptr, *dlogits = nullptr;
  std::int32_t *invalid = nullptr;
};

// *loss += scale * sum (pred - target)^2, dpred = 2 * scale * (pred - target). A target that is not
// finite sets *invalid to 1 where `invalid` is given (as CrossEntropy's labels).
template <class T> struct SquaredError {
  std::size_t n = 0;
  const T *pred = nullptr, *target = nullptr;
  T scale = 1;
  T *loss = nullptr, *dpred = nullptr;
  std::int32_t *invalid = nullptr;
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
  // Device memory read when the step runs: nonzero there (a bad label found on the device during
  // this step) and the step changes nothing.
  const std::int32_t *skip = nullptr;
};

// torch.optim.Adam (decoupled = false) and AdamW (decoupled = true); step counts from 1.
// Adam's step number kept in the device's memory, so that a captured step replays with the next
// number: a step reads `steps`, updates as step steps + 1, and raises `steps` (unless skipped).
// The scalars are that step's bias-correction terms, in double as PyTorch computes them; a
// backend may use them as scratch between its kernels.
struct AdamCount {
  std::int64_t steps = 0;
  double step_size = 0, bias2_sqrt = 0;
};

template <class T> struct AdamStep {
  std::size_t n = 0;
  T *params = nullptr;
  const T *grads = nullptr;
  T *exp_avg = nullptr, *exp_avg_sq = nullptr, *max_exp_avg_sq = nullptr;
  T lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  bool decoupled = false, amsgrad = false;
  std::int64_t step = 1;              // the step's number (PyTorch's, from 1), unless `count` is set
  const std::int32_t *skip = nullptr; // as SgdStep's
  AdamCount *count = nullptr;         // device memory; where set, the number comes from there
};

// Adam's count after step number `step`: the step's scalars in double (PyTorch's Python floats),
// rounded to T once by the caller: beta2^t rounded to float is up to 6e-8 off, and 1 - beta2^t is small
// early on (2e-4 at t = 2 with beta2 = 0.9999), so float scalars would move updates by 1e-5.
TANDEM_HOST_DEVICE inline AdamCount adam_scalars(double lr, double beta1, double beta2, std::int64_t step) {
  const double t = static_cast<double>(step);
  return {step, lr / (1 - pow(beta1, t)), sqrt(1 - pow(beta2, t))};
}

// A stage of small layers (Linear and elementwise activations, every width at most small_width,
// at most small_layers of them) that a backend runs as one operation (see small_stage.hpp): the
// pipeline uses it where a stage qualifies, in place of one operation per layer.
inline constexpr std::size_t small_width = 64, small_layers = 8;
// Rows one SmallBackward may have: its one block of threads goes through them in turn.
inline constexpr std::size_t small_rows = 1024;
template <class T> struct SmallLayer {
  bool linear = false; // Linear (weight (out, in), bias (out) or null); else an activation
  Activation kind = Activation::identity;
  std::size_t in = 0, out = 0;
  const T *weight = nullptr, *bias = nullptr;
  T *dweight = nullptr, *dbias = nullptr; // accumulated by SmallBackward
  const T *x = nullptr;                   // this layer's input (rows, in)
  T *y = nullptr;                         // its output (rows, out): written forward, read backward
};
// The ops' fixed arrays, which device code indexes: std::array's members are constexpr host
// functions, which nvcc lets device code call only under --expt-relaxed-constexpr.
template <class T, std::size_t N> struct Array {
  T elems[N];
  TANDEM_HOST_DEVICE constexpr T &operator[](std::size_t i) { return elems[i]; }
  TANDEM_HOST_DEVICE constexpr const T &operator[](std::size_t i) const { return elems[i]; }
  TANDEM_HOST_DEVICE constexpr T *data() { return elems; }
  TANDEM_HOST_DEVICE constexpr const T *data() const { return elems; }
  TANDEM_HOST_DEVICE static constexpr std::size_t size() { return N; }
  constexpr T *begin() { return elems; }
  constexpr T *end() { return elems + N; }
  constexpr const T *begin() const { return elems; }
  constexpr const T *end() const { return elems + N; }
};
// Every layer forward, in order: layers[j].y = layer j of layers[j].x (layers[0].x the input).
// The limits its arrays and shared memory set, for the code that decides to use it.
template <class T> struct SmallForward {
  static constexpr std::size_t max_layers = small_layers, max_width = small_width;
  std::size_t rows = 0, count = 0;
  Array<SmallLayer<T>, small_layers> layers{};
};
// Every layer backward, last first: dy is the gradient of the last layer's output; dx (null: not
// needed) gets the first layer's input gradient; each Linear's dweight and dbias are added to.
template <class T> struct SmallBackward {
  static constexpr std::size_t max_layers = small_layers, max_width = small_width, max_rows = small_rows;
  std::size_t rows = 0, count = 0;
  Array<SmallLayer<T>, small_layers> layers{};
  const T *dy = nullptr;
  T *dx = nullptr;
  // false: the gradients are set rather than added to (a step's first micro-batch), which saves
  // zeroing them beforehand.
  bool accumulate = true;
};

// A whole training step of a network whose stages are all small and share one device's memory
// (see small_network.hpp): every layer of every stage forward, the loss, every layer backward, as
// one operation. `layers` is the stages' layers in order; each layer's x is the previous one's y
// (the stage boundaries are read in place), and layers[0].x is the network's input.
inline constexpr std::size_t small_network_layers = 16;
enum class LossKind { cross_entropy, squared_error };
// The loss of an op::SmallNetwork: CrossEntropy's (labels, one per row) or SquaredError's
// (targets, as wide as the output), with their formulas, scale and status word.
template <class T> struct SmallLoss {
  LossKind kind = LossKind::cross_entropy;
  const std::int32_t *labels = nullptr;
  const T *targets = nullptr;
  T scale = 1;
  T *loss = nullptr;               // the step's loss: set by the first micro-batch, then added to
  std::int32_t *invalid = nullptr; // set to 1 by a bad label or target (0 first, by the first)
};
// An optimizer's update of one parameter group, described rather than run (SgdStep's or
// AdamStep's, as `kind` says), for a SmallNetwork to apply at its end: the step's last launch
// then also updates every stage.
enum class UpdateKind { none, sgd, adam };
template <class T> struct Update {
  UpdateKind kind = UpdateKind::none;
  SgdStep<T> sgd{};
  AdamStep<T> adam{};
};
inline constexpr std::size_t small_network_updates = 8;
template <class T> struct SmallNetwork {
  static constexpr std::size_t max_layers = small_network_layers, max_updates = small_network_updates,
                               max_rows = small_rows;
  std::size_t rows = 0, count = 0;
  Array<SmallLayer<T>, small_network_layers> layers{};
  SmallLoss<T> loss{};
  // Applied in order after the backward (a step's last micro-batch), each one skipped where its
  // `skip` says the step found a bad target.
  Array<Update<T>, small_network_updates> updates{};
  std::size_t update_count = 0;
  // The step's first micro-batch: sets the gradients, the loss and the status word, which later
  // ones add to. (A step has no zeroing to do then.)
  bool first = true;
};
} // namespace op
} // namespace tandem::backend

// Every operation above, for code that names them all: X(Op) for each. The tandem::compiled
// library compiles each host kernel once, in float and double (src/compiled.cpp).
// clang-format off
#define TANDEM_OPS(X) \
  X(Gemm) X(LinearForward) X(LinearBackward) X(ActivationForward) X(ActivationBackward) X(Fill) \
  X(CrossEntropy) X(SquaredError) X(SgdStep) X(AdamStep) X(SmallForward) X(SmallBackward) X(SmallNetwork)
// clang-format on
