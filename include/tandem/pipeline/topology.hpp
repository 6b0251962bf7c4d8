// SPDX-License-Identifier: Apache-2.0
// detail::Topology: a network's shape as the compiler sees it - its stages, the width entering each
// one, their devices - with the checks that make a shape mistake a compile error.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tandem/error.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/shape.hpp"
#include "tandem/stage.hpp"

namespace tandem::detail {

template <std::size_t Index, class S> struct StageArgumentCheck {
  static_assert(is_stage_v<S>, "TANDEM_NOT_A_STAGE: every Pipeline argument must be a Stage<Device<N>, Layers...>; "
                               "StageArgumentCheck<index, type> in this message names the argument");
  static constexpr bool value = true;
};

template <class T, class... Stages> struct Topology {
  static_assert(sizeof...(Stages) > 0, "TANDEM_PIPELINE_WITHOUT_STAGES: a Pipeline needs at least one Stage, as in "
                                       "Pipeline<Stage<Device<0>, Linear<10, 2>>>");
  static_assert([]<std::size_t... S>(std::index_sequence<S...>) {
    return (StageArgumentCheck<S, Stages>::value && ... && true);
  }(std::index_sequence_for<Stages...>{}));

  using value_type = T;
  using stage_list = std::tuple<Stages...>;
  static constexpr std::size_t num_stages = sizeof...(Stages);
  template <std::size_t I> using stage = std::tuple_element_t<I, stage_list>;

  // Width entering each stage, and (last) the network's output width. A stage that starts with
  // width-keeping layers takes whatever the previous stage gives it.
  static constexpr bool all_stages = (true && ... && is_stage_v<Stages>);
  static constexpr std::array<std::size_t, num_stages + 1> widths = [] {
    std::array<std::size_t, num_stages + 1> w{};
    if constexpr (num_stages > 0 && all_stages) { // else only the argument checks above report
      w[0] = std::tuple_element_t<0, stage_list>::in_features;
      std::size_t s = 0;
      ((w[s + 1] = Stages::widths(w[s])[Stages::num_layers], ++s), ...);
    }
    return w;
  }();

  // The input width of each layer of stage I, then the stage's output width.
  template <std::size_t I> static constexpr auto stage_widths = stage<I>::widths(widths[I]);

private:
  template <std::size_t S> static constexpr bool stage_widths_agree() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (WidthCheck<AtStage<S>, AtLayer<J>, Expects<in_of<typename stage<S>::template layer<J>>()>,
                         Receives<stage_widths<S>[J]>>::value &&
              ... && true);
    }
    (std::make_index_sequence<stage<S>::num_layers>{});
  }

public:
  // One diagnostic per mistake: the width checks run only on a well-formed list of stages, and
  // not past an input width that cannot be derived.
  static constexpr bool widths_agree = [] {
    if constexpr (num_stages > 0 && all_stages) {
      if constexpr (InputWidthCheck<AtStage<0>, Receives<widths[0]>>::value && widths[0] > 0)
        return []<std::size_t... S>(std::index_sequence<S...>) { return (stage_widths_agree<S>() && ... && true); }
      (std::make_index_sequence<num_stages>{});
    }
    return true;
  }();
  static_assert(widths_agree);

  // The rows of one sample: the sequence length every sequence-reading layer shares (1 where none
  // reads sequences). The pipeline splits batches at whole samples.
  static constexpr std::size_t sequence_length = [] {
    std::size_t n = 0;
    if constexpr (all_stages) {
      [&]<std::size_t... S>(std::index_sequence<S...>) { ((n = n ? n : Stages::sequence_length), ...); }
      (std::make_index_sequence<num_stages>{});
    }
    return n;
  }();
  static constexpr std::size_t rows_per_sample = sequence_length ? sequence_length : 1;
  static constexpr bool draws_random = (false || ... || Stages::draws_random);

