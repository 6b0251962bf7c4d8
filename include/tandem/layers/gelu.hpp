// SPDX-License-Identifier: Apache-2.0
// GELU: x * Phi(x), nn.GELU(); GELUTanh: its tanh approximation, nn.GELU(approximate="tanh").
#pragma once

#include "tandem/layers/activation.hpp"

namespace tandem {

struct GELU : ActivationLayer<backend::Activation::gelu> {};
struct GELUTanh : ActivationLayer<backend::Activation::gelu_tanh> {};

} // namespace tandem
