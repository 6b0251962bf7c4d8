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

// The same inside a composite layer (Sequential, Residual): layer l of it expects `in`, receives `w`.
template <class Layer, class Expected, class Received> struct InnerWidthCheck;
template <std::size_t L, std::size_t E, std::size_t R> struct InnerWidthCheck<AtLayer<L>, Expects<E>, Receives<R>> {
  static_assert(E == 0 || R == 0 || E == R,
                "TANDEM_WIDTH_MISMATCH: inside a composite layer (Sequential, Residual), a layer's input width "
                "differs from the width its predecessor gives. InnerWidthCheck<AtLayer<l>, Expects<in>, "
                "Receives<w>> in this message names the inner layer and both widths");
  static constexpr bool value = true;
};

// y = x + f(x) needs f to keep the width.
template <class Received, class Gives> struct ResidualWidthCheck;
template <std::size_t R, std::size_t G> struct ResidualWidthCheck<Receives<R>, Expects<G>> {
  static_assert(R == G, "TANDEM_RESIDUAL_WIDTH: Residual<Layers...> adds its input to its layers' output, so they "
                        "must keep the width; ResidualWidthCheck<Receives<in>, Expects<out>> in this message names "
                        "the width that enters and the width its layers give");
  static constexpr bool value = true;
};

template <class Stage, class Received> struct InputWidthCheck;
template <std::size_t S, std::size_t R> struct InputWidthCheck<AtStage<S>, Receives<R>> {
  static_assert(R != 0, "TANDEM_UNKNOWN_INPUT_WIDTH: the pipeline's input width cannot be derived: its first "
                        "stage has no layer with a fixed input width (such as Linear<In, Out>)");
  static constexpr bool value = true;
};

// Every layer that reads whole sequences (sequence_length) must read sequences of one length:
// the pipeline splits its batches at whole sequences of that many rows.
template <std::size_t N> struct SequenceOf {};
template <class Stage, class Layer, class First, class This> struct SequenceLengthCheck;
template <std::size_t S, std::size_t L, std::size_t A, std::size_t B>
struct SequenceLengthCheck<AtStage<S>, AtLayer<L>, SequenceOf<A>, SequenceOf<B>> {
  static_assert(A == 0 || B == 0 || A == B,
                "TANDEM_SEQUENCE_LENGTH_MISMATCH: two layers of the pipeline read sequences of different lengths. "
                "SequenceLengthCheck<AtStage<s>, AtLayer<l>, SequenceOf<first>, SequenceOf<this>> in this message "
                "names the layer and both lengths; give every PositionalEmbedding<T, D> and "
                "CausalSelfAttention<D, H, T> the same T");
  static constexpr bool value = true;
};

// A layer that reads token ids (input_type std::int32_t, as Embedding) reads the network's input:
// it must be the first layer of the first stage.
template <class Stage, class Layer> struct TokenInputCheck;
template <std::size_t S, std::size_t L> struct TokenInputCheck<AtStage<S>, AtLayer<L>> {
  static_assert(S == 0 && L == 0,
                "TANDEM_TOKENS_NOT_FIRST: a layer that reads token ids (such as Embedding<V, D>) must be the first "
                "layer of the first stage, where the network's input enters; TokenInputCheck<AtStage<s>, "
                "AtLayer<l>> in this message names where it is");
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