private:
  template <std::size_t S> static constexpr bool stage_sequences_agree() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (SequenceLengthCheck<AtStage<S>, AtLayer<J>, SequenceOf<sequence_length>,
                                  SequenceOf<tandem::sequence_length<typename stage<S>::template layer<J>>()>>::value &&
              ... && true);
    }
    (std::make_index_sequence<stage<S>::num_layers>{});
  }
  template <std::size_t S> static constexpr bool stage_reads_no_tokens() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return ([] {
        using L = typename stage<S>::template layer<J>;
        if constexpr (!std::is_same_v<layer_input_t<L, T>, T>) return TokenInputCheck<AtStage<S>, AtLayer<J>>::value;
        else return true;
      }() && ... &&
              true);
    }
    (std::make_index_sequence<stage<S>::num_layers>{});
  }

public:
  static constexpr bool sequences_agree = [] {
    if constexpr (num_stages > 0 && all_stages) return []<std::size_t... S>(std::index_sequence<S...>) {
        return ((stage_sequences_agree<S>() && stage_reads_no_tokens<S>()) && ... && true);
      }
    (std::make_index_sequence<num_stages>{});
    return true;
  }();
  static_assert(sequences_agree);

  // What the network reads: its values, or token ids where its first layer is an Embedding. Ids
  // travel in the input's buffers, which are as wide as a value.
  using input_type = layer_input_t<typename stage<0>::template layer<0>, T>;
  static_assert(sizeof(input_type) <= sizeof(T));
  // Checks the input's values where the first layer says what it accepts (check_input); throws Error.
  static void check_input(std::span<const input_type> x, const char *call) {
    using First = typename stage<0>::template layer<0>;
    if constexpr (requires { First::check_input(x, call); }) First::check_input(x, call);
  }

  static constexpr std::size_t in_features = widths[0];
  static constexpr std::size_t out_features = widths[num_stages];
  static constexpr std::size_t parameter_count = (std::size_t{0} + ... + Stages::parameter_count);
  static_assert(ParameterCountCheck<InPipeline, Counts<Stages::parameter_count...>>::value);
  static constexpr std::size_t largest_stage = std::max({Stages::parameter_count...});

  // The seed's C = sum s_i * b * 2: each boundary's activations forward and gradients backward.
  static constexpr std::size_t boundary_bytes(std::size_t batch) {
    std::size_t elements = 0;
    for (std::size_t s = 1; s < num_stages; ++s) elements += widths[s];
    if (batch != 0 && elements > std::numeric_limits<std::size_t>::max() / 2 / sizeof(T) / batch)
      fail("boundary_bytes: a batch of ", batch, " moves ", elements, " x ", batch,
           " x 2 values, whose bytes overflow a std::size_t");
    return elements * batch * 2 * sizeof(T);
  }

  // PyTorch's name of a layer's parameter, as nn.Sequential members: "stage1.2.weight".
  static std::string parameter_name(std::size_t stage, std::size_t layer, const ParameterSpec &p) {
    return "stage" + std::to_string(stage) + "." + std::to_string(layer) + "." + std::string(p.name);
  }

  static constexpr std::array<std::size_t, num_stages> devices{Stages::device_index...};
  static constexpr std::size_t device_of(std::size_t s) { return devices[s]; }
  // Logical devices 0 .. the highest a stage names (some may hold no stage).
  static constexpr std::size_t num_devices = std::max({Stages::device_index...}) + 1;

  // Calls f.template operator()<I>() for every stage, in order.
  template <class F> static void for_each_stage(F &&f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f.template operator()<I>(), ...); }
    (std::make_index_sequence<num_stages>{});
  }
  // Calls f.template operator()<I>() for the run-time stage index s.
  template <class F> static void with_stage(std::size_t s, F &&f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { ((s == I ? (f.template operator()<I>(), 0) : 0), ...); }
    (std::make_index_sequence<num_stages>{});
  }
};

} // namespace tandem::detail
