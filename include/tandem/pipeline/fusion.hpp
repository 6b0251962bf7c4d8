// SPDX-License-Identifier: Apache-2.0
// detail::Fusion: which layers of a network run together as one operation - a Linear with the
// activation after it, a Linear that does the ReLU's backward before it, a small stage as one
// operation, a small network's whole step as one - decided at compile time from the layer types
// and, where the backend or the options have a say, at run time.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include "tandem/backend/executor.hpp"
#include "tandem/context.hpp"
#include "tandem/layers/hand_off.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/loss/loss.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/precision.hpp"

namespace tandem::detail {

template <class Topo> struct Fusion {
  using T = typename Topo::value_type;
  template <std::size_t I> using stage = typename Topo::template stage<I>;
  static constexpr std::size_t num_stages = Topo::num_stages;

  // Every layer of stage I describes itself as an op::SmallLayer (SmallStageLayer): the stage can
  // run as one small-stage operation.
  template <std::size_t I> static constexpr bool small_layers_only() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (SmallStageLayer<typename stage<I>::template layer<J>> && ...);
    }
    (std::make_index_sequence<stage<I>::num_layers>{});
  }
  // Every layer of stage I sets its gradients on the step's first backward (sets_gradients): the
  // stage's gradients need no zeroing before a step.
  template <std::size_t I> static constexpr bool sets_gradients_only() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (sets_gradients<typename stage<I>::template layer<J>>() && ...);
    }
    (std::make_index_sequence<stage<I>::num_layers>{});
  }
  // A stage of small layers only (within op::SmallForward's and SmallBackward's limits) can run
  // as one operation.
  template <std::size_t I> static constexpr bool small_stage() {
    using Forward = backend::op::SmallForward<T>;
    using Backward = backend::op::SmallBackward<T>;
    bool small = stage<I>::num_layers <= std::min(Forward::max_layers, Backward::max_layers) &&
                 small_layers_only<I>() && sets_gradients_only<I>();
    for (const std::size_t width : Topo::template stage_widths<I>)
      small = small && width <= std::min(Forward::max_width, Backward::max_width);
    return small;
  }
  // The whole network is small: every stage is, and all their layers fit one op::SmallNetwork.
  static constexpr bool small_network() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (small_stage<I>() && ...) && (stage<I>::num_layers + ...) <= backend::op::SmallNetwork<T>::max_layers;
    }
    (std::make_index_sequence<num_stages>{});
  }

  // The activation after layer J of stage I that J takes into its own forward (Linear's activated
  // forward): a ReLU or a GELUTanh, the two that cuBLASLt's epilogues compute (its GELU is the tanh
  // form; nn.GELU's erf form keeps its own operation). Identity: none.
  template <std::size_t I, std::size_t J> static constexpr backend::Activation fused_activation() {
    using St = stage<I>;
    constexpr auto none = backend::Activation::identity;
    if constexpr (J + 1 >= St::num_layers) return none;
    else {
      using Next = typename St::template layer<J + 1>;
      if constexpr (requires { Next::activation; }) {
        constexpr backend::Activation act = Next::activation;
        if constexpr (act != backend::Activation::relu && act != backend::Activation::gelu_tanh) return none;
        else if constexpr (requires(backend::Executor & ex, const LayerForward<T> &f) {
                             St::template layer<J>::forward(ex, f, Epilogue<T>{act});
                           })
          return act;
        else return none;
      } else {
        return none;
      }
    }
  }
  template <std::size_t I, std::size_t J> static constexpr bool fuses_relu() {
    return fused_activation<I, J>() == backend::Activation::relu;
  }
  template <std::size_t I, std::size_t J> static constexpr bool follows_fused_linear() {
    if constexpr (J == 0) return false;
    else return fused_activation<I, J - 1>() != backend::Activation::identity;
  }

  // Layer J of stage I, a Linear fused with the ReLU after it, hands that ReLU's backward and its
  // own bias gradient to layer J + 2, a Linear too (both declare takes_relu_backward): in the
  // backward, the ReLU costs no operation of its own, and on a GPU the pair's gradient and bias
  // gradient come out of J + 2's input-gradient product (cuBLASLt's DRELU_BGRAD).
  template <class L> static constexpr bool takes_relu_backward() {
    if constexpr (requires { L::takes_relu_backward; }) return L::takes_relu_backward;
    else return false;
  }
  template <std::size_t I, std::size_t J> static constexpr bool relu_backward_by_next() {
    if constexpr (!fuses_relu<I, J>() || J + 2 >= stage<I>::num_layers) return false;
    else
      return takes_relu_backward<typename stage<I>::template layer<J>>() &&
             takes_relu_backward<typename stage<I>::template layer<J + 2>>();
  }
  // The layers of stage I whose backward another does (a ReLU between two such Linears).
  template <std::size_t I>
  static constexpr auto backward_skipped = [] {
    std::array<bool, stage<I>::num_layers> r{};
    [&]<std::size_t... J>(std::index_sequence<J...>) { ((r[J + 1] = relu_backward_by_next<I, J>()), ...); }
    (std::make_index_sequence<stage<I>::num_layers - 1>{});
    return r;
  }();
  // Where layer J keeps its ReLU's mask: in its own output's stash entry, which a fused Linear
  // never writes (its product writes the ReLU's output), where the executor's mask fits in it.
  template <std::size_t I, std::size_t J>
  static void *relu_mask_of(const backend::Executor &ex, const std::array<T *, stage<I>::num_layers> &ys) {
    static constexpr std::size_t width = Topo::template stage_widths<I>[J + 1];
    if constexpr (relu_backward_by_next<I, J>())
      return ex.relu_mask_bytes(1, width) <= width * sizeof(T) ? ys[J] : nullptr;
    else return nullptr;
  }

  // Whether a stage that can (small_stage) runs as one operation, by the options and the backend.
  static bool fuses_small_stage(const ContextOptions &options, const backend::Executor &ex) {
    // Its sums are float32 multiply-adds of its own: reduced precision needs the products.
    if (std::is_same_v<T, float> && options.precision != Precision::fp32) return false;
    switch (options.fuse_small_stages) {
    case StageFusion::always: return true;
    case StageFusion::never: return false;
    case StageFusion::automatic: break;
    }
    return ex.prefers_small_stages();
  }
  // Whether a training step runs as one op::SmallNetwork per micro-batch: a small network whose
  // stages would each be fused, all on one device's memory with no copies forced between them, and
  // micro-batches the operation can take (op::SmallNetwork::max_rows). On one GPU that is the default; on the host
  // only with fuse_small_stages = always, and then nothing crosses its workers' boundaries.
  template <class Loss>
  static bool fuses_network(const ContextOptions &options, std::span<backend::Executor *const> executors,
                            const Plan &plan) {
    if constexpr (!small_network() || !loss::FusableLoss<Loss>) {
      return false;
    } else {
      if (options.force_copies) return false;
      for (const backend::Executor *ex : executors)
        if (!fuses_small_stage(options, *ex)) return false;
      if (plan.max_rows() > backend::op::SmallNetwork<T>::max_rows) return false;
      return executors.front()->shares_memory_with(executors);
    }
  }
};

} // namespace tandem::detail
