// SPDX-License-Identifier: Apache-2.0
// ReLU: max(x, 0).
#pragma once

#include "tandem/layers/activation.hpp"

namespace tandem {

struct ReLU : ActivationLayer<backend::Activation::relu> {};

} // namespace tandem
