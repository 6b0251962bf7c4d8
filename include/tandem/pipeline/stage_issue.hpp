// SPDX-License-Identifier: Apache-2.0
// detail::StageIssue: issues one stage's forward or backward of one micro-batch on its executor,
// layer by layer (with the fusions of fusion.hpp) or as one small-stage operation.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "tandem/backend/executor.hpp"
#include "tandem/layers/hand_off.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/pipeline/fusion.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/random.hpp"

namespace tandem::detail {

template <class Topo> struct StageIssue {
  using T = typename Topo::value_type;
  using F = Fusion<Topo>;
  template <std::size_t I> using stage = typename Topo::template stage<I>;

  // Where each layer of stage I reads its input and writes its output for one micro-batch: the
  // first layer reads `input`, each other one its predecessor's output (a stash entry), and the
  // last writes the stage's output.
  template <std::size_t I> struct LayerIo {
    std::array<const T *, stage<I>::num_layers> x{};
    std::array<T *, stage<I>::num_layers> y{}, saved{};
  };
  template <std::size_t I> static LayerIo<I> layer_io(StageState<T> &st, Slot<T> &slot, const T *input) {
    LayerIo<I> io;
    for (std::size_t j = 0; j < stage<I>::num_layers; ++j) {
      io.x[j] = j == 0 ? input : st.activation(slot, j - 1);
      io.y[j] = st.activation(slot, j);
      io.saved[j] = st.saved(slot, j);
    }
    return io;
  }
  // What a layer call knows of its step: the micro-batch's first row in the whole batch, and the
  // step's key (0: not training), from which each layer's own key derives (layer_key).
  struct Call {
    std::size_t rows = 0, first_row = 0;
    std::uint64_t key = 0;
  };
  static std::uint64_t layer_key(std::uint64_t step_key, std::size_t stage, std::size_t layer) {
    if (!step_key) return 0;
    return Random::derive(step_key, stage, layer).next() | 1;
  }

  // Stage I as one small-stage operation (op::SmallForward or SmallBackward).
  template <std::size_t I, class Op>
  static Op small_op(std::size_t rows, const T *params, T *grads, const T *const *xs, T *const *ys) {
    using St = stage<I>;
    static constexpr auto w = Topo::template stage_widths<I>;
    Op op{.rows = rows, .count = St::num_layers};
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      ((op.layers[J] = St::template layer<J>::small_layer(
            LayerBackward<T>{.rows = rows,
                             .in = w[J],
                             .out = w[J + 1],
                             .params = params + St::parameter_offsets[J],
                             .grads = grads ? grads + St::parameter_offsets[J] : nullptr,
                             .x = xs[J],
                             .y = ys[J]})),
       ...);
    }
    (std::make_index_sequence<St::num_layers>{});
    return op;
  }

  // `fused`: the stage runs as one operation where it can (Fusion::fuses_small_stage).
  template <std::size_t I> static void forward(StageState<T> &st, Slot<T> &slot, const Call &call, bool fused) {
    const std::size_t rows = call.rows;
    using St = stage<I>;
    static constexpr auto w = Topo::template stage_widths<I>;
    const auto io = layer_io<I>(st, slot, slot.input);
    const auto &xs = io.x;
    const auto &ys = io.y;
    if constexpr (F::template small_stage<I>()) {
      if (fused) {
        st.ex->submit([ex = st.ex, op = small_op<I, backend::op::SmallForward<T>>(
                                       rows, st.params.data(), nullptr, xs.data(), ys.data())] { ex->run(op); });
        return;
      }
    }
    st.ex->submit(
        [ex = st.ex, params = st.params.data(), scratch = st.layer_scratch.data(), saved = io.saved, xs, ys, call] {
          [&]<std::size_t... J>(std::index_sequence<J...>) {
            (
                [&] {
                  const LayerForward<T> f{.rows = call.rows,
                                          .in = w[J],
                                          .out = w[J + 1],
                                          .params = params + St::parameter_offsets[J],
                                          .x = xs[J],
                                          .y = ys[J],
                                          .saved = saved[J],
                                          .scratch = scratch,
                                          .first_row = call.first_row,
                                          .key = layer_key(call.key, I, J)};
                  if constexpr (F::template fuses_relu<I, J>()) { // the ReLU's output, straight from the product
                    LayerForward<T> g = f;
                    g.y = ys[J + 1];
                    St::template layer<J>::forward(
                        *ex, g, Epilogue<T>{backend::Activation::relu, F::template relu_mask_of<I, J>(*ex, ys)});
                  } else if constexpr (F::template fused_activation<I, J>() == backend::Activation::gelu_tanh) {
                    LayerForward<T> g = f; // GELU's backward reads its input: the Linear's output, kept
                    g.y = ys[J + 1];
                    St::template layer<J>::forward(*ex, g, Epilogue<T>{backend::Activation::gelu_tanh, nullptr, ys[J]});
                  } else if constexpr (F::template follows_fused_linear<I, J>()) {
                    // done with the Linear before it (ReLU's backward reads the output only, so the
                    // Linear's own output was never needed; GELU's input was kept by the product)
                  } else {
                    St::template layer<J>::forward(*ex, f);
                  }
                }(),
                ...);
          }
          (std::make_index_sequence<St::num_layers>{});
        });
  }

