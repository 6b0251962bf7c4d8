// SPDX-License-Identifier: Apache-2.0
// The umbrella header: everything a user program needs.
#pragma once

#include "tandem/context.hpp"
#include "tandem/device.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/activation.hpp"
#include "tandem/layers/gelu.hpp"
#include "tandem/layers/identity.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/layers/relu.hpp"
#include "tandem/layers/sigmoid.hpp"
#include "tandem/layers/tanh.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/loss/mse.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/parameter.hpp"
#include "tandem/pipeline.hpp"
#include "tandem/random.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/shape.hpp"
#include "tandem/stage.hpp"
