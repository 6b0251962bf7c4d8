// SPDX-License-Identifier: Apache-2.0
// Balanced<N, Layers...>: a layer list cut into N stages at compile time, so that the costliest
// stage (the sum of layer_cost over its layers) is as cheap as possible.
#pragma once

#include <array>
#include <cstddef>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tandem/device.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/pipeline.hpp"
#include "tandem/stage.hpp"

namespace tandem {

namespace detail {

template <std::size_t Devices, std::size_t Layers> struct BalancedDeviceCountCheck {
  static_assert(Devices >= 1 && Devices <= Layers,
                "TANDEM_BALANCED_DEVICES: Balanced<N, Layers...> gives each of its N devices at least one layer, "
                "so N must be between 1 and the number of layers; BalancedDeviceCountCheck<N, number of layers> "
                "in this message names both");
  static constexpr bool value = true;
};

// The cut of K layers (cost[j] multiply-adds per row; width[j] values per row entering layer j)
// into n non-empty stages, as the index of each stage's first layer and K last (starts[0..n]).
// First the least possible cost of the costliest stage, by dynamic programming over prefixes;
// then, among the cuts that reach it, the one whose boundaries carry the fewest values (a second
// programme, over suffixes, with every stage capped at that cost); among those, the earliest cuts
// (each stage ends as soon as the rest can still be cut as cheaply). O(n K^2) constant evaluation.
template <std::size_t K> struct BalancedCut {
  std::array<std::size_t, K + 1> starts{}; // n + 1 of them used
  std::size_t stages = 0, max_cost = 0, boundary_values = 0;
};

template <std::size_t K>
constexpr BalancedCut<K> balanced_cut(const std::array<std::size_t, K> &cost, const std::array<std::size_t, K> &width,
                                      std::size_t n) {
  constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
  BalancedCut<K> cut;
  if (n == 0 || n > K) return cut;
  std::array<std::size_t, K + 1> prefix{};
  for (std::size_t j = 0; j < K; ++j) prefix[j + 1] = prefix[j] + cost[j];
  const auto span_cost = [&](std::size_t a, std::size_t b) { return prefix[b] - prefix[a]; }; // layers [a, b)

  // least[i]: the least costliest stage of the first i layers in k stages (none: impossible).
  std::array<std::size_t, K + 1> least{}, next{};
  least.fill(none);
  for (std::size_t i = 1; i <= K; ++i) least[i] = span_cost(0, i);
  for (std::size_t k = 2; k <= n; ++k) {
    next.fill(none);
    for (std::size_t i = k; i <= K; ++i)
      for (std::size_t j = k - 1; j < i; ++j)
        if (least[j] != none) {
          const std::size_t c = least[j] > span_cost(j, i) ? least[j] : span_cost(j, i);
          if (c < next[i]) next[i] = c;
        }
    least = next;
  }
  const std::size_t bound = least[K];

  // fewest[k][i]: the fewest boundary values of layers [i, K) in k stages, none above `bound`.
  std::array<std::array<std::size_t, K + 1>, K + 1> fewest{};
  for (auto &row : fewest) row.fill(none);
  for (std::size_t i = 0; i < K; ++i)
    if (span_cost(i, K) <= bound) fewest[1][i] = 0;
  for (std::size_t k = 2; k <= n; ++k)
    for (std::size_t i = 0; i + k <= K; ++i)
      for (std::size_t j = i + 1; j + k - 1 <= K && span_cost(i, j) <= bound; ++j)
        if (fewest[k - 1][j] != none && width[j] + fewest[k - 1][j] < fewest[k][i])
          fewest[k][i] = width[j] + fewest[k - 1][j];

  cut.stages = n;
  cut.max_cost = bound;
  cut.boundary_values = fewest[n][0];
  std::size_t at = 0;
  for (std::size_t k = n; k > 1; --k) { // the earliest end that keeps the optimum
    std::size_t j = at + 1;
    while (!(span_cost(at, j) <= bound && fewest[k - 1][j] != none && width[j] + fewest[k - 1][j] == fewest[k][at]))
      ++j;
    cut.starts[n - k + 1] = j;
    at = j;
  }
  cut.starts[n] = K;
  return cut;
}

template <std::size_t D, std::size_t First, class List, std::size_t... J>
std::type_identity<Stage<Device<D>, std::tuple_element_t<First + J, List>...>>
    balanced_stage(std::index_sequence<J...>);

template <template <class...> class P, class Plan, std::size_t... S>
std::type_identity<P<typename Plan::template stage<S>...>> balanced_apply(std::index_sequence<S...>);

} // namespace detail

// The plan behind Balanced: each layer's input width and cost, the cut, and the stages.
template <std::size_t N, class... Ls> struct BalancedPlan {
  static constexpr std::size_t num_layers = sizeof...(Ls);
  static_assert(detail::BalancedDeviceCountCheck<N, num_layers>::value);
  static constexpr bool valid = N >= 1 && N <= num_layers && (Layer<Ls> && ...);

  // The width entering each layer, and (last) the network's output width. The network's input is
  // its first fixed input width; a layer that keeps any width (in_features 0) takes the previous
  // one, as in a Stage.
  static constexpr std::array<std::size_t, num_layers + 1> widths = [] {
    std::array<std::size_t, num_layers + 1> w{};
    std::size_t cur = 0, j = 0;
    ((cur = cur ? cur : detail::in_of<Ls>()), ...);
    ((w[j++] = cur, cur = detail::out_of<Ls>() ? detail::out_of<Ls>() : cur), ...);
    w[j] = cur;
    return w;
  }();
  // Multiply-adds per row of each layer's forward and backward at its width (layer_cost).
  static constexpr std::array<std::size_t, num_layers> costs = [] {
    std::array<std::size_t, num_layers> c{};
    std::size_t j = 0;
    (
        [&] {
          if constexpr (Layer<Ls>) c[j] = layer_cost<Ls>(widths[j]);
          ++j;
        }(),
        ...);
    return c;
  }();

private:
  static constexpr auto cut = [] {
    std::array<std::size_t, num_layers> w{};
    for (std::size_t j = 0; j < num_layers; ++j) w[j] = widths[j];
    return detail::balanced_cut<num_layers>(costs, w, N);
  }();

public:
  static constexpr std::size_t num_stages = valid ? N : 1;
  // The index of each stage's first layer, then the number of layers. (Where the arguments are
  // wrong, one stage of every layer, so that only the check above reports.)
  static constexpr std::array<std::size_t, num_stages + 1> starts = [] {
    std::array<std::size_t, num_stages + 1> s{};
    if constexpr (valid)
      for (std::size_t k = 0; k <= N; ++k) s[k] = cut.starts[k];
    else s[1] = num_layers;
    return s;
  }();
  // The costliest stage's multiply-adds per row, and the values per row its cuts hand on.
  static constexpr std::size_t max_stage_cost = cut.max_cost;
  static constexpr std::size_t boundary_values = cut.boundary_values;

  template <std::size_t S>
  using stage = typename decltype(detail::balanced_stage<S, starts[S], std::tuple<Ls...>>(
      std::make_index_sequence<starts[S + 1] - starts[S]>{}))::type;

  // P<Stage<Device<0>, ...>, ..., Stage<Device<N-1>, ...>>: Pipeline, or BasicPipeline<T, ...>
  // through a template alias.
  template <template <class...> class P>
  using apply =
      typename decltype(detail::balanced_apply<P, BalancedPlan>(std::make_index_sequence<num_stages>{}))::type;
};

// Balanced<N, Layers...>: Pipeline<Stage<Device<0>, ...>, ..., Stage<Device<N-1>, ...>> of Layers
// in order, every stage non-empty, cut so that the costliest stage costs least; ties go to the
// fewest values across the cuts, then to the earliest cuts. The same type as the Pipeline written
// out by hand with those cuts.
template <std::size_t N, class... Ls> using Balanced = typename BalancedPlan<N, Ls...>::template apply<Pipeline>;

} // namespace tandem
