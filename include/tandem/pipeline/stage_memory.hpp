// SPDX-License-Identifier: Apache-2.0
// detail::StageRowValues: the values per row that a stage's buffers hold, computed once for the
// runtime (StageState, which allocates them) and the memory plan (which predicts them).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <utility>

#include "tandem/layers/layer.hpp"

namespace tandem::detail {

// Values of T per row of a micro-batch in each kind of a stage's buffers (StageState::resize).
struct StageRowValues {
  std::size_t slot = 0;      // one micro-batch in flight: its input, output and their gradients
  std::size_t stash = 0;     // one stash entry: every layer's output but the last, and the layers' saved memory
  std::size_t workspace = 0; // the backward's two ping-pong buffers (widest width) and the layers' per-call memory
  // added to each stash entry where the step's schedule splits backwards (Task::backward_input):
  // the output gradient of every SplitBackward layer but the last, kept for backward_weights
  std::size_t kept = 0;
};

// `widths`: each layer's input width, then the stage's output width; `saved`: each layer's
// saved_values; `scratch`: the most scratch_values any layer needs; `kept`: the values per row a
// split backward keeps of each layer's output gradient (LayerMemory::kept).
constexpr StageRowValues stage_row_values(std::span<const std::size_t> widths, std::span<const std::size_t> saved,
                                          std::size_t scratch, std::span<const std::size_t> kept = {}) {
  StageRowValues v;
  for (const std::size_t w : kept) v.kept += w;
  v.slot = 2 * (widths.front() + widths.back());
  for (std::size_t j = 1; j + 1 < widths.size(); ++j) v.stash += widths[j];
  for (const std::size_t w : saved) v.stash += w;
  v.workspace = 2 * *std::max_element(widths.begin(), widths.end()) + scratch;
  return v;
}

// Each layer's saved_values and the stage's largest scratch_values, at the widths the stage's
// layers see (Topology::stage_widths).
template <class St> struct LayerMemory {
  std::array<std::size_t, St::num_layers> saved{};
  std::size_t scratch = 0;
  // A split backward's kept output gradient of each layer: its output width for a SplitBackward
  // layer but the stage's last (whose gradient is the slot's), else 0.
  std::array<std::size_t, St::num_layers> kept{};
};
template <class St, std::size_t N> constexpr LayerMemory<St> layer_memory(const std::array<std::size_t, N> &widths) {
  LayerMemory<St> m;
  [&]<std::size_t... J>(std::index_sequence<J...>) {
    ((m.saved[J] = saved_values<typename St::template layer<J>>(widths[J]),
      m.scratch = std::max(m.scratch, scratch_values<typename St::template layer<J>>(widths[J]))),
     ...);
    ((m.kept[J] = SplitBackward<typename St::template layer<J>> && J + 1 < St::num_layers ? widths[J + 1] : 0), ...);
  }
  (std::make_index_sequence<St::num_layers>{});
  return m;
}

// Stage I of Topo's values per row.
template <class Topo, std::size_t I> constexpr StageRowValues stage_row_values() {
  using St = typename Topo::template stage<I>;
  constexpr auto widths = Topo::template stage_widths<I>;
  constexpr LayerMemory<St> m = layer_memory<St>(widths);
  return stage_row_values(widths, m.saved, m.scratch, m.kept);
}

} // namespace tandem::detail
