// SPDX-License-Identifier: Apache-2.0
// Pipeline<Stages...>: a network split into stages, each on its logical device. This header is the
// public face; the run-time machinery lives in pipeline/ (docs/design.md draws the rooms).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tandem/context.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/detail/train_call.hpp"
#include "tandem/error.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/loss/loss.hpp"
#include "tandem/memory_plan.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/parameter.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/pipeline/runtime.hpp"
#include "tandem/pipeline/step_io.hpp"
#include "tandem/pipeline/topology.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/schedule/schedule.hpp"
#include "tandem/tensor.hpp"

namespace tandem {

// The network in the precision T; Pipeline (below) is the float one users write. A double
// pipeline runs on the host backend and serves finite-difference gradient checks.
template <class T, class... Stages> class BasicPipeline {
  using topology = detail::Topology<T, Stages...>;
  static_assert(topology::widths_agree);

public:
  using value_type = T;
  // What forward and train_step read: T, or int32 token ids where the first layer is an Embedding.
  using input_type = typename topology::input_type;
  static constexpr std::size_t num_stages = topology::num_stages;
  template <std::size_t I> using stage = typename topology::template stage<I>;

  static constexpr std::size_t in_features = topology::in_features;
  static constexpr std::size_t out_features = topology::out_features;
  static constexpr std::size_t parameter_count = topology::parameter_count;
  // Rows of one sample: the sequence length where layers read whole sequences, else 1. Batches
  // hold whole samples, and micro_batches counts samples.
  static constexpr std::size_t sequence_length = topology::rows_per_sample;

  // The width entering stage I (its in_features, also where the stage itself cannot tell).
  template <std::size_t I> static constexpr std::size_t stage_in_features = topology::widths[I];

  // Bytes that cross stage boundaries in one training step with `batch` samples: each
  // boundary's activations forward and their gradients backward, the seed's C = sum s_i * b * 2.
  static constexpr std::size_t boundary_bytes(std::size_t batch) { return topology::boundary_bytes(batch); }

  // Logical devices 0 .. the highest a stage names.
  static constexpr std::size_t num_devices = topology::num_devices;
  // What a fresh network, its optimizer (by its options: optim::SGDOptions, AdamOptions,
  // AdamWOptions; none: forward and backward only) and one training step of `rows` rows under
  // `sched` allocate, per stage and logical device, exactly (docs/memory.md). Loss: the targets'
  // type and count, whose copy the network keeps when they come from host memory. constexpr: a
  // network that cannot fit a budget need not compile, as in
  //   static_assert(Net::memory_plan(64, schedule::GPipe{.micro_batches = 8}, optim::AdamOptions{})
  //                     .device_bytes(1) <= (1u << 20));
  template <class Loss = loss::CrossEntropy, schedule::Schedule Sched, class Options>
  static constexpr MemoryPlan<num_stages, num_devices> memory_plan(std::size_t rows, const Sched &sched,
                                                                   const Options &options) {
    // (state_bytes is optim::'s, found by argument-dependent lookup: its header may come later.)
    return detail::plan_memory<topology, Loss>(
        rows, sched, [&](std::size_t parameters) { return state_bytes(options, parameters); });
  }
  template <class Loss = loss::CrossEntropy, schedule::Schedule Sched = schedule::Naive>
  static constexpr MemoryPlan<num_stages, num_devices> memory_plan(std::size_t rows, const Sched &sched = {}) {
    return detail::plan_memory<topology, Loss>(rows, sched, [](std::size_t) { return std::size_t{0}; });
  }
  // The plan as a table (MemoryPlan::describe).
  template <class Loss = loss::CrossEntropy, schedule::Schedule Sched, class Options>
  static std::string describe_memory(std::size_t rows, const Sched &sched, const Options &options) {
    return memory_plan<Loss>(rows, sched, options).describe();
  }

  // Parameters initialised as PyTorch's layers do, from `seed` (the same seed, the same network).
  BasicPipeline(Context &ctx, std::uint64_t seed) : runtime_(ctx, seed) {}
  BasicPipeline(const BasicPipeline &) = delete;
  BasicPipeline &operator=(const BasicPipeline &) = delete;

  Context &context() const { return runtime_.context(); }

  // Named handles, in PyTorch's order: "stage0.0.weight", "stage0.0.bias", "stage1.0.weight", ...
  std::span<const Parameter<T>> parameters() const { return runtime_.parameters(); }
  const Parameter<T> &parameter(std::string_view name) const {
    for (const auto &p : parameters())
      if (p.name() == name) return p;
    std::string known;
    for (const auto &p : parameters()) known += (known.empty() ? "" : ", ") + p.name();
    detail::fail("no parameter named '", name, "'; this network has: ", known);
  }
  // The flat parameters and gradients of each stage, for optimizers.
  std::span<const optim::ParameterGroup<T>> parameter_groups() const { return runtime_.parameter_groups(); }
  // Inference: (batch, in_features) row-major in, (batch, out_features) out.
  // (batch * sequence_length rows of tokens where the network reads sequences.)
  template <schedule::Schedule Sched = schedule::Naive>
  std::vector<T> forward(std::span<const input_type> x, const Sched &sched = {}) {
    std::vector<T> out;
    runtime_.infer({x.data(), nullptr, x.size()}, sched, [&](std::size_t batch) {
      out = detail::host_vector<T>(batch * out_features, "forward's output");
      return detail::Sink<T>{out.data(), nullptr};
    });
    return out;
  }

  // Inference on device-resident data: x on the first stage's device, y (batch, out_features) on
  // the last stage's; nothing crosses to the host.
  template <schedule::Schedule Sched = schedule::Naive>
  void forward(const Tensor<T> &x, Tensor<T> &y, const Sched &sched = {}) {
    require_on(x, 0, "forward", "input");
    require_on(y, num_stages - 1, "forward", "output");
    require_shape(x, x.rows(), in_features, "forward", "input");
    runtime_.infer({nullptr, x.data(), x.size()}, sched, [&](std::size_t batch) {
      if (y.rows() != batch || y.cols() != out_features)
        detail::fail("forward: the output tensor is ", y.rows(), " x ", y.cols(), ", expected ", batch, " x ",
                     out_features);
      return detail::Sink<T>{nullptr, y.data()};
    });
  }

  // The targets' span type, kept out of deduction (Loss is deduced from the loss argument alone):
  // nvcc's front end otherwise fails to deduce Loss through the nested alias template.
  template <class Loss> using targets_t = std::type_identity_t<std::span<const typename Loss::template target_type<T>>>;

  template <class Loss> using target_tensor_t = std::type_identity_t<Tensor<typename Loss::template target_type<T>>>;

  // Forward and backward of one batch: sets every parameter's gradient (not added to the last
  // one's) and returns the loss. No optimizer step.
  template <class Loss, schedule::Schedule Sched = schedule::Naive>
  T forward_backward(std::span<const input_type> x, targets_t<Loss> y, const Loss & /*loss*/, const Sched &sched = {}) {
    return runtime_
        .template step<Loss>({x.data(), nullptr, x.size()}, {y.data(), nullptr, y.size()}, sched,
                             detail::no_optimizer())
        .get();
  }
  template <class Loss, schedule::Schedule Sched = schedule::Naive>
  T forward_backward(const Tensor<T> &x, const target_tensor_t<Loss> &y, const Loss & /*loss*/,
                     const Sched &sched = {}) {
    require_on(x, 0, "forward_backward", "input");
    require_on(y, num_stages - 1, "forward_backward", "target");
    require_shape(x, x.rows(), in_features, "forward_backward", "input");
    require_shape(y, x.rows(), Loss::targets_per_sample(out_features), "forward_backward", "target");
    return runtime_
        .template step<Loss>({nullptr, x.data(), x.size()}, {nullptr, y.data(), y.size()}, sched,
                             detail::no_optimizer())
        .get();
  }

  // One training step: forward, backward, and the optimizer, each stage updating as soon as its
  // backward is done. Input is checked first; a bad one throws and changes nothing.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  T train_step(std::span<const input_type> x, targets_t<Loss> y, const Loss &loss, Opt &opt, const Sched &sched = {}) {
    return train_step_async(x, y, loss, opt, sched).get();
  }
  // The same on device-resident data: x on the first stage's device, the targets on the last's.
  // Nothing is read back but the loss: the labels are checked on the device during the step,
  // whose update a bad one cancels before the Error is thrown (parameters and optimizer state
  // stay as they were; the gradients are that step's). Where the stages cannot share that check
  // (GPUs without a common memory) or the optimizer cannot undo its step count, they are read
  // back and checked first.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  T train_step(const Tensor<T> &x, const target_tensor_t<Loss> &y, const Loss &loss, Opt &opt,
               const Sched &sched = {}) {
    return train_step_async(x, y, loss, opt, sched).get();
  }

  // Class indices as PyTorch keeps them (int64), from the host: narrowed to int32 there first.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  requires std::same_as<typename Loss::template target_type<T>, std::int32_t>
      T train_step(std::span<const input_type> x, std::type_identity_t<std::span<const std::int64_t>> y,
                   const Loss &loss, Opt &opt, const Sched &sched = {}) {
    const auto labels = detail::narrow_labels(y, out_features, "train_step");
    return train_step(x, std::span<const std::int32_t>(labels), loss, opt, sched);
  }
  template <class Loss, schedule::Schedule Sched = schedule::Naive>
  requires std::same_as<typename Loss::template target_type<T>, std::int32_t>
      T forward_backward(std::span<const input_type> x, std::type_identity_t<std::span<const std::int64_t>> y,
                         const Loss &loss, const Sched &sched = {}) {
    const auto labels = detail::narrow_labels(y, out_features, "forward_backward");
    return forward_backward(x, std::span<const std::int32_t>(labels), loss, sched);
  }
  // Calls no overload above takes: one static_assert that says what to pass, ahead of any list of
  // candidates (detail/train_call.hpp tells the mistakes apart).
  template <class X, class Y, class Loss, class... Rest>
  requires(!detail::train_step_call<T, input_type, X, Y, Loss, Rest...>) T
      train_step(X &&, Y &&, const Loss &, Rest &&...) {
    detail::check_step_data<T, input_type, X, Y, Loss>();
    using enum detail::StepDataError;
    constexpr auto e = detail::step_data_error<T, input_type, X, Y, Loss>();
    static_assert(e != not_a_loss, "TANDEM_NOT_A_LOSS: train_step(x, y, loss, opt): the third argument must be a "
                                   "loss, such as loss::CrossEntropy{} or loss::MSE{}");
    static_assert(e != none || detail::wrong_call<X>,
                  "TANDEM_NO_OPTIMIZER: train_step(x, y, loss, opt[, schedule]) needs the optimizer as its fourth "
                  "argument (optim::Adam opt(net);); forward_backward(x, y, loss) computes gradients without a step");
    return T{};
  }
  template <class X, class Y, class Loss, class... Rest>
  requires(!detail::forward_backward_call<T, input_type, X, Y, Loss, Rest...>) T
      forward_backward(X &&, Y &&, const Loss &, Rest &&...) {
    detail::check_step_data<T, input_type, X, Y, Loss>();
    using enum detail::StepDataError;
    constexpr auto e = detail::step_data_error<T, input_type, X, Y, Loss>();
    static_assert(e != not_a_loss, "TANDEM_NOT_A_LOSS: forward_backward(x, y, loss[, schedule]): the third argument "
                                   "must be a loss, such as loss::CrossEntropy{} or loss::MSE{}");
    static_assert(e != none || detail::wrong_call<X>,
                  "TANDEM_NOT_A_SCHEDULE: forward_backward(x, y, loss[, schedule]) takes no optimizer: "
                  "train_step(x, y, loss, opt) steps it");
    return T{};
  }

  // train_step without the wait: issues the step and returns its loss as a PendingLoss, read when
  // asked for (get()). The calling thread goes on (preparing the next batch, say) while the
  // devices work. At most one step is in flight: the network's next call completes it first.
  // Host data is read before this returns and may change at once; device tensors must stay as
  // they are until the step completes, and so must the network and the optimizer (an optimizer
  // completes the step before it goes). Input that can be checked on the host throws here;
  // targets on the device are checked there, and their Error comes from get(). With
  // check_finite or the timeline on, the step completes before this returns.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  PendingLoss<T> train_step_async(std::span<const input_type> x, targets_t<Loss> y, const Loss & /*loss*/, Opt &opt,
                                  const Sched &sched = {}) {
    check_owner(opt);
    return runtime_.template step<Loss>({x.data(), nullptr, x.size()}, {y.data(), nullptr, y.size()}, sched, &opt);
  }
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  PendingLoss<T> train_step_async(const Tensor<T> &x, const target_tensor_t<Loss> &y, const Loss & /*loss*/, Opt &opt,
                                  const Sched &sched = {}) {
    check_owner(opt);
    require_on(x, 0, "train_step", "input");
    require_on(y, num_stages - 1, "train_step", "target");
    require_shape(x, x.rows(), in_features, "train_step", "input");
    require_shape(y, x.rows(), Loss::targets_per_sample(out_features), "train_step", "target");
    return runtime_.template step<Loss>({nullptr, x.data(), x.size()}, {nullptr, y.data(), y.size()}, sched, &opt);
  }

  // Bytes moved across stage boundaries since construction (0 where stages share a device).
  std::size_t transferred_bytes() const { return runtime_.transferred_bytes(); }
  // Training steps that ran as a replayed graph (ContextOptions::graphs), and why capturing
  // stopped, if it failed once (then every later step is issued as usual; empty otherwise).
  std::size_t replayed_steps() const { return runtime_.graphs().replayed(); }
  const std::string &graph_error() const { return runtime_.graphs().error(); }
  // The most micro-batches whose activations stage s held at once in the last step: the number of
  // stash entries (sets of the stage's inner activations) its schedule needed; 1 where the step
  // ran as one whole-network operation per micro-batch (ContextOptions::fuse_small_stages).
  std::size_t peak_live_micro_batches(std::size_t s) const { return runtime_.stage(s).peak; }

  // Device memory the network holds between steps for its micro-batches (boundary buffers,
  // activations kept for the backward, scratch, a copy of the targets), beyond parameters and
  // gradients: sized to fit the steps it ran, made again smaller when a step needs less than a
  // quarter of it (and 64 MiB less), given back by release_workspace(), after which the next step
  // makes what it needs. Captured graphs point into it and are dropped with it.
  std::size_t workspace_bytes() const { return runtime_.workspace_bytes(); }
  void release_workspace() { runtime_.release_workspace(); }

