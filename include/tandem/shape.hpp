// SPDX-License-Identifier: Apache-2.0
// Compile-time shape checks. Each check is a class template whose arguments carry the numbers,
// because nvcc does not print the operands of a failed comparison: the instantiation context
// (`WidthCheck<AtStage<1>, AtLayer<0>, Expects<20>, Receives<10>>`) names them on every compiler.
// Each message starts with a greppable id.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem::detail {

template <std::size_t N> struct AtStage {};
template <std::size_t N> struct AtLayer {};
template <std::size_t N> struct Expects {};
template <std::size_t N> struct Receives {};

template <class Stage, class Layer, class Expected, class Received> struct WidthCheck;
template <std::size_t S, std::size_t L, std::size_t E, std::size_t R>
struct WidthCheck<AtStage<S>, AtLayer<L>, Expects<E>, Receives<R>> {
  static_assert(E == 0 || E == R,
                "TANDEM_WIDTH_MISMATCH: a layer's input width differs from the width that reaches it. "
                "WidthCheck<AtStage<s>, AtLayer<l>, Expects<in>, Receives<w>> in this message names the stage, "
                "the layer (its index in the stage), the width it expects and the width it receives; make "
                "the previous layer's output width (or the previous stage's) equal to it");
  static constexpr bool value = true;
};

template <class Stage, class Received> struct InputWidthCheck;
template <std::size_t S, std::size_t R> struct InputWidthCheck<AtStage<S>, Receives<R>> {
  static_assert(R != 0, "TANDEM_UNKNOWN_INPUT_WIDTH: the pipeline's input width cannot be derived: its first "
                        "stage has no layer with a fixed input width (such as Linear<In, Out>)");
  static constexpr bool value = true;
};

// The most values one array of parameters may hold: its bytes, even in double, fit a
// std::ptrdiff_t (what a std::vector, a pointer difference and every byte count here can hold).
inline constexpr std::size_t max_values = static_cast<std::size_t>(PTRDIFF_MAX) / sizeof(double);

template <std::size_t... N> struct Counts {};
struct InStage {};
struct InPipeline {};

// Linear<In, Out> trains In * Out + Out values: the product must not wrap.
template <std::size_t In, std::size_t Out> struct LinearParameterCountCheck {
  static_assert(Out == 0 || (Out <= max_values && In <= (max_values - Out) / Out),
                "TANDEM_SIZE_OVERFLOW: Linear<In, Out> would train In * Out + Out values, more than an array can "
                "hold (max_values, PTRDIFF_MAX / 8): the count would wrap. LinearParameterCountCheck<In, Out> in "
                "this message names the widths");
  static constexpr bool value = true;
};

// A stage's parameter count (the sum of its layers') or a pipeline's (the sum of its stages'):
// the sum must not wrap.
template <class Where, class Parts> struct ParameterCountCheck;
template <class Where, std::size_t... N> struct ParameterCountCheck<Where, Counts<N...>> {
  static constexpr bool fits = [] {
    // A loop over the parts, not a fold: nvcc warns of a comparison with zero for a part of 0.
    constexpr std::size_t parts[] = {N..., 0};
    std::size_t total = 0;
    for (const std::size_t n : parts) {
      if (n > max_values - total) return false;
      total += n;
    }
    return true;
  }();
  static_assert(fits, "TANDEM_SIZE_OVERFLOW: the parameter count of a stage (InStage: its layers') or a pipeline "
                      "(InPipeline: its stages') exceeds what an array can hold (max_values, PTRDIFF_MAX / 8): the "
                      "sum would wrap. ParameterCountCheck<where, Counts<parts...>> in this message names the parts");
  static constexpr bool value = true;
};

} // namespace tandem::detail