  // `first`: the stage's first backward of the step, which sets the gradients where the stage's
  // layers allow (StageState::set_gradients) instead of adding to them.
  template <std::size_t I>
  static void backward(StageState<T> &st, Slot<T> &slot, const Call &call, bool first, bool fused) {
    const std::size_t rows = call.rows;
    using St = stage<I>;
    static constexpr auto w = Topo::template stage_widths<I>;
    constexpr std::size_t L = St::num_layers;
    static constexpr auto skipped = F::template backward_skipped<I>;
    const auto io = layer_io<I>(st, slot, slot.input);
    const auto &xs = io.x;
    const auto &ys = io.y;
    // Each layer reads its output's gradient where the layer after it wrote its input's, from the
    // stage's dy down to its dx, the scratch pair taking turns in between. A ReLU whose backward
    // the Linear after it does (relu_backward_by_next) takes no turn.
    std::array<const T *, L> dys{};
    std::array<T *, L> dxs{};
    {
      const T *dy = slot.dy;
      std::size_t turn = 0;
      for (std::size_t j = L; j-- > 0;) {
        dys[j] = dy;
        // The network's input needs no gradient: the first layer of stage 0 skips it.
        dxs[j] = j > 0 ? st.scratch[turn].data() : I > 0 ? slot.dx.data() : nullptr;
        if (!skipped[j]) {
          dy = dxs[j];
          turn ^= 1;
        }
      }
    }
    const bool accumulate = !(first && st.set_gradients);
    if constexpr (F::template small_stage<I>()) {
      if (fused && rows <= backend::op::SmallBackward<T>::max_rows) {
        auto op =
            small_op<I, backend::op::SmallBackward<T>>(rows, st.params.data(), st.grads.data(), xs.data(), ys.data());
        op.dy = slot.dy;
        op.dx = dxs[0];
        op.accumulate = accumulate;
        st.ex->submit([ex = st.ex, op] { ex->run(op); });
        return;
      }
    }
    // A ReLU mask exists only where the forward ran layer by layer: a fused small stage's forward
    // (used at any number of rows, its backward only up to SmallBackward::max_rows) wrote activations there.
    // A mask pointer is then not handed on, so that a backend can never take the activations, or
    // a mask some earlier buffer at the same address once held, for this step's mask.
    const bool forward_fused = F::template small_stage<I>() && fused;
    st.ex->submit([ex = st.ex, params = st.params.data(), grads = st.grads.data(), scratch = st.layer_scratch.data(),
                   saved = io.saved, xs, ys, dys, dxs, call, accumulate, forward_fused] {
      [&]<std::size_t... J>(std::index_sequence<J...>) {
        // last layer first
        (
            [&] {
              constexpr std::size_t j = L - 1 - J;
              if constexpr (skipped[j]) return; // done by layer j + 1
              else {
                const LayerBackward<T> b{.rows = call.rows,
                                         .in = w[j],
                                         .out = w[j + 1],
                                         .params = params + St::parameter_offsets[j],
                                         .grads = grads + St::parameter_offsets[j],
                                         .x = xs[j],
                                         .y = ys[j],
                                         .dy = dys[j],
                                         .dx = dxs[j],
                                         .saved = saved[j],
                                         .scratch = scratch,
                                         .first_row = call.first_row,
                                         .key = layer_key(call.key, I, j),
                                         .accumulate = accumulate};
                using L = typename St::template layer<j>;
                if constexpr (F::template takes_relu_backward<L>()) {
                  ReluHandOff<T> hand_off{.bias_gradient_by_next = F::template relu_backward_by_next<I, j>()};
                  if constexpr (j >= 2) {
                    if constexpr (F::template relu_backward_by_next<I, j - 2>()) {
                      using Before = typename St::template layer<j - 2>;
                      hand_off.relu_before = true;
                      hand_off.relu_mask = forward_fused ? nullptr : F::template relu_mask_of<I, j - 2>(*ex, ys);
                      hand_off.dbias_before = grads + St::parameter_offsets[j - 2] + Before::bias_offset;
                    }
                  }
                  L::backward(*ex, b, hand_off);
                } else {
                  L::backward(*ex, b);
                }
              }
            }(),
            ...);
      }
      (std::make_index_sequence<L>{});
    });
  }

