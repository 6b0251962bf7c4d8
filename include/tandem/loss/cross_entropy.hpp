// SPDX-License-Identifier: Apache-2.0
// loss::CrossEntropy: nn.CrossEntropyLoss() on logits and int32 class labels, mean over the batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/error.hpp"

namespace tandem::loss {

struct CrossEntropy {
  // One label per sample.
  template <class T> using target_type = std::int32_t;
  static constexpr std::size_t targets_per_sample(std::size_t /*outputs*/) { return 1; }

  static void validate(std::span<const std::int32_t> labels, std::size_t batch, std::size_t classes) {
    if (labels.size() != batch)
      detail::fail("loss::CrossEntropy: expected ", batch, " labels (one per sample), got ", labels.size());
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] < 0 || static_cast<std::size_t>(labels[i]) >= classes)
        detail::fail("loss::CrossEntropy: label ", i, " is ", labels[i], ", outside [0, ", classes, ")");
  }

  // Mean reduction over the whole batch, also when it is issued one micro-batch at a time.
  template <class T> static T scale(std::size_t batch, std::size_t /*classes*/) { return T(1) / T(batch); }

  // Fused log-softmax, loss and gradient: one pass over the logits, numerically stable.
  template <class T>
  static void run(backend::Executor &ex, std::size_t rows, std::size_t classes, const T *logits,
                  const std::int32_t *labels, T scale, T *loss, T *dlogits, std::int32_t *invalid = nullptr) {
    ex.run(backend::op::CrossEntropy<T>{.rows = rows,
                                        .classes = classes,
                                        .logits = logits,
                                        .labels = labels,
                                        .scale = scale,
                                        .loss = loss,
                                        .dlogits = dlogits,
                                        .invalid = invalid});
  }

  // The same, inside a whole-network step (op::SmallNetwork; see FusableLoss).
  template <class T>
  static backend::op::SmallLoss<T> small_loss(const std::int32_t *labels, T scale, T *loss, std::int32_t *invalid) {
    return {.kind = backend::op::LossKind::cross_entropy,
            .labels = labels,
            .scale = scale,
            .loss = loss,
            .invalid = invalid};
  }
};

} // namespace tandem::loss
