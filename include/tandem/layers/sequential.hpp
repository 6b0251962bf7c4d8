// SPDX-License-Identifier: Apache-2.0
// Sequential<Layers...>: layers in a chain as one layer, nn.Sequential's nesting of names and
// initialisation. The composite layers (Residual, Recompute later) build on it.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>
#include <utility>

#include "tandem/backend/executor.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"
#include "tandem/shape.hpp"

namespace tandem {

namespace detail {

constexpr std::size_t decimal_digits(std::size_t n) {
  std::size_t d = 1;
  for (; n >= 10; n /= 10) ++d;
  return d;
}

// The inner layers' parameters under nn.Sequential's names: "<index>.<inner name>". The names
// live in one constexpr character array, which the specs' string_views point into.
template <class... Ls> struct NestedParameters {
  static constexpr std::size_t count = (std::size_t{0} + ... + std::span<const ParameterSpec>(Ls::parameters).size());

  template <class F> static constexpr void for_each(F &&f) { // f(layer index, spec)
    std::size_t j = 0;
    (
        [&] {
          for (const ParameterSpec &p : std::span<const ParameterSpec>(Ls::parameters)) f(j, p);
          ++j;
        }(),
        ...);
  }
  static constexpr std::size_t chars = [] {
    std::size_t n = 0;
    for_each([&](std::size_t j, const ParameterSpec &p) { n += decimal_digits(j) + 1 + p.name.size(); });
    return n;
  }();
  static constexpr std::array<char, chars + 1> text = [] {
    std::array<char, chars + 1> t{};
    std::size_t at = 0;
    for_each([&](std::size_t j, const ParameterSpec &p) {
      const std::size_t d = decimal_digits(j);
      for (std::size_t i = 0, v = j; i < d; ++i, v /= 10) t[at + d - 1 - i] = static_cast<char>('0' + v % 10);
      at += d;
      t[at++] = '.';
      for (const char c : p.name) t[at++] = c;
    });
    return t;
  }();
  static constexpr std::array<ParameterSpec, count> specs = [] {
    std::array<ParameterSpec, count> s{};
    std::size_t at = 0, k = 0;
    for_each([&](std::size_t j, const ParameterSpec &p) {
      const std::size_t length = decimal_digits(j) + 1 + p.name.size();
      s[k++] = ParameterSpec{std::string_view(text.data() + at, length), p.rows, p.cols};
      at += length;
    });
    return s;
  }();
};

template <std::size_t Index, class L> struct InnerLayerCheck {
  static_assert(Layer<L>, "TANDEM_NOT_A_LAYER: every argument of a composite layer (Sequential, Residual) must "
                          "satisfy tandem::Layer; InnerLayerCheck<index, type> in this message names it");
  static constexpr bool value = true;
};

} // namespace detail

template <class... Ls> struct Sequential {
  static_assert(sizeof...(Ls) > 0, "TANDEM_EMPTY_COMPOSITE: a composite layer needs at least one layer");
  static_assert([]<std::size_t... J>(std::index_sequence<J...>) {
    return (detail::InnerLayerCheck<J, Ls>::value && ... && true);
  }(std::index_sequence_for<Ls...>{}));

  using layer_types = std::tuple<Ls...>;
  template <std::size_t J> using layer = std::tuple_element_t<J, layer_types>;
  static constexpr std::size_t num_layers = sizeof...(Ls);

  // Input width of each inner layer, then the output width, for an input of width `in`.
  static constexpr std::array<std::size_t, num_layers + 1> widths(std::size_t in) {
    std::array<std::size_t, num_layers + 1> w{};
    std::size_t j = 0, cur = in;
    ((w[j++] = cur, cur = detail::out_of<Ls>() ? detail::out_of<Ls>() : cur), ...);
    w[j] = cur;
    return w;
  }
  // The first fixed input width (0: the chain keeps any width), as a Stage derives its own.
  static constexpr std::size_t in_features = [] {
    std::size_t w = 0;
    ((w = w ? w : detail::in_of<Ls>()), ...);
    return w;
  }();
  static constexpr std::size_t out_features = widths(in_features)[num_layers];
  static_assert([]<std::size_t... J>(std::index_sequence<J...>) {
    return (detail::InnerWidthCheck<detail::AtLayer<J>, detail::Expects<detail::in_of<Ls>()>,
                                    detail::Receives<widths(in_features)[J]>>::value &&
            ... && true);
  }(std::index_sequence_for<Ls...>{}));

  static constexpr auto parameters = detail::NestedParameters<Ls...>::specs;
  static constexpr std::array<std::size_t, num_layers + 1> parameter_offsets = [] {
    std::array<std::size_t, num_layers + 1> o{};
    std::size_t j = 0, at = 0;
    ((o[j++] = at, at += parameter_count_v<Ls>), ...);
    o[j] = at;
    return o;
  }();

  static constexpr bool sets_gradients = (tandem::sets_gradients<Ls>() && ...);
  static constexpr bool draws_random = (tandem::draws_random<Ls>() || ...);
  static constexpr std::size_t sequence_length = [] {
    std::size_t n = 0;
    ((n = n ? n : tandem::sequence_length<Ls>()), ...);
    return n;
  }();
  // The inner layers' costs, each at its own input width.
  static constexpr std::size_t cost(std::size_t in) {
    const auto w = widths(in);
    std::size_t total = 0, j = 0;
    ((total += tandem::layer_cost<Ls>(w[j++])), ...);
    return total;
  }

  // Memory, values per row for an input of width `in`: the inner layers' outputs but the last
  // (the chain's own output), then each inner layer's saved memory.
  static constexpr std::size_t saved_values(std::size_t in) { return saved_blocks(in)[2 * num_layers - 1]; }
  // Where each of those 2 * num_layers - 1 blocks starts, in values per row (block k starts at
  // saved + rows * at[k]): inner output j is block j, inner layer j's saved memory block
  // num_layers - 1 + j; the total last.
  static constexpr std::array<std::size_t, 2 * num_layers> saved_blocks(std::size_t in) {
    const auto w = widths(in);
    std::array<std::size_t, 2 * num_layers> at{};
    std::size_t total = 0, k = 0, j = 0;
    for (std::size_t o = 1; o < num_layers; ++o) at[k++] = total, total += w[o];
    ((at[k++] = total, total += tandem::saved_values<Ls>(w[j++])), ...);
    at[k] = total;
    return at;
  }
  // The backward's gradient ping-pong between inner layers, and beside it the most any inner
  // layer needs for one call.
  static constexpr std::size_t scratch_values(std::size_t in) {
    const auto w = widths(in);
    std::size_t widest = 0, inner = 0, j = 0;
    for (std::size_t k = 1; k < num_layers; ++k) widest = std::max(widest, w[k]);
    ((inner = std::max(inner, tandem::scratch_values<Ls>(w[j])), ++j), ...);
    return 2 * widest + inner;
  }

  // Each inner layer from a generator of its own, derived from `rng` in order.
  template <class T> static void init(std::span<T> params, std::size_t in, Random &rng) {
    const auto w = widths(in);
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      (
          [&] {
            Random own = Random::derive(rng.next(), J, 0);
            layer<J>::init(params.subspan(parameter_offsets[J], parameter_count_v<layer<J>>), w[J], own);
          }(),
          ...);
    }
    (std::index_sequence_for<Ls...>{});
  }

  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    const auto w = widths(f.in);
    const auto blocks = saved_blocks(f.in);
    const std::size_t inner_scratch = 2 * widest_inner(f.in); // (the forward leaves the ping-pong alone)
    const T *x = f.x;
    std::size_t j = 0;
    (
        [&] {
          T *y = j + 1 == num_layers ? f.y : f.saved + f.rows * blocks[j];
          Ls::forward(ex, LayerForward<T>{.rows = f.rows,
                                          .in = w[j],
                                          .out = w[j + 1],
                                          .params = f.params + parameter_offsets[j],
                                          .x = x,
                                          .y = y,
                                          .saved = inner_saved(f.saved, f.rows, blocks, j),
                                          .scratch = f.scratch ? f.scratch + f.rows * inner_scratch : nullptr,
                                          .first_row = f.first_row,
                                          .key = inner_key(f.key, j)});
          x = y;
          ++j;
        }(),
        ...);
  }

  template <class T> static void backward(backend::Executor &ex, const LayerBackward<T> &b) {
    const auto w = widths(b.in);
    const auto blocks = saved_blocks(b.in);
    const std::size_t inner_scratch = 2 * widest_inner(b.in);
    T *turns[2] = {b.scratch, b.scratch ? b.scratch + b.rows * widest_inner(b.in) : nullptr};
    const T *dy = b.dy;
    std::size_t turn = 0;
    // last layer first: (index_sequence reversed)
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      (
          [&] {
            constexpr std::size_t j = num_layers - 1 - J;
            using L = layer<j>;
            T *dx = j == 0 ? b.dx : turns[turn];
            L::backward(ex, LayerBackward<T>{.rows = b.rows,
                                             .in = w[j],
                                             .out = w[j + 1],
                                             .params = b.params + parameter_offsets[j],
                                             .grads = b.grads + parameter_offsets[j],
                                             .x = j == 0 ? b.x : b.saved + b.rows * blocks[j - 1],
                                             .y = j + 1 == num_layers ? b.y : b.saved + b.rows * blocks[j],
                                             .dy = dy,
                                             .dx = dx,
                                             .saved = inner_saved(b.saved, b.rows, blocks, j),
                                             .scratch = b.scratch ? b.scratch + b.rows * inner_scratch : nullptr,
                                             .first_row = b.first_row,
                                             .key = inner_key(b.key, j),
                                             .accumulate = b.accumulate});
            dy = dx;
            turn ^= 1;
          }(),
          ...);
    }
    (std::make_index_sequence<num_layers>{});
  }

private:
  static constexpr std::size_t widest_inner(std::size_t in) {
    const auto w = widths(in);
    std::size_t widest = 0;
    for (std::size_t k = 1; k < num_layers; ++k) widest = std::max(widest, w[k]);
    return widest;
  }
  // Inner layer j's saved memory, or null where it keeps none.
  template <class T>
  static T *inner_saved(T *saved, std::size_t rows, const std::array<std::size_t, 2 * num_layers> &blocks,
                        std::size_t j) {
    const std::size_t k = num_layers - 1 + j;
    return saved && blocks[k + 1] > blocks[k] ? saved + rows * blocks[k] : nullptr;
  }
  static std::uint64_t inner_key(std::uint64_t key, std::size_t j) {
    return key ? Random::derive(key, j, 1).next() | 1 : 0;
  }
};

} // namespace tandem
