// SPDX-License-Identifier: Apache-2.0
// detail::StageState: what a stage holds at run time - its executor, parameters and gradients,
// links to its neighbours, and the buffers of the micro-batches in flight (detail::Slot) and of
// the activations kept from forward to backward (the stash).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tandem/backend/event.hpp"
#include "tandem/backend/executor.hpp"
#include "tandem/backend/link.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/stage_memory.hpp"

namespace tandem::detail {

// What one micro-batch needs on one stage. The buffers that cross a boundary (input, output and
// their gradients) are per micro-batch, since a neighbour reads or writes them on its own time;
// the activations inside the stage live in a stash entry, held from forward to backward.
template <class T> struct Slot {
  Buffer<T> input_own, out, dy_own, dx;
  std::size_t stash = 0;    // this step's entry in StageState::stash
  const T *input = nullptr; // own buffer, or the previous stage's output where no copy is made
  T *dy = nullptr;          // own buffer, or the next stage's dx
  std::unique_ptr<backend::Event> forward_done, backward_done, input_ready, dy_ready;
  backend::Event *wait_input = nullptr, *wait_dy = nullptr;
};

// The workspace policy (Runtime::prepare): buffers that hold more than workspace_shrink_factor
// times what a step needs, and more than workspace_keep_bytes beyond it, are made again to fit.
inline constexpr std::size_t workspace_shrink_factor = 4;
inline constexpr std::size_t workspace_keep_bytes = std::size_t{64} << 20;
// Whether `held` bytes are oversized for a step that needs `needed`, by that policy.
inline bool oversized(std::size_t held, std::size_t needed) {
  return held / workspace_shrink_factor > needed && held - needed > workspace_keep_bytes;
}

// a + b + c, or Error (checked_product, host_memory.hpp, for a product).
inline std::size_t checked_sum(std::size_t a, std::size_t b, std::size_t c) {
  if (a > SIZE_MAX - b || a + b > SIZE_MAX - c) fail("buffer size overflows: ", a, " + ", b, " + ", c);
  return a + b + c;
}

template <class T> struct StageState {
  backend::Executor *ex = nullptr; // null where another rank runs the stage (it holds nothing here)
  std::size_t device = 0;
  int rank = 0;
  std::vector<std::size_t> widths; // input of each layer, then the output
  // Values per row each layer keeps from its forward to its backward (saved_values), and the
  // most any layer needs during one call (scratch_values).
  std::vector<std::size_t> saved_widths;
  std::size_t scratch_width = 0;
  // Values per row of each layer's output gradient that a split backward keeps from
  // backward_input to backward_weights: the output's width for a SplitBackward layer but the last
  // (whose gradient is the slot's dy, kept anyway), 0 for the others.
  std::vector<std::size_t> split_widths;
  Buffer<T> params, grads;
  std::unique_ptr<backend::Link> to_next, to_prev;
  std::vector<Slot<T>> slots;
  // Outputs of all layers but the last, then each layer's saved memory (an empty Buffer where it
  // keeps none), for as many micro-batches as the schedule keeps alive at once (1F1B: stages -
  // stage; GPipe: m); the backward's gradient ping-pong and the layers' per-call memory, which one
  // stream uses for one micro-batch at a time.
  // Where the step's schedule splits backwards (split_stash), each entry also holds the output
  // gradients of split_widths, one Buffer per layer but the last (empty where 0).
  std::vector<std::vector<Buffer<T>>> stash;
  bool split_stash = false;
  Buffer<T> scratch[2];
  Buffer<T> layer_scratch;
  std::size_t capacity = 0;   // rows each buffer holds
  bool set_gradients = false; // this step's first backward sets the gradients (library layers only)
  // Whole-network steps: the first stage's marks the step's end; each other stage's what it was
  // given before the step.
  std::unique_ptr<backend::Event> mark;
  std::size_t live = 0, peak = 0; // micro-batches whose activations are held: now, most this step

  // What m slots of `rows` rows and `entries` stash entries (`split`: with the output gradients of
  // a split backward) take, in bytes (Error on overflow).
  std::size_t bytes_for(std::size_t m, std::size_t rows, std::size_t entries, bool split = false) const {
    const StageRowValues v = stage_row_values(widths, saved_widths, scratch_width, split_widths);
    const std::size_t stash_row = v.stash + (split ? v.kept : 0);
    const char *what = "a stage's workspace";
    const std::size_t per_row =
        checked_sum(checked_product(m, v.slot, what), checked_product(entries, stash_row, what), v.workspace);
    return checked_product(checked_product(rows, per_row, what), sizeof(T), what);
  }
  std::size_t held_bytes() const { return capacity ? bytes_for(slots.size(), capacity, stash.size(), split_stash) : 0; }
  bool fits(std::size_t m, std::size_t rows, std::size_t entries, bool split = false) const {
    return slots.size() >= m && capacity >= rows && stash.size() >= entries && (split_stash || !split);
  }

  // Buffers for m slots of `rows` rows and `entries` stash entries, in place of the old ones,
  // which go first (their contents do not outlive a step), so that the peak is the new size. The
  // new ones are taken only once all are made: an allocation that fails leaves the stage with
  // none, and the next step makes them again. The caller has waited for the work that may still
  // read the old ones.
  void resize(std::size_t m, std::size_t rows, std::size_t entries, bool split = false);
  // Gives every buffer back; the next step makes what it needs.
  void release() {
    slots.clear();
    stash.clear();
    for (auto &g : scratch) g = Buffer<T>();
    layer_scratch = Buffer<T>();
    capacity = 0;
    split_stash = false;
  }
  // Gives each micro-batch its stash entry.
  void use_stash(const StashPlan &plan) {
    for (std::size_t k = 0; k < plan.entry.size(); ++k) slots[k].stash = plan.entry[k];
  }

  // The output of layer j for one micro-batch: the stage's output, or a stash entry's.
  T *activation(Slot<T> &slot, std::size_t j) {
    return j + 1 == widths.size() - 1 ? slot.out.data() : stash[slot.stash][j].data();
  }
  // Layer j's saved memory for one micro-batch (null where it keeps none).
  T *saved(Slot<T> &slot, std::size_t j) { return stash[slot.stash][widths.size() - 2 + j].data(); }
  // Layer j's output gradient, kept by a split backward (j below the last layer; null where the
  // layer does not split, or the stash keeps none).
  T *kept_gradient(Slot<T> &slot, std::size_t j) {
    return split_stash ? stash[slot.stash][2 * (widths.size() - 1) - 1 + j].data() : nullptr;
  }
};

// (Out of the class: a program linked with tandem::compiled finds it compiled there.)
template <class T> void StageState<T>::resize(std::size_t m, std::size_t rows, std::size_t entries, bool split) {
  (void)bytes_for(m, rows, entries, split); // (sizes that overflow fail here, before any allocation)
  release();
  std::vector<Slot<T>> new_slots(m);
  for (auto &slot : new_slots) {
    slot.input_own = Buffer<T>(*ex, rows * widths.front());
    slot.out = Buffer<T>(*ex, rows * widths.back());
    slot.dy_own = Buffer<T>(*ex, rows * widths.back());
    slot.dx = Buffer<T>(*ex, rows * widths.front());
    slot.forward_done = ex->make_event();
    slot.backward_done = ex->make_event();
    slot.input_ready = ex->make_event();
    slot.dy_ready = ex->make_event();
  }
  std::vector<std::vector<Buffer<T>>> new_stash(entries);
  for (auto &entry : new_stash) {
    for (std::size_t j = 1; j + 1 < widths.size(); ++j) entry.emplace_back(*ex, rows * widths[j]);
    for (const std::size_t w : saved_widths) entry.push_back(w ? Buffer<T>(*ex, rows * w) : Buffer<T>());
    if (split)
      for (const std::size_t w : split_widths) entry.push_back(w ? Buffer<T>(*ex, rows * w) : Buffer<T>());
  }
  const std::size_t widest = *std::max_element(widths.begin(), widths.end());
  Buffer<T> new_scratch[2] = {Buffer<T>(*ex, rows * widest), Buffer<T>(*ex, rows * widest)};
  Buffer<T> new_layer_scratch = scratch_width ? Buffer<T>(*ex, rows * scratch_width) : Buffer<T>();
  slots = std::move(new_slots);
  stash = std::move(new_stash);
  for (int i = 0; i < 2; ++i) scratch[i] = std::move(new_scratch[i]);
  layer_scratch = std::move(new_layer_scratch);
  capacity = rows;
  split_stash = split;
}

// Buffers for a step (the workspace). They grow to fit a step and are reused while they fit.
// Growing keeps the larger of the old and new micro-batch count, rows and stash entries (an epoch's
// full and last batches then share one size) unless that would be oversized for this step: more
// than workspace_shrink_factor times what it needs, and workspace_keep_bytes more. Buffers that
// have become oversized are made again to fit, so that one huge batch does not hold its memory for
// good. `before_replacing(stage)` runs before a stage's buffers are replaced. Another rank's stage
// (no executor) holds none.
template <class T, class BeforeReplacing>
void prepare_workspace(std::span<StageState<T>> stages, const Plan &plan, const TaskOrders &orders,
                       BeforeReplacing &&before_replacing) {
  const std::size_t rows = plan.max_rows();
  for (std::size_t s = 0; s < stages.size(); ++s) {
    auto &st = stages[s];
    if (!st.ex) continue;
    const std::vector<schedule::Task> order = stage_order(orders, s);
    const StashPlan stash = assign_stash(order, plan.m);
    const bool split = splits_backward(order);
    const std::size_t needed = st.bytes_for(plan.m, rows, stash.entries, split);
    if (!st.fits(plan.m, rows, stash.entries, split) || oversized(st.held_bytes(), needed)) {
      before_replacing(st);
      std::size_t m = std::max(plan.m, st.slots.size()), r = std::max(rows, st.capacity),
                  e = std::max(stash.entries, st.stash.size());
      bool sp = split || (st.split_stash && st.stash.size() >= e);
      if (oversized(st.bytes_for(m, r, e, sp), needed)) m = plan.m, r = rows, e = stash.entries, sp = split;
      st.resize(m, r, e, sp);
    }
    st.use_stash(stash);
  }
}

// Where each slot reads its input and its output gradient: a copy (a link between the stages), or
// in place (the neighbour's buffer, where the two share memory), and which event says it is there.
template <class T> void connect_slots(std::span<StageState<T>> stages) {
  const std::size_t S = stages.size();
  for (std::size_t s = 0; s < S; ++s) {
    for (std::size_t k = 0; k < stages[s].slots.size(); ++k) {
      Slot<T> &slot = stages[s].slots[k];
      // (from another rank: received into the own buffer)
      const bool copied_in = s == 0 || stages[s - 1].to_next || !stages[s - 1].ex;
      slot.input = copied_in ? slot.input_own.data() : stages[s - 1].slots[k].out.data();
      slot.wait_input = s == 0      ? nullptr
                        : copied_in ? slot.input_ready.get()
                                    : stages[s - 1].slots[k].forward_done.get();
      const bool copied_dy = s + 1 == S || stages[s].to_next || !stages[s + 1].ex;
      slot.dy = copied_dy ? slot.dy_own.data() : stages[s + 1].slots[k].dx.data();
      slot.wait_dy = s + 1 == S  ? nullptr
                     : copied_dy ? slot.dy_ready.get()
                                 : stages[s + 1].slots[k].backward_done.get();
    }
  }
}

#ifdef TANDEM_COMPILED // src/compiled.cpp
extern template struct StageState<float>;
extern template struct StageState<double>;
#endif

} // namespace tandem::detail