  // A split backward (Task::backward_input, then Task::backward_weights), layer by layer: no
  // small-stage operation and no ReLU hand-off (each layer runs its own backward), and the
  // gradients are added to (the step zeroed them first). Layer j's output gradient: the slot's dy
  // for the last layer, a kept_gradient for a SplitBackward layer below it (which
  // backward_weights reads later), else the scratch pair taking turns.
  template <std::size_t I> struct SplitGradients {
    std::array<const T *, stage<I>::num_layers> dy{};
    std::array<T *, stage<I>::num_layers> dx{};
  };
  template <std::size_t I> static SplitGradients<I> split_gradients(StageState<T> &st, Slot<T> &slot) {
    constexpr std::size_t L = stage<I>::num_layers;
    SplitGradients<I> g;
    const T *dy = slot.dy;
    std::size_t turn = 0;
    for (std::size_t j = L; j-- > 0;) {
      g.dy[j] = dy;
      if (j == 0) {
        g.dx[j] = I > 0 ? slot.dx.data() : nullptr; // (the network's input needs no gradient)
      } else if (T *kept = st.split_widths[j - 1] ? st.kept_gradient(slot, j - 1) : nullptr) {
        g.dx[j] = kept;
      } else {
        g.dx[j] = st.scratch[turn].data();
        turn ^= 1;
      }
      dy = g.dx[j];
    }
    return g;
  }
  template <std::size_t I>
  static LayerBackward<T> split_call(StageState<T> &st, const LayerIo<I> &io, const SplitGradients<I> &g,
                                     const Call &call, std::size_t j) {
    static constexpr auto w = Topo::template stage_widths<I>;
    return {.rows = call.rows,
            .in = w[j],
            .out = w[j + 1],
            .params = st.params.data() + stage<I>::parameter_offsets[j],
            .grads = st.grads.data() + stage<I>::parameter_offsets[j],
            .x = io.x[j],
            .y = io.y[j],
            .dy = g.dy[j],
            .dx = g.dx[j],
            .saved = io.saved[j],
            .scratch = st.layer_scratch.data(),
            .first_row = call.first_row,
            .key = layer_key(call.key, I, j),
            .accumulate = true};
  }
  // The input gradient: each layer's backward_input where it splits, its whole backward where not.
  template <std::size_t I> static void backward_input(StageState<T> &st, Slot<T> &slot, const Call &call) {
    split_half<I>(st, slot, call, [](auto layer, backend::Executor &ex, const LayerBackward<T> &b) {
      using Layer = typename decltype(layer)::type;
      if constexpr (SplitBackward<Layer>) Layer::backward_input(ex, b);
      else Layer::backward(ex, b);
    });
  }
  // The weight gradients of the layers that split, from their inputs (in the stash) and the
  // output gradients backward_input kept.
  template <std::size_t I> static void backward_weights(StageState<T> &st, Slot<T> &slot, const Call &call) {
    split_half<I>(st, slot, call, [](auto layer, backend::Executor &ex, const LayerBackward<T> &b) {
      using Layer = typename decltype(layer)::type;
      if constexpr (SplitBackward<Layer>) Layer::backward_weights(ex, b);
    });
  }

private:
  // One half of a split backward, issued as one task: half(std::type_identity<Layer>{}, ex, call)
  // for each layer of stage I, last layer first.
  template <std::size_t I, class Half>
  static void split_half(StageState<T> &st, Slot<T> &slot, const Call &call, Half half) {
    using St = stage<I>;
    constexpr std::size_t L = St::num_layers;
    const auto io = layer_io<I>(st, slot, slot.input);
    const auto g = split_gradients<I>(st, slot);
    std::array<LayerBackward<T>, L> calls;
    for (std::size_t j = 0; j < L; ++j) calls[j] = split_call<I>(st, io, g, call, j);
    st.ex->submit([ex = st.ex, calls, half] {
      [&]<std::size_t... J>(std::index_sequence<J...>) {
        (half(std::type_identity<typename St::template layer<L - 1 - J>>{}, *ex, calls[L - 1 - J]), ...);
      }
      (std::make_index_sequence<L>{});
    });
  }
};

} // namespace tandem::detail
