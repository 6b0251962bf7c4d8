// SPDX-License-Identifier: Apache-2.0
// Sigmoid: 1 / (1 + exp(-x)), nn.Sigmoid.
#pragma once

#include "tandem/layers/activation.hpp"

namespace tandem {

struct Sigmoid : ActivationLayer<backend::Activation::sigmoid> {};

} // namespace tandem
