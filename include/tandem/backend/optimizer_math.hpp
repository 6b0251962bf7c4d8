// SPDX-License-Identifier: Apache-2.0
// The optimizers' per-element updates: one definition that the host kernels, the CUDA kernels and
// the whole-network step (small_network.hpp) all compute with.
#pragma once

#include <cstddef>
#include <math.h> // sqrtf, sqrt: the same names on the host and in CUDA

#include "tandem/backend/host_device.hpp"
#include "tandem/backend/ops.hpp"

namespace tandem::backend {

template <class T> TANDEM_HOST_DEVICE inline T sqrt_of(T x);
template <> TANDEM_HOST_DEVICE inline float sqrt_of(float x) { return sqrtf(x); }
template <> TANDEM_HOST_DEVICE inline double sqrt_of(double x) { return sqrt(x); }

// torch.optim.SGD's update of element i (the caller has checked s.skip).
template <class T> TANDEM_HOST_DEVICE inline void sgd_update(const op::SgdStep<T> &s, std::size_t i) {
  T d = s.grads[i];
  if (s.weight_decay != T(0)) d += s.weight_decay * s.params[i];
  if (s.momentum != T(0)) {
    T &buf = s.momentum_buffer[i];
    buf = s.first ? d : s.momentum * buf + (T(1) - s.dampening) * d;
    d = s.nesterov ? d + s.momentum * buf : buf;
  }
  s.params[i] -= s.lr * d;
}

// One Adam step's scalars in T: the bias corrections (from op::adam_scalars, in double and
// rounded once, as PyTorch's Python floats are) and AdamW's decay factor 1 - lr * weight_decay.
template <class T> struct AdamScalars { T step_size, bias2_sqrt, decay; };
template <class T> TANDEM_HOST_DEVICE inline AdamScalars<T> adam_scalars_of(const op::AdamStep<T> &a, op::AdamCount c) {
  return {static_cast<T>(c.step_size), static_cast<T>(c.bias2_sqrt),
          static_cast<T>(1 - static_cast<double>(a.lr) * static_cast<double>(a.weight_decay))};
}

// torch.optim.Adam's (a.decoupled: AdamW's) update of element i (the caller has checked a.skip).
template <class T>
TANDEM_HOST_DEVICE inline void adam_update(const op::AdamStep<T> &a, const AdamScalars<T> &k, std::size_t i) {
  T g = a.grads[i];
  T &p = a.params[i];
  if (a.weight_decay != T(0)) {
    if (a.decoupled) p *= k.decay; // AdamW: decay the weight itself, before the moments
    else g += a.weight_decay * p;  // Adam: L2 penalty folded into the gradient
  }
  T &m = a.exp_avg[i];
  T &v = a.exp_avg_sq[i];
  m += (g - m) * (T(1) - a.beta1); // lerp, as PyTorch writes it
  v = a.beta2 * v + (T(1) - a.beta2) * g * g;
  T second = v;
  if (a.amsgrad) {
    T &max = a.max_exp_avg_sq[i];
    max = v > max ? v : max;
    second = max;
  }
  const T denom = sqrt_of(second) / k.bias2_sqrt + a.eps;
  p -= k.step_size * m / denom;
}

} // namespace tandem::backend
