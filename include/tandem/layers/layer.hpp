// SPDX-License-Identifier: Apache-2.0
// The Layer concept: the protocol every layer follows, written once, and the optional traits a
// layer opts into (memory of its own, a sequence length, token input, a split backward).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include "tandem/backend/executor.hpp"
#include "tandem/random.hpp"

namespace tandem {

// One parameter tensor of a layer, PyTorch's layout: `rows` x `cols`, row-major ("weight" of a
// Linear is (out, in)); cols 1 is a vector, (rows). A layer's parameters lie one after another in
// its stage's flat buffer. A composite layer's names nest as nn.Sequential's do ("1.in_proj_weight").
struct ParameterSpec {
  std::string_view name;
  std::size_t rows = 0, cols = 1;
  constexpr std::size_t size() const { return rows * cols; }
};

// What a layer's forward sees. Rows are samples, or the tokens of whole sequences (row b * T + t
// is position t of sequence b); x is (rows, in) and y (rows, out), row-major.
template <class T> struct LayerForward {
  std::size_t rows = 0, in = 0, out = 0;
  const T *params = nullptr;
  // (rows, in). A layer whose input_type is std::int32_t (Embedding) finds its token ids here,
  // stored in the input's buffer (layer_input below reads them).
  const T *x = nullptr;
  T *y = nullptr; // (rows, out)
  // (rows, saved_values<L>(in)): the layer's own memory, kept by the stage from this micro-batch's
  // forward to its backward (null where it keeps none).
  T *saved = nullptr;
  // (rows, scratch_values<L>(in)): memory for this call alone (null where it needs none).
  T *scratch = nullptr;
  // The place of the micro-batch's first row in the whole batch, and a key for this layer in this
  // step (0: not training). Dropout draws its mask from both, so that every schedule and rank
  // count drops the same elements.
  std::size_t first_row = 0;
  std::uint64_t key = 0;
};

// What a layer's backward sees: what its forward saw, the output's gradient, where to write the
// input's gradient (null when nobody needs it) and to add the parameters' gradients.
template <class T> struct LayerBackward {
  std::size_t rows = 0, in = 0, out = 0;
  const T *params = nullptr;
  T *grads = nullptr;    // accumulate: micro-batches add up
  const T *x = nullptr;  // (rows, in)
  const T *y = nullptr;  // (rows, out)
  const T *dy = nullptr; // (rows, out)
  T *dx = nullptr;       // (rows, in), may be null
  T *saved = nullptr;    // what the forward kept there
  T *scratch = nullptr;  // as the forward's
  std::size_t first_row = 0;
  std::uint64_t key = 0;
  // Off on a stage's first micro-batch of a step where the layer declares sets_gradients: set
  // the gradients rather than add to them, so the pipeline need not zero them first. Layers that
  // do not declare it always see it on.
  bool accumulate = true;
};

// A layer is a type, not an object: it holds no state (the stage owns parameters, activations
// and the layer's saved memory), so the whole network is known to the compiler.
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

// ---- optional traits: each a static member a layer may declare ----

// saved_values(in) / scratch_values(in): values of T per row the layer keeps from forward to
// backward, and needs during one call; constexpr, so memory can be planned before a run.
template <class L> constexpr std::size_t saved_values(std::size_t in) {
  if constexpr (requires { L::saved_values(in); }) return L::saved_values(in);
  else return 0;
}
template <class L> constexpr std::size_t scratch_values(std::size_t in) {
  if constexpr (requires { L::scratch_values(in); }) return L::scratch_values(in);
  else return 0;
}

// cost(in): the multiply-adds per row of one forward and one backward, for an input of width
// `in`; Balanced cuts stages by it and the cost model predicts step times from it. The default
// reads the parameters: each value of a matrix parameter (cols > 1) takes part in one multiply-add
// per row in the forward (y = x W^T), one in the input's gradient and one in the weight's, so
// Linear<I, O> costs 3 I O (its bias, O additions per row, is left out as small beside that).
// A layer without matrices is elementwise: about one operation per output value forward and one
// backward, 2 x the output width; small beside a product, but not free, so that a long run of
// such layers still weighs in a balance. A layer whose parameters do not say what it computes
// (an Embedding's table is read one row at a time; attention's products have no parameters)
// declares its own cost.
template <class L> constexpr std::size_t layer_cost(std::size_t in) {
  if constexpr (requires { L::cost(in); }) return L::cost(in);
  else {
    std::size_t matrices = 0;
    for (const ParameterSpec &p : std::span<const ParameterSpec>(L::parameters))
      if (p.cols > 1) matrices += p.size();
    if (matrices > 0) return 3 * matrices;
    return 2 * (L::out_features ? std::size_t{L::out_features} : in);
  }
}

// sequence_length: the layer reads whole sequences of this many rows (attention, positions); the
// pipeline then splits batches at whole sequences. 0: row-wise.
template <class L> constexpr std::size_t sequence_length() {
  if constexpr (requires { L::sequence_length; }) return L::sequence_length;
  else return 0;
}

// input_type: what the layer reads, where that is not the network's values (Embedding: token ids).
template <class L, class T> struct layer_input { using type = T; };
template <class L, class T>
requires requires { typename L::input_type; }
struct layer_input<L, T> {
  using type = typename L::input_type;
};
template <class L, class T> using layer_input_t = typename layer_input<L, T>::type;

// The token ids of a layer whose input_type is std::int32_t: the input's buffer holds them.
template <class T> const std::int32_t *token_ids(const T *x) { return reinterpret_cast<const std::int32_t *>(x); }

// draws_random: the layer's output depends on LayerForward::key (Dropout): a step with it is not
// replayed from a captured graph, which would repeat one step's draws.
template <class L> constexpr bool draws_random() {
  if constexpr (requires { L::draws_random; }) return L::draws_random;
  else return false;
}

// sets_gradients: the layer honours LayerBackward::accumulate (off: it sets its gradients).
template <class L> constexpr bool sets_gradients() {
  if constexpr (requires { L::sets_gradients; }) return L::sets_gradients;
  else return false;
}

// A backward that runs as two tasks: backward_input (dx, which the stage before waits for) and
// backward_weights (the parameters' gradients, which nothing waits for until the update), the
// split zero-bubble schedules use. Together they do what backward does.
template <class L>
concept SplitBackward = Layer<L> && requires(backend::Executor &ex, const LayerBackward<float> &b) {
  L::backward_input(ex, b);
  L::backward_weights(ex, b);
};

// A layer that can describe itself as an op::SmallLayer (Linear and the activations) may run
// inside a small stage (op::SmallForward / SmallBackward) when its stage qualifies. The
// description reads the fields of a LayerBackward (grads null in a forward).
template <class L>
concept SmallStageLayer = Layer<L> && requires(const LayerBackward<float> &b, const LayerBackward<double> &bd) {
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

namespace detail {
// Widths and counts of a type that may not be a layer (a Stage's or a composite's argument), so
// one bad argument gives one error.
template <class L> constexpr std::size_t in_of() {
  if constexpr (Layer<L>) return L::in_features;
  else return 0;
}
template <class L> constexpr std::size_t out_of() {
  if constexpr (Layer<L>) return L::out_features;
  else return 0;
}
template <class L> constexpr std::size_t sequence_of() {
  if constexpr (Layer<L>) return tandem::sequence_length<L>();
  else return 0;
}
template <class L> constexpr std::size_t params_of() {
  if constexpr (Layer<L>) return parameter_count_v<L>;
  else return 0;
}
} // namespace detail

} // namespace tandem
