// SPDX-License-Identifier: Apache-2.0
// loss::MSE: nn.MSELoss(), the mean of squared differences over every element of the batch.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/error.hpp"

namespace tandem::loss {

struct MSE {
  // A target row as wide as the output.
  template <class T> using target_type = T;
  static constexpr std::size_t targets_per_sample(std::size_t outputs) { return outputs; }

  template <class T> static void validate(std::span<const T> targets, std::size_t batch, std::size_t outputs) {
    if (targets.size() != batch * outputs)
      detail::fail("loss::MSE: expected ", batch * outputs, " targets (", batch, " x ", outputs, "), got ",
                   targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (!std::isfinite(targets[i])) detail::fail("loss::MSE: target ", i, " is not finite (", targets[i], ")");
  }

  template <class T> static T scale(std::size_t batch, std::size_t outputs) { return T(1) / T(batch * outputs); }

  template <class T>
  static void run(backend::Executor &ex, std::size_t rows, std::size_t outputs, const T *pred, const T *targets,
                  T scale, T *loss, T *dpred, std::int32_t *invalid = nullptr) {
    ex.run(backend::op::SquaredError<T>{.n = rows * outputs,
                                        .pred = pred,
                                        .target = targets,
                                        .scale = scale,
                                        .loss = loss,
                                        .dpred = dpred,
                                        .invalid = invalid});
  }

  // The same, inside a whole-network step (op::SmallNetwork; see FusableLoss).
  template <class T>
  static backend::op::SmallLoss<T> small_loss(const T *targets, T scale, T *loss, std::int32_t *invalid) {
    return {.kind = backend::op::LossKind::squared_error,
            .targets = targets,
            .scale = scale,
            .loss = loss,
            .invalid = invalid};
  }
};

} // namespace tandem::loss
