// SPDX-License-Identifier: Apache-2.0
// Compile-time shape checks. Each check is a class template whose arguments carry the numbers,
// because nvcc does not print the operands of a failed comparison: the instantiation context
// (`WidthCheck<AtStage<1>, AtLayer<0>, Expects<20>, Receives<10>>`) names them on every compiler.
// Each message starts with a greppable id.
#pragma once

#include <cstddef>

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

} // namespace tandem::detail
