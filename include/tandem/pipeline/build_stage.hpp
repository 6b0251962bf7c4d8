// SPDX-License-Identifier: Apache-2.0
// detail::build_stage: a stage made at construction - its widths and its layers' memory per row,
// its parameters initialised from the seed as PyTorch's layers initialise theirs, named handles,
// gradients zeroed - or, where another rank runs it, its parameters' names and shapes alone.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/context.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/parameter.hpp"
#include "tandem/pipeline/ranks.hpp"
#include "tandem/pipeline/stage_memory.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/random.hpp"

namespace tandem::detail {

// Stage I of Topo into `st`; appends its parameters' handles and its parameter group. Layer J's
// generator is derived from (seed, I, J), so a stage's weights do not depend on the others'.
template <class Topo, std::size_t I, class T>
void build_stage(StageState<T> &st, const Ranks &ranks, ContextState &ctx, std::uint64_t seed,
                 const std::shared_ptr<const char> &alive, std::vector<Parameter<T>> &parameters,
                 std::vector<optim::ParameterGroup<T>> &groups) {
  using St = typename Topo::template stage<I>;
  static constexpr auto w = Topo::template stage_widths<I>;
  st.device = St::device_index;
  st.rank = ranks.rank_of(I);
  st.widths.assign(w.begin(), w.end());
  static constexpr LayerMemory<St> memory = layer_memory<St>(w);
  st.saved_widths.assign(memory.saved.begin(), memory.saved.end());
  st.scratch_width = memory.scratch;
  st.split_widths.assign(memory.kept.begin(), memory.kept.end() - 1);
  if (!ranks.local(I)) { // another rank's: its names and shapes only
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      (
          [&] {
            for (const ParameterSpec &p : St::template layer<J>::parameters)
              parameters.emplace_back(Topo::parameter_name(I, J, p), p.rows, p.cols, st.rank);
          }(),
          ...);
    }
    (std::make_index_sequence<St::num_layers>{});
    groups.push_back({nullptr, nullptr, nullptr, 0, nullptr, {}});
    return;
  }
  st.ex = &ctx.executor(St::device_index);
  st.mark = st.ex->make_event();
  st.params = Buffer<T>(*st.ex, St::parameter_count);
  st.grads = Buffer<T>(*st.ex, St::parameter_count);
  auto host = host_vector<T>(St::parameter_count, "a network's initial parameters");
  [&]<std::size_t... J>(std::index_sequence<J...>) {
    (
        [&] {
          using L = typename St::template layer<J>;
          constexpr std::size_t at = St::parameter_offsets[J];
          Random rng = Random::derive(seed, I, J);
          L::init(std::span<T>(host.data() + at, parameter_count_v<L>), w[J], rng);
          std::size_t within = at;
          for (const ParameterSpec &p : L::parameters) {
            parameters.emplace_back(Topo::parameter_name(I, J, p), *st.ex, st.params.data() + within,
                                    st.grads.data() + within, p.rows, p.cols, st.rank, alive);
            within += p.size();
          }
        }(),
        ...);
  }
  (std::make_index_sequence<St::num_layers>{});
  if (!host.empty()) {
    st.ex->upload(st.params.data(), host.data(), host.size() * sizeof(T));
    st.ex->submit([ex = st.ex, g = st.grads.data(), n = host.size()] {
      ex->run(backend::op::Fill<T>{.n = n, .value = T(0), .dst = g});
    });
  }
  st.ex->synchronize();
  groups.push_back({st.ex, st.params.data(), st.grads.data(), St::parameter_count, nullptr, {}});
}

} // namespace tandem::detail
