// SPDX-License-Identifier: Apache-2.0
// What a pipeline asks of a loss, and what lets it fold a loss into a whole-network step.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/ops.hpp"

namespace tandem::loss {

// A loss is a type with:
//   target_type<T>: what a sample's targets are (std::int32_t labels, or T values);
//   targets_per_sample(outputs), validate(targets, batch, outputs) (throws Error), scale<T>(batch,
//   outputs) (the factor of the mean reduction, the same for every micro-batch);
//   run(executor, rows, outputs, out, targets, scale, loss, dout, invalid): adds scale * the sum
//   of the rows' losses to *loss, writes the gradient of the outputs, and sets *invalid where it
//   finds a bad target on the device.
// Rows are samples, or tokens where the network reads sequences (a language model's loss is over
// every position).
template <class L, class T = float>
concept Loss = requires(std::span<const typename L::template target_type<T>> targets, std::size_t n,
                        backend::Executor &ex, const T *out, const typename L::template target_type<T> *t, T scale,
                        T *loss, T *dout, std::int32_t *invalid) {
  { L::targets_per_sample(n) } -> std::convertible_to<std::size_t>;
  L::validate(targets, n, n);
  { L::template scale<T>(n, n) } -> std::convertible_to<T>;
  L::run(ex, n, n, out, t, scale, loss, dout, invalid);
};

// The library's losses also describe themselves as an op::SmallLoss, so that a network of small
// stages on one device can take its whole step in one operation (op::SmallNetwork).
template <class L>
concept FusableLoss = requires(const typename L::template target_type<float> *t, float scale, float *loss,
                               std::int32_t *invalid) {
  { L::small_loss(t, scale, loss, invalid) } -> std::same_as<backend::op::SmallLoss<float>>;
};

} // namespace tandem::loss
