// SPDX-License-Identifier: Apache-2.0
// Tanh: tanh(x), nn.Tanh.
#pragma once

#include "tandem/layers/activation.hpp"

namespace tandem {

struct Tanh : ActivationLayer<backend::Activation::tanh> {};

} // namespace tandem
