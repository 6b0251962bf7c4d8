// SPDX-License-Identifier: Apache-2.0
// MemoryPlan: what a network, its optimizer and one training step of a given shape allocate on each
// logical device, known before the run (Net::memory_plan, constexpr; docs/memory.md).
#pragma once

#include <array>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/stage_memory.hpp"

namespace tandem {

// One stage's bytes on its device, by part.
struct StageMemory {
  std::size_t device = 0;
  std::size_t parameters = 0, gradients = 0, optimizer_state = 0;
  // Kept from a micro-batch's forward to its backward (the inner layers' outputs and the layers'
  // saved memory; where the schedule splits backwards, also the output gradients kept for
  // backward_weights, and until then), for the `live` micro-batches the schedule keeps at once on
  // this stage.
  std::size_t activations = 0, live = 0;
  // Every micro-batch of the step: its input, output and their gradients, the buffers that cross
  // a boundary (a neighbour reads or writes them on its own time).
  std::size_t boundary = 0;
  // The backward's two gradient buffers and the layers' per-call memory (scratch_values).
  std::size_t workspace = 0;
  // The last stage: the step's loss and status word, and the network's copy of the targets.
  std::size_t loss = 0;

  constexpr std::size_t total() const {
    return parameters + gradients + optimizer_state + activations + boundary + workspace + loss;
  }
};

// The plan of Net::memory_plan: per stage, and summed per logical device.
template <std::size_t Stages, std::size_t Devices> struct MemoryPlan {
  static constexpr std::size_t num_stages = Stages, num_devices = Devices;
  std::size_t rows = 0;             // the step's rows (tokens, for sequences)
  std::size_t micro_batches = 0;    // the schedule's m for them
  std::size_t micro_batch_rows = 0; // rows of the largest micro-batch, which every buffer holds
  std::array<StageMemory, Stages> stages{};

  // Everything the runtime allocates on logical device d: a ContextOptions::device_memory entry
  // of this many bytes fits the network, its optimizer and the step, and one byte less does not.
  constexpr std::size_t device_bytes(std::size_t d) const {
    std::size_t bytes = 0;
    for (const StageMemory &s : stages)
      if (s.device == d) bytes += s.total();
    return bytes;
  }
  constexpr std::size_t total_bytes() const {
    std::size_t bytes = 0;
    for (const StageMemory &s : stages) bytes += s.total();
    return bytes;
  }

  // A table of the parts per stage, then each device's total, as a profiler's summary reads.
  std::string describe() const {
    std::string out = "memory plan: " + std::to_string(rows) + " rows in " + std::to_string(micro_batches) +
                      " micro-batch" + (micro_batches == 1 ? "" : "es") + " of at most " +
                      std::to_string(micro_batch_rows) + " rows; bytes\n";
    char line[200];
    std::snprintf(line, sizeof line, "%-5s %-6s %12s %12s %12s %12s %4s %12s %12s %10s %13s\n", "stage", "device",
                  "parameters", "gradients", "optimizer", "activations", "live", "boundary", "workspace", "loss",
                  "total");
    out += line;
    for (std::size_t s = 0; s < Stages; ++s) {
      const StageMemory &m = stages[s];
      std::snprintf(line, sizeof line, "%-5zu %-6zu %12zu %12zu %12zu %12zu %4zu %12zu %12zu %10zu %13zu\n", s,
                    m.device, m.parameters, m.gradients, m.optimizer_state, m.activations, m.live, m.boundary,
                    m.workspace, m.loss, m.total());
      out += line;
    }
    for (std::size_t d = 0; d < Devices; ++d) {
      std::snprintf(line, sizeof line, "Device<%zu>: %zu bytes (%.2f MiB)\n", d, device_bytes(d),
                    static_cast<double>(device_bytes(d)) / (1024.0 * 1024.0));
      out += line;
    }
    return out;
  }
};

namespace detail {

// The plan of a network (Topology Topo) trained with loss Loss, schedule `sched` and an optimizer
// holding `state_bytes(P)` bytes for a stage of P parameters, on a step of `rows` rows with the
// targets in host memory (the network keeps a copy; targets already on the device need none).
// Each part follows the allocation it predicts: build_stage (parameters, gradients), the
// optimizer's constructor, Runtime (the step's result; the targets' copy, stage_targets) and
// StageState::resize (boundary, activations, workspace) with prepare_workspace's sizes.
template <class Topo, class Loss, class Sched, class StateBytes>
constexpr MemoryPlan<Topo::num_stages, Topo::num_devices> plan_memory(std::size_t rows, const Sched &sched,
                                                                      StateBytes state_bytes) {
  using T = typename Topo::value_type;
  using Target = typename Loss::template target_type<T>;
  constexpr std::size_t S = Topo::num_stages, per_sample = Topo::rows_per_sample;
  if (rows == 0 || rows % per_sample != 0)
    fail("memory_plan: ", rows, " rows are not a positive whole number of samples of ", per_sample, " rows");
  const std::size_t samples = rows / per_sample, m = sched.count(samples);
  if (m == 0 || m > samples)
    fail("memory_plan: the schedule splits ", samples, " samples into ", m,
         " micro-batches, but needs 1 <= micro_batches <= samples");
  MemoryPlan<S, Topo::num_devices> plan;
  plan.rows = rows;
  plan.micro_batches = m;
  plan.micro_batch_rows = (samples / m + (samples % m ? 1 : 0)) * per_sample;
  const char *what = "memory_plan";
  const auto bytes = [&](std::size_t count, std::size_t values) {
    return checked_product(checked_product(checked_product(count, plan.micro_batch_rows, what), values, what),
                           sizeof(T), what);
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (
        [&] {
          constexpr StageRowValues v = stage_row_values<Topo, I>();
          constexpr std::size_t P = Topo::template stage<I>::parameter_count;
          StageMemory &st = plan.stages[I];
          st.device = Topo::devices[I];
          st.parameters = st.gradients = P * sizeof(T);
          st.optimizer_state = state_bytes(P);
          const std::vector<schedule::Task> order = stage_tasks(sched, Topo::devices, I, m);
          st.live = assign_stash(order, m).entries;
          // (a split backward's entries also keep the output gradients backward_weights reads)
          st.activations = bytes(st.live, v.stash + (splits_backward(order) ? v.kept : 0));
          st.boundary = bytes(m, v.slot);
          st.workspace = bytes(1, v.workspace);
          if (I + 1 == S)
            st.loss = sizeof(StepResult<T>) +
                      checked_product(checked_product(rows, Loss::targets_per_sample(Topo::out_features), what),
                                      sizeof(Target), what);
        }(),
        ...);
  }
  (std::make_index_sequence<S>{});
  return plan;
}

} // namespace detail
} // namespace tandem
