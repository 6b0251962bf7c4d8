// SPDX-License-Identifier: Apache-2.0
// Identity: x (a no-op that keeps a place in a stage).
#pragma once

#include "tandem/layers/activation.hpp"

namespace tandem {

struct Identity : ActivationLayer<backend::Activation::identity> {};

} // namespace tandem
