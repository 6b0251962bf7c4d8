// SPDX-License-Identifier: Apache-2.0
// The activations' per-element formulas, forward and backward: one definition that the host
// kernels, the CUDA kernels and the fused small stages all compute with.
#pragma once

#include <cstddef>
#include <math.h> // expf, tanhf, erff, logf and their double forms: the same names on the host and in CUDA

#include "tandem/backend/host_device.hpp"
#include "tandem/backend/ops.hpp"

namespace tandem::backend {

template <class T> TANDEM_HOST_DEVICE inline T exp_of(T x);
template <> TANDEM_HOST_DEVICE inline float exp_of(float x) { return expf(x); }
template <> TANDEM_HOST_DEVICE inline double exp_of(double x) { return exp(x); }
template <class T> TANDEM_HOST_DEVICE inline T tanh_of(T x);
template <> TANDEM_HOST_DEVICE inline float tanh_of(float x) { return tanhf(x); }
template <> TANDEM_HOST_DEVICE inline double tanh_of(double x) { return tanh(x); }
template <class T> TANDEM_HOST_DEVICE inline T erf_of(T x);
template <> TANDEM_HOST_DEVICE inline float erf_of(float x) { return erff(x); }
template <> TANDEM_HOST_DEVICE inline double erf_of(double x) { return erf(x); }
// (and loss_math.hpp's)
template <class T> TANDEM_HOST_DEVICE inline T log_of(T x);
template <> TANDEM_HOST_DEVICE inline float log_of(float x) { return logf(x); }
template <> TANDEM_HOST_DEVICE inline double log_of(double x) { return log(x); }
template <class T> TANDEM_HOST_DEVICE inline bool finite(T x) { return isfinite(x); }

// PyTorch's formulas (its autograd's, for the derivatives: which of the input x and the output y
// each one reads included). A kind known at compile time lets a loop over many elements keep the
// choice out of its body; the run-time form switches per call.
template <Activation K, class T> TANDEM_HOST_DEVICE inline T activate(T v) {
  if constexpr (K == Activation::relu) return v < T(0) ? T(0) : v; // NaN passes, as in torch.relu
  else if constexpr (K == Activation::sigmoid) return T(1) / (T(1) + exp_of(-v));
  else if constexpr (K == Activation::tanh) return tanh_of(v);
  else if constexpr (K == Activation::gelu) return T(0.5) * v * (T(1) + erf_of(v * T(0.7071067811865476)));
  else if constexpr (K == Activation::gelu_tanh)
    return T(0.5) * v * (T(1) + tanh_of(T(0.7978845608028654) * (v + T(0.044715) * v * v * v)));
  else return v;
}
// dx for one element, from the layer's input x, its output y and the output's gradient dy.
template <Activation K, class T> TANDEM_HOST_DEVICE inline T activate_backward(T x, T y, T dy) {
  if constexpr (K == Activation::relu) {
    return y <= T(0) ? T(0) : dy; // threshold_backward: a NaN output passes its gradient, as in torch
  } else if constexpr (K == Activation::sigmoid) {
    return dy * (T(1) - y) * y;
  } else if constexpr (K == Activation::tanh) {
    return dy * (T(1) - y * y);
  } else if constexpr (K == Activation::gelu) {
    const T cdf = T(0.5) * (T(1) + erf_of(x * T(0.7071067811865476)));
    const T pdf = T(0.3989422804014327) * exp_of(T(-0.5) * x * x);
    return dy * (cdf + x * pdf);
  } else if constexpr (K == Activation::gelu_tanh) {
    constexpr T k = T(0.7978845608028654), c = T(0.044715);
    const T t = tanh_of(k * (x + c * x * x * x));
    const T dinner = k * (T(1) + T(3) * c * x * x);
    return dy * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner);
  } else {
    return dy;
  }
}

// Calls f.template operator()<K>() with K the run-time `kind`.
template <class F> TANDEM_HOST_DEVICE inline decltype(auto) with_activation(Activation kind, F &&f) {
  switch (kind) {
  case Activation::relu: return f.template operator()<Activation::relu>();
  case Activation::sigmoid: return f.template operator()<Activation::sigmoid>();
  case Activation::tanh: return f.template operator()<Activation::tanh>();
  case Activation::gelu: return f.template operator()<Activation::gelu>();
  case Activation::gelu_tanh: return f.template operator()<Activation::gelu_tanh>();
  case Activation::identity: break;
  }
  return f.template operator()<Activation::identity>();
}
// The same for host code that passes a lambda: a lambda's call operator is a constexpr host
// function, which nvcc warns a __host__ __device__ caller about (without --expt-relaxed-constexpr).
template <class F> inline decltype(auto) with_activation_on_host(Activation kind, F &&f) {
  switch (kind) {
  case Activation::relu: return f.template operator()<Activation::relu>();
  case Activation::sigmoid: return f.template operator()<Activation::sigmoid>();
  case Activation::tanh: return f.template operator()<Activation::tanh>();
  case Activation::gelu: return f.template operator()<Activation::gelu>();
  case Activation::gelu_tanh: return f.template operator()<Activation::gelu_tanh>();
  case Activation::identity: break;
  }
  return f.template operator()<Activation::identity>();
}

// Which saved tensor a derivative reads: the input x (GELU's) or the output y (ReLU's, Sigmoid's,
// Tanh's). A kernel over whole arrays reads only that one: the other may be absent, and reading
// it would cost a pass over memory for nothing.
template <Activation K>
inline constexpr bool backward_reads_input = K == Activation::gelu || K == Activation::gelu_tanh;
template <Activation K>
inline constexpr bool backward_reads_output =
    K == Activation::relu || K == Activation::sigmoid || K == Activation::tanh;
template <Activation K, class T>
TANDEM_HOST_DEVICE inline T activate_backward_at(const T *x, const T *y, const T *dy, std::size_t i) {
  return activate_backward<K>(backward_reads_input<K> ? x[i] : T(0), backward_reads_output<K> ? y[i] : T(0), dy[i]);
}

// Functors rather than lambdas: a lambda's call operator is a constexpr host function, which a
// __host__ __device__ caller may call only under nvcc's --expt-relaxed-constexpr.
template <class T> struct ActivateAt {
  T v;
  template <Activation K> TANDEM_HOST_DEVICE T operator()() const { return activate<K>(v); }
};
template <class T> struct ActivateBackwardAt {
  T x, y, dy;
  template <Activation K> TANDEM_HOST_DEVICE T operator()() const { return activate_backward<K>(x, y, dy); }
};
template <class T> TANDEM_HOST_DEVICE inline T activate(Activation kind, T v) {
  return with_activation(kind, ActivateAt<T>{v});
}
template <class T> TANDEM_HOST_DEVICE inline T activate_backward(Activation kind, T x, T y, T dy) {
  return with_activation(kind, ActivateBackwardAt<T>{x, y, dy});
}

} // namespace tandem::backend
