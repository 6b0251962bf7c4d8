// SPDX-License-Identifier: Apache-2.0
// Stage<Device<N>, Layers...>: layers that run on one logical device.
#pragma once

#include <array>
#include <cstddef>
#include <tuple>

#include "tandem/device.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/shape.hpp"

namespace tandem {

namespace detail {

template <std::size_t Index, class L> struct LayerArgumentCheck {
  static_assert(Layer<L>, "TANDEM_NOT_A_LAYER: every Stage argument after the Device must satisfy tandem::Layer "
                          "(in_features, out_features, parameters, init, forward, backward); "
                          "LayerArgumentCheck<index, type> in this message names the argument");
  static constexpr bool value = true;
};

} // namespace detail

template <class D, class... Ls> struct Stage {
  static_assert(is_device_v<D>, "TANDEM_STAGE_NEEDS_DEVICE: the first argument of Stage must be Device<N>, "
                                "as in Stage<Device<0>, Linear<10, 20>, ReLU>");
  static_assert(sizeof...(Ls) > 0, "TANDEM_STAGE_WITHOUT_LAYERS: a Stage needs at least one layer after its Device");
  static_assert([]<std::size_t... J>(std::index_sequence<J...>) {
    return (detail::LayerArgumentCheck<J, Ls>::value && ... && true);
  }(std::index_sequence_for<Ls...>{}));

  using device = D;
  using layer_types = std::tuple<Ls...>;
  template <std::size_t J> using layer = std::tuple_element_t<J, layer_types>;

  static constexpr std::size_t device_index = detail::device_index_v<D>;
  static constexpr std::size_t num_layers = sizeof...(Ls);
  static constexpr std::size_t parameter_count = (std::size_t{0} + ... + detail::params_of<Ls>());
  static_assert(detail::ParameterCountCheck<detail::InStage, detail::Counts<detail::params_of<Ls>()...>>::value);

  // The width a stage takes is that of its first layer with a fixed input (the layers before it
  // keep any width); 0 when no layer fixes one, and the pipeline then supplies it.
  static constexpr std::size_t in_features = [] {
    std::size_t w = 0;
    ((w = w ? w : detail::in_of<Ls>()), ...);
    return w;
  }();

  // Input width of each layer and, last, the stage's output width, for a stage input width `in`.
  static constexpr std::array<std::size_t, sizeof...(Ls) + 1> widths(std::size_t in) {
    std::array<std::size_t, sizeof...(Ls) + 1> w{};
    std::size_t j = 0, cur = in;
    ((w[j++] = cur, cur = detail::out_of<Ls>() ? detail::out_of<Ls>() : cur), ...);
    w[j] = cur;
    return w;
  }

  static constexpr std::size_t out_features = widths(in_features)[sizeof...(Ls)];

  static constexpr bool draws_random = (tandem::draws_random<Ls>() || ...);

  // The sequence length its layers read (the first that says; Topology checks the rest), or 0.
  static constexpr std::size_t sequence_length = [] {
    std::size_t n = 0;
    ((n = n ? n : detail::sequence_of<Ls>()), ...);
    return n;
  }();

  // Offset of each layer's parameters in the stage's flat buffer (and the total, last).
  static constexpr std::array<std::size_t, sizeof...(Ls) + 1> parameter_offsets = [] {
    std::array<std::size_t, sizeof...(Ls) + 1> o{};
    std::size_t j = 0, at = 0;
    ((o[j++] = at, at += detail::params_of<Ls>()), ...);
    o[j] = at;
    return o;
  }();
};

template <class T> struct is_stage : std::false_type {};
template <class D, class... Ls> struct is_stage<Stage<D, Ls...>> : std::true_type {};
template <class T> inline constexpr bool is_stage_v = is_stage<T>::value;

} // namespace tandem
