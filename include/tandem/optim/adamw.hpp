// SPDX-License-Identifier: Apache-2.0
// optim::AdamW: torch.optim.AdamW, Adam with weight decay applied to the weights themselves.
#pragma once

#include <utility>

#include "tandem/optim/adam.hpp"

namespace tandem::optim {

// Fields in torch.optim.AdamW's argument order; its weight_decay defaults to 1e-2, not 0.
struct AdamWOptions {
  float lr = 1e-3f;
  std::pair<float, float> betas{0.9f, 0.999f};
  float eps = 1e-8f;
  float weight_decay = 1e-2f;
  bool amsgrad = false;
};
constexpr std::size_t state_bytes(const AdamWOptions &options, std::size_t parameters) {
  return detail::adam_state_bytes(options, parameters);
}

// AdamW (Loshchilov & Hutter, 2019): each step first scales the weights by 1 - lr * weight_decay,
// then takes Adam's step on the raw gradient, so the decay is not rescaled by the moments.
class AdamW : public detail::AdamFamily<AdamWOptions, true> {
public:
  using Options = AdamWOptions;
  using AdamFamily::AdamFamily;
};

} // namespace tandem::optim