private:
  template <class U> void require_on(const Tensor<U> &t, std::size_t s, const char *call, const char *what) const {
    const auto &st = runtime_.stage(s);
    if (!st.ex) return; // another rank's stage: the step refuses device data across processes
    if (&t.executor() != st.ex)
      detail::fail(call, ": the ", what, " tensor lives on Device<", t.device(), "> (", t.executor().name(),
                   "), but stage ", s, " runs on Device<", st.device, "> (", st.ex->name(), "); make it there");
  }
  // Shapes, not only counts: a (32, 20) tensor is no (64, 10) input, a (1, 64) one no 64 labels.
  template <class U>
  static void require_shape(const Tensor<U> &t, std::size_t rows, std::size_t cols, const char *call,
                            const char *what) {
    if (t.rows() != rows || t.cols() != cols)
      detail::fail(call, ": the ", what, " tensor is ", t.rows(), " x ", t.cols(), ", but must be ", rows, " x ", cols,
                   " (", std::string_view(what) == "input" ? "batch x in_features" : "batch x targets per sample", ")");
  }
  template <class Opt> void check_owner(const Opt &opt) const {
    if (opt.owner() != static_cast<const void *>(this))
      detail::fail("train_step: the optimizer was built for another network (or was moved from)");
  }

  detail::Runtime<topology> runtime_;
};

// The float network users write: Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, ...>. A class,
// not an alias, so that a program can name its network and have compile errors say that name:
//   struct Net : Pipeline<...> { using Pipeline::Pipeline; };
template <class... Stages> class Pipeline : public BasicPipeline<float, Stages...> {
public:
  using BasicPipeline<float, Stages...>::BasicPipeline;
};

} // namespace tandem
