// SPDX-License-Identifier: Apache-2.0
// What makes a call to a pipeline's train_step or forward_backward well-formed, and what is wrong
// with one that is not: the pipeline's catch-all overloads turn it into one static_assert that
// says what to pass, instead of a list of candidates.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tandem/error.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/loss/loss.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/schedule/schedule.hpp"
#include "tandem/tensor.hpp"

namespace tandem::detail {

template <class R, class E>
concept data_of = std::convertible_to<R, std::span<const E>> || std::same_as<std::remove_cvref_t<R>, Tensor<E>>;
template <class Loss, class T>
concept loss_for = loss::Loss<Loss, T>;

enum class StepDataError { none, not_a_loss, input, class_indices, targets };

// Checks (x, y, loss) in the order a reader would: the loss, the input, the targets. T is the
// network's value type, Input what it reads (T, or token ids).
template <class T, class Input, class X, class Y, class Loss> constexpr StepDataError step_data_error() {
  if constexpr (!loss_for<Loss, T>) return StepDataError::not_a_loss;
  else {
    using Target = typename Loss::template target_type<T>;
    if constexpr (!data_of<X, Input>) return StepDataError::input;
    else if constexpr (data_of<Y, Target>) return StepDataError::none;
    // int64 class indices, PyTorch's habit, from the host: train_step narrows them.
    else if constexpr (std::same_as<Target, std::int32_t> && std::convertible_to<Y, std::span<const std::int64_t>>)
      return StepDataError::none;
    else if constexpr (std::same_as<Target, std::int32_t>) return StepDataError::class_indices;
    else return StepDataError::targets;
  }
}

// What train_step's and forward_backward's catch-all overloads say alike about the data of a call
// no overload takes: the labels, the targets, the input. The call's own checks follow it there.
template <class T, class Input, class X, class Y, class Loss> constexpr void check_step_data() {
  using enum StepDataError;
  constexpr auto e = step_data_error<T, Input, X, Y, Loss>();
  static_assert(e != class_indices || !std::is_same_v<Loss, loss::CrossEntropy>,
                "TANDEM_LABEL_TYPE: CrossEntropy takes int32 class indices (int64 accepted), one per row: "
                "std::vector<std::int32_t> y, not floating-point labels");
  static_assert(e != class_indices || std::is_same_v<Loss, loss::CrossEntropy>,
                "TANDEM_LABEL_TYPE: this loss takes int32 class indices (int64 accepted), one per row");
  static_assert(e != targets, "TANDEM_TARGET_TYPE: this loss (MSE) takes targets of the network's value type (float "
                              "for Pipeline), (batch, out_features) row-major, like the outputs");
  static_assert(e != input || !std::is_same_v<Input, T>,
                "TANDEM_INPUT_TYPE: x is (batch, in_features) of the network's value type (float for "
                "Pipeline): a std::vector<float>, std::span<const float> or Tensor<float>");
  static_assert(e != input || std::is_same_v<Input, T>,
                "TANDEM_INPUT_TYPE: this network starts with an Embedding: x is its int32 token ids, one per row "
                "(batch * sequence length of them): a std::vector<std::int32_t> or std::span<const std::int32_t>");
}

template <class Opt>
concept optimizer_argument = std::is_lvalue_reference_v<Opt> && !std::is_const_v<std::remove_reference_t<Opt>> &&
                             optim::Optimizer<std::remove_cvref_t<Opt>>;
// (x, y, loss, opt[, sched]) as train_step takes them.
template <class T, class Input, class X, class Y, class Loss, class... Rest>
inline constexpr bool train_step_call = false;
template <class T, class Input, class X, class Y, class Loss, class Opt, class... Sched>
inline constexpr bool train_step_call<T, Input, X, Y, Loss, Opt, Sched...> =
    step_data_error<T, Input, X, Y, Loss>() == StepDataError::none &&optimizer_argument<Opt> && sizeof...(Sched) <= 1 &&
    (schedule::Schedule<std::remove_cvref_t<Sched>> && ...);
// (x, y, loss[, sched]) as forward_backward takes them.
template <class T, class Input, class X, class Y, class Loss, class... Sched>
inline constexpr bool forward_backward_call = step_data_error<T, Input, X, Y, Loss>() == StepDataError::none &&
                                              sizeof...(Sched) <= 1 &&
                                              (schedule::Schedule<std::remove_cvref_t<Sched>> && ...);

template <class...> inline constexpr bool wrong_call = false;

// int64 class indices narrowed to the int32 the losses read; one outside int32 is out of range
// for any network, and said so as the range check on the device would say it.
inline std::vector<std::int32_t> narrow_labels(std::span<const std::int64_t> y, std::size_t classes, const char *call) {
  std::vector<std::int32_t> out(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (y[i] < 0 || y[i] >= static_cast<std::int64_t>(classes))
      fail(call, ": label ", i, " is ", y[i], ", outside [0, ", classes, ")");
    out[i] = static_cast<std::int32_t>(y[i]);
  }
  return out;
}

} // namespace tandem::detail
