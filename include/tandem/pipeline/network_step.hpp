// SPDX-License-Identifier: Apache-2.0
// detail::issue_network_step: a training step of a small network (Fusion::fuses_network) as one
// op::SmallNetwork per micro-batch on the first stage's device.
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>

#include "tandem/backend/executor.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/stage_issue.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_io.hpp"
#include "tandem/pipeline/step_trace.hpp"
#include "tandem/timeline.hpp"

namespace tandem::detail {

// In order, the first operation sets the gradients and the step's result, the rest add; each
// reads every stage's parameters and writes its gradients and activations in place. Then each
// stage's update (with `optimize`): inside the last operation where the optimizer is Fusable,
// else after it. `counted` says whether the optimizer has counted the step. The timeline shows each operation
// as one `network` task on the first stage.
template <class Topo, class Loss, class Opt>
void issue_network_step(std::span<StageState<typename Topo::value_type>> stages, const Plan &plan,
                        const typename Topo::value_type *x_device,
                        const typename Loss::template target_type<typename Topo::value_type> *targets, Opt *opt,
                        bool optimize, typename Topo::value_type *loss_slot, std::int32_t *invalid_flag,
                        StepTrace &trace, bool &counted) {
  using T = typename Topo::value_type;
  using Issue = StageIssue<Topo>;
  constexpr std::size_t num_stages = Topo::num_stages;
  auto &first = stages.front();
  // It reads what the other stages' streams were given before it: the targets, uploaded on the
  // last one's.
  for (std::size_t s = 1; s < num_stages; ++s) {
    stages[s].ex->record(*stages[s].mark);
    first.ex->wait(*stages[s].mark);
  }
  const T scale = Loss::template scale<T>(plan.batch, Topo::out_features);
  const std::size_t per_sample = Loss::targets_per_sample(Topo::out_features);
  // The updates go into the last micro-batch's operation where the optimizer can describe them.
  constexpr bool optimizing = optimizing_v<Opt>;
  constexpr bool fuses_updates =
      std::is_same_v<T, float> && optim::Fusable<Opt> && num_stages <= backend::op::SmallNetwork<T>::max_updates;
  for (std::size_t k = 0; k < plan.m; ++k) {
    const std::size_t rows = plan.rows[k];
    backend::op::SmallNetwork<T> net{.rows = rows, .first = k == 0};
    if constexpr (fuses_updates)
      if (optimize && k + 1 == plan.m) {
        for (std::size_t s = 0; s < num_stages; ++s) net.updates[net.update_count++] = opt->fused_step_group(s);
        counted = true;
      }
    net.loss = Loss::template small_loss<T>(targets + plan.offset[k] * per_sample, scale, loss_slot, invalid_flag);
    Topo::for_each_stage([&]<std::size_t I>() {
      auto &st = stages[I];
      Slot<T> &slot = st.slots[k];
      const T *input = I > 0      ? stages[I - 1].slots[k].out.data() // the boundary, read in place
                       : x_device ? x_device + plan.offset[k] * Topo::in_features
                                  : slot.input;
      const auto io = Issue::template layer_io<I>(st, slot, input);
      const auto op = Issue::template small_op<I, backend::op::SmallForward<T>>(rows, st.params.data(), st.grads.data(),
                                                                                io.x.data(), io.y.data());
      for (std::size_t j = 0; j < Topo::template stage<I>::num_layers; ++j) net.layers[net.count++] = op.layers[j];
      st.live = 0;
      st.peak = 1; // a micro-batch's activations are used up before the next one's are made
    });
    trace.timed(0, TaskKind::network, static_cast<std::ptrdiff_t>(k),
                [&] { first.ex->submit([ex = first.ex, net] { ex->run(net); }); });
  }
  // What the other stages do next (their updates, where not fused; the loss's download on the
  // last) comes after it.
  first.ex->record(*first.mark);
  for (std::size_t s = 1; s < num_stages; ++s) stages[s].ex->wait(*first.mark);
  if constexpr (optimizing && !fuses_updates)
    if (optimize) {
      for (std::size_t s = 0; s < num_stages; ++s) trace.timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); });
      counted = true;
    }
}

} // namespace tandem::detail
