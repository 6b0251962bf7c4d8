// SPDX-License-Identifier: Apache-2.0
// The Layer concept: the protocol every layer follows, written once.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>

#include "tandem/backend/executor.hpp"
#include "tandem/random.hpp"

namespace tandem {

// One parameter tensor of a layer, PyTorch's layout: `rows` x `cols`, row-major ("weight" of a
// Linear is (out, in)). A layer's parameters lie one after another in its stage's flat buffer.
struct ParameterSpec {
  std::string_view name;
  std::size_t rows = 0, cols = 1;
  constexpr std::size_t size() const { return rows * cols; }
};

// What a layer's forward sees: its parameters and a (batch, in) input to map to (batch, out).
template <class T> struct LayerForward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *params = nullptr;
  const T *x = nullptr; // (batch, in)
  T *y = nullptr;       // (batch, out)
  // A Linear's forward with the ReLU after it (Linear::forward's `then`): where the backend may keep
  // the ReLU's mask for the next Linear's backward (op::LinearForward::relu_mask); may be null.
  void *relu_mask = nullptr;
  // A Linear's forward with an activation after it whose backward reads its input (GELUTanh):
  // where to keep that input, the Linear's own output (op::LinearForward::pre_activation).
  T *pre_activation = nullptr;
};

// What a layer's backward sees: the saved input and output, the output's gradient, and where to
// write the input's gradient (null when nobody needs it) and to add the parameters' gradients.
template <class T> struct LayerBackward {
  std::size_t batch = 0, in = 0, out = 0;
  const T *params = nullptr;
  T *grads = nullptr;    // accumulate: micro-batches add up
  const T *x = nullptr;  // (batch, in)
  const T *y = nullptr;  // (batch, out)
  const T *dy = nullptr; // (batch, out)
  T *dx = nullptr;       // (batch, in), may be null
  // Off on a stage's first micro-batch of a step when every layer of the stage honours it (the
  // library's layers; see FusableLayer): set the gradients rather than add to them, so the
  // pipeline need not zero them first. Other layers see it on and always add.
  bool accumulate = true;
  // Set by the pipeline only for layers that declare takes_relu_backward (Linear), where a
  // Linear, a ReLU and this Linear follow each other in one stage: this layer's backward does the
  // ReLU's (op::LinearBackward::relu_before), whose own backward is skipped, and writes the bias
  // gradient of the Linear before (dbias_before), which is then told bias_gradient_by_next.
  bool relu_before = false;
  const void *relu_mask = nullptr; // what the Linear before was given as LayerForward::relu_mask
  T *dbias_before = nullptr;
  bool bias_gradient_by_next = false;
};

// A layer is a type, not an object: it holds no state (the stage owns parameters and
// activations), so the whole network is known to the compiler.
//   in_features / out_features: fixed widths, or both 0 for a layer that keeps any width;
//   parameters: its ParameterSpecs, in name order;
//   init(params, in, rng): PyTorch's initialisation, on the host;
//   forward / backward: issue the work through the stage's Executor, in float and double.
template <class L>
concept Layer = requires(std::span<float> p, Random &rng, backend::Executor &ex, const LayerForward<float> &f,
                         const LayerBackward<float> &b, const LayerForward<double> &fd,
                         const LayerBackward<double> &bd) {
  { L::in_features } -> std::convertible_to<std::size_t>;
  { L::out_features } -> std::convertible_to<std::size_t>;
  { L::parameters } -> std::convertible_to<std::span<const ParameterSpec>>;
  L::init(p, std::size_t{}, rng);
  L::forward(ex, f);
  L::backward(ex, b);
  L::forward(ex, fd);
  L::backward(ex, bd);
};

// Optional: a layer that can describe itself as an op::SmallLayer (Linear and the activations)
// may run inside a fused small stage (op::SmallForward / SmallBackward) when its stage qualifies.
// The description reads the fields of a LayerBackward (grads null in a forward).
template <class L>
concept FusableLayer = Layer<L> && requires(const LayerBackward<float> &b, const LayerBackward<double> &bd) {
  { L::small_layer(b) } -> std::same_as<backend::op::SmallLayer<float>>;
  { L::small_layer(bd) } -> std::same_as<backend::op::SmallLayer<double>>;
};

namespace detail {
template <class L> constexpr std::size_t parameter_count_of() {
  std::size_t n = 0;
  for (const auto &p : L::parameters) n += p.size();
  return n;
}
} // namespace detail

// The number of scalars a layer trains.
template <Layer L> inline constexpr std::size_t parameter_count_v = detail::parameter_count_of<L>();

} // namespace tandem
