// SPDX-License-Identifier: Apache-2.0
// What the pipeline hands a Linear beside its neighbours (pipeline/fusion.hpp), apart from the
// layer protocol: a layer that declares neither kind of hand-off never sees these.
#pragma once

#include "tandem/backend/ops.hpp"

namespace tandem {

// Forward: the activation after the Linear, computed in its product's epilogue, so the pair is
// one operation (a GPU's cuBLASLt RELU_BIAS / GELU_AUX_BIAS). Taken by a layer with an overload
// forward(ex, f, epilogue).
template <class T> struct Epilogue {
  backend::Activation activation = backend::Activation::identity;
  // With a ReLU: where the backend may keep its mask for the next Linear's backward
  // (op::LinearForward::relu_mask); may be null.
  void *relu_mask = nullptr;
  // With an activation whose backward reads its input (GELUTanh): where to keep that input, the
  // Linear's own output (op::LinearForward::pre_activation).
  T *pre_activation = nullptr;
};

// Backward: Linear, ReLU, Linear in one stage. The second Linear's backward does the ReLU's
// (relu_before: op::LinearBackward::relu_before), whose own backward is skipped, and writes the
// first Linear's bias gradient (dbias_before); the first is told bias_gradient_by_next. Taken by a
// layer that declares takes_relu_backward and has an overload backward(ex, b, hand_off).
template <class T> struct ReluHandOff {
  bool relu_before = false;
  const void *relu_mask = nullptr; // what the Linear before was given as Epilogue::relu_mask
  T *dbias_before = nullptr;
  bool bias_gradient_by_next = false;
};

} // namespace tandem
