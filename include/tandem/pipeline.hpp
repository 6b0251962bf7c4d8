// SPDX-License-Identifier: Apache-2.0
// Pipeline<Stages...>: a network split into stages, each on its logical device.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/context.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/loss/loss.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/parameter.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/random.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/schedule/schedule.hpp"
#include "tandem/shape.hpp"
#include "tandem/stage.hpp"
#include "tandem/tensor.hpp"
#include "tandem/timeline.hpp"

namespace tandem {

namespace detail {
template <std::size_t Index, class S> struct StageArgumentCheck {
  static_assert(is_stage_v<S>, "TANDEM_NOT_A_STAGE: every Pipeline argument must be a Stage<Device<N>, Layers...>; "
                               "StageArgumentCheck<index, type> in this message names the argument");
  static constexpr bool value = true;
};
} // namespace detail

// The network in the precision T; Pipeline (below) is the float one users write. A double
// pipeline runs on the host backend and serves finite-difference gradient checks.
template <class T, class... Stages> class BasicPipeline {
  static_assert(sizeof...(Stages) > 0, "TANDEM_PIPELINE_WITHOUT_STAGES: a Pipeline needs at least one Stage, as in "
                                       "Pipeline<Stage<Device<0>, Linear<10, 2>>>");
  static_assert([]<std::size_t... S>(std::index_sequence<S...>) {
    return (detail::StageArgumentCheck<S, Stages>::value && ... && true);
  }(std::index_sequence_for<Stages...>{}));

  using stage_list = std::tuple<Stages...>;

public:
  using value_type = T;
  static constexpr std::size_t num_stages = sizeof...(Stages);
  template <std::size_t I> using stage = std::tuple_element_t<I, stage_list>;

private:
  // Width entering each stage, and (last) the network's output width. A stage that starts with
  // width-keeping layers takes whatever the previous stage gives it.
  static constexpr bool all_stages_ = (true && ... && is_stage_v<Stages>);
  static constexpr std::array<std::size_t, num_stages + 1> widths_ = [] {
    std::array<std::size_t, num_stages + 1> w{};
    if constexpr (num_stages > 0 && all_stages_) { // else only the argument checks above report
      w[0] = std::tuple_element_t<0, stage_list>::in_features;
      std::size_t s = 0;
      ((w[s + 1] = Stages::widths(w[s])[Stages::num_layers], ++s), ...);
    }
    return w;
  }();

  template <std::size_t S, std::size_t J> static constexpr std::size_t layer_input_width() {
    return stage<S>::widths(widths_[S])[J];
  }
  template <std::size_t S> static constexpr bool stage_widths_agree() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (detail::WidthCheck<detail::AtStage<S>, detail::AtLayer<J>,
                                 detail::Expects<detail::in_of<typename stage<S>::template layer<J>>()>,
                                 detail::Receives<layer_input_width<S, J>()>>::value &&
              ... && true);
    }
    (std::make_index_sequence<stage<S>::num_layers>{});
  }
  // One diagnostic per mistake: the width checks run only on a well-formed list of stages, and
  // not past an input width that cannot be derived.
  static constexpr bool widths_agree_ = [] {
    if constexpr (num_stages > 0 && all_stages_) {
      if constexpr (detail::InputWidthCheck<detail::AtStage<0>, detail::Receives<widths_[0]>>::value && widths_[0] > 0)
        return []<std::size_t... S>(std::index_sequence<S...>) { return (stage_widths_agree<S>() && ... && true); }
      (std::make_index_sequence<num_stages>{});
    }
    return true;
  }();
  static_assert(widths_agree_);

public:
  static constexpr std::size_t in_features = widths_[0];
  static constexpr std::size_t out_features = widths_[num_stages];
  static constexpr std::size_t parameter_count = (std::size_t{0} + ... + Stages::parameter_count);
  static_assert(detail::ParameterCountCheck<detail::InPipeline, detail::Counts<Stages::parameter_count...>>::value);

  // The width entering stage I (its in_features, also where the stage itself cannot tell).
  template <std::size_t I> static constexpr std::size_t stage_in_features = widths_[I];

  // Bytes that cross stage boundaries in one training step with `batch` samples: each
  // boundary's activations forward and their gradients backward, the seed's C = sum s_i * b * 2.
  static constexpr std::size_t boundary_bytes(std::size_t batch) {
    std::size_t elements = 0;
    for (std::size_t s = 1; s < num_stages; ++s) elements += widths_[s];
    if (batch != 0 && elements > std::numeric_limits<std::size_t>::max() / 2 / sizeof(T) / batch)
      detail::fail("boundary_bytes: a batch of ", batch, " moves ", elements, " x ", batch,
                   " x 2 values, whose bytes overflow a std::size_t");
    return elements * batch * 2 * sizeof(T);
  }

  BasicPipeline(Context &ctx, std::uint64_t seed) : ctx_(ctx.state()), context_(&ctx) {
    const std::lock_guard turn(ctx.issue_mutex()); // docs/threads.md
    // Building waits on the devices: another network's step in flight there completes first.
    for (std::size_t s = 0; s < num_stages; ++s) ctx.executor(device_of(s)).complete_steps_in_flight();
    for_each_stage([&]<std::size_t I>() { build_stage<I>(seed); });
    for (std::size_t s = 0; s + 1 < num_stages; ++s) {
      stages_[s].to_next = ctx.link(device_of(s), device_of(s + 1));
      stages_[s + 1].to_prev = ctx.link(device_of(s + 1), device_of(s));
    }
    // Each step's loss and status, side by side so that one download brings both back. Where
    // every stage can read the last stage's memory, the optimizers read the status there and
    // skip the update of a step that found a bad label (so labels on the device need no check
    // on the host before the step); captured steps need every stage on one GPU in any case.
    for (auto &st : stages_) executors_.push_back(st.ex);
    auto &last = *stages_.back().ex;
    result_ = detail::Buffer<std::byte>(last, sizeof(StepResult));
    // Zero until a step sets it: an optimizer stepped by hand before any step reads the status.
    clear_result();
    last.synchronize(); // (before another stage's stream reads it)
    if (last.shares_memory_with(executors_))
      for (auto &g : groups_) g.skip = invalid_flag();
    can_capture_ = stages_.front().ex->can_capture(executors_);
  }
  BasicPipeline(const BasicPipeline &) = delete;
  BasicPipeline &operator=(const BasicPipeline &) = delete;
  ~BasicPipeline() {
    const std::lock_guard turn(ctx_->issue_mutex());
    // Its own step and any other network's on its devices: the waits below must not take (and
    // drop) a failure that is for another PendingLoss. Completing keeps failures; it throws nothing.
    complete_steps_in_flight();
    in_flight_.reset(); // the devices' lists and the optimizers find nothing left of it
    // Nothing may still use the buffers about to be freed.
    for (auto &st : stages_) {
      try {
        st.ex->synchronize();
      } catch (...) {
      }
    }
  }

  // The Context it was made on, while that lives (the network itself may outlive it).
  Context &context() const { return *context_; }

  // Named handles, in PyTorch's order: "stage0.0.weight", "stage0.0.bias", "stage1.0.weight", ...
  std::span<const Parameter<T>> parameters() const { return parameters_; }
  const Parameter<T> &parameter(std::string_view name) const {
    for (const auto &p : parameters_)
      if (p.name() == name) return p;
    std::string known;
    for (const auto &p : parameters_) known += (known.empty() ? "" : ", ") + p.name();
    detail::fail("no parameter named '", name, "'; this network has: ", known);
  }
  // The flat parameters and gradients of each stage, for optimizers.
  std::span<const optim::ParameterGroup<T>> parameter_groups() const { return groups_; }

  // Inference: (batch, in_features) row-major in, (batch, out_features) out.
  template <schedule::Schedule Sched = schedule::Naive>
  std::vector<T> forward(std::span<const T> x, const Sched &sched = {}) {
    std::vector<T> out;
    infer({x.data(), nullptr, x.size()}, sched, [&](std::size_t batch) {
      out = detail::host_vector<T>(batch * out_features, "forward's output");
      return Sink{out.data(), nullptr};
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
    infer({nullptr, x.data(), x.size()}, sched, [&](std::size_t batch) {
      if (y.rows() != batch || y.cols() != out_features)
        detail::fail("forward: the output tensor is ", y.rows(), " x ", y.cols(), ", expected ", batch, " x ",
                     out_features);
      return Sink{nullptr, y.data()};
    });
  }

  // The targets' span type, kept out of deduction (Loss is deduced from the loss argument alone):
  // nvcc's front end otherwise fails to deduce Loss through the nested alias template.
  template <class Loss> using targets_t = std::type_identity_t<std::span<const typename Loss::template target_type<T>>>;

  template <class Loss> using target_tensor_t = std::type_identity_t<Tensor<typename Loss::template target_type<T>>>;

  // Forward and backward of one batch: sets every parameter's gradient (not added to the last
  // one's) and returns the loss. No optimizer step.
  template <class Loss, schedule::Schedule Sched = schedule::Naive>
  T forward_backward(std::span<const T> x, targets_t<Loss> y, const Loss & /*loss*/, const Sched &sched = {}) {
    return step<Loss>({x.data(), nullptr, x.size()}, {y.data(), nullptr, y.size()}, sched, no_optimizer()).get();
  }
  template <class Loss, schedule::Schedule Sched = schedule::Naive>
  T forward_backward(const Tensor<T> &x, const target_tensor_t<Loss> &y, const Loss & /*loss*/,
                     const Sched &sched = {}) {
    require_on(x, 0, "forward_backward", "input");
    require_on(y, num_stages - 1, "forward_backward", "target");
    require_shape(x, x.rows(), in_features, "forward_backward", "input");
    require_shape(y, x.rows(), Loss::targets_per_sample(out_features), "forward_backward", "target");
    return step<Loss>({nullptr, x.data(), x.size()}, {nullptr, y.data(), y.size()}, sched, no_optimizer()).get();
  }

  // One training step: forward, backward, and the optimizer, each stage updating as soon as its
  // backward is done. Input is checked first; a bad one throws and changes nothing.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  T train_step(std::span<const T> x, targets_t<Loss> y, const Loss &loss, Opt &opt, const Sched &sched = {}) {
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

  // train_step without the wait: issues the step and returns its loss as a PendingLoss, read when
  // asked for (get()). The calling thread goes on (preparing the next batch, say) while the
  // devices work. At most one step is in flight: the network's next call completes it first.
  // Host data is read before this returns and may change at once; device tensors must stay as
  // they are until the step completes, and so must the network and the optimizer (an optimizer
  // completes the step before it goes). Input that can be checked on the host throws here;
  // targets on the device are checked there, and their Error comes from get(). With
  // check_finite or the timeline on, the step completes before this returns.
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  PendingLoss<T> train_step_async(std::span<const T> x, targets_t<Loss> y, const Loss & /*loss*/, Opt &opt,
                                  const Sched &sched = {}) {
    check_owner(opt);
    return step<Loss>({x.data(), nullptr, x.size()}, {y.data(), nullptr, y.size()}, sched, &opt);
  }
  template <class Loss, optim::Optimizer Opt, schedule::Schedule Sched = schedule::Naive>
  PendingLoss<T> train_step_async(const Tensor<T> &x, const target_tensor_t<Loss> &y, const Loss & /*loss*/, Opt &opt,
                                  const Sched &sched = {}) {
    check_owner(opt);
    require_on(x, 0, "train_step", "input");
    require_on(y, num_stages - 1, "train_step", "target");
    require_shape(x, x.rows(), in_features, "train_step", "input");
    require_shape(y, x.rows(), Loss::targets_per_sample(out_features), "train_step", "target");
    return step<Loss>({nullptr, x.data(), x.size()}, {nullptr, y.data(), y.size()}, sched, &opt);
  }

  // Bytes moved across stage boundaries since construction (0 where stages share a device).
  std::size_t transferred_bytes() const { return transferred_; }
  // Training steps that ran as a replayed graph (ContextOptions::graphs), and why capturing
  // stopped, if it failed once (then every later step is issued as usual; empty otherwise).
  std::size_t replayed_steps() const { return replayed_; }
  const std::string &graph_error() const { return graph_error_; }
  // The most micro-batches whose activations stage s held at once in the last step: the number of
  // stash entries (sets of the stage's inner activations) its schedule needed; 1 where the step
  // ran as one whole-network operation per micro-batch (ContextOptions::fuse_small_stages).
  std::size_t peak_live_micro_batches(std::size_t s) const { return stages_.at(s).peak; }

private:
  // Where a step's data lives: host memory (copied in) or the device of the stage that reads it.
  template <class U> struct Source {
    const U *host = nullptr, *device = nullptr;
    std::size_t size = 0;
    std::span<const U> host_span() const { return {host, size}; }
  };
  struct Sink {
    T *host = nullptr, *device = nullptr;
  };
  // forward_backward's "optimizer": none.
  struct NoOptimizer {};
  static NoOptimizer *no_optimizer() { return nullptr; }
  // The loss of a step and whether it found bad targets on the device (CrossEntropy::run's
  // `invalid`), written on the last stage's device and downloaded together.
  using StepResult = detail::StepResult<T>;
  T *loss_slot() { return reinterpret_cast<T *>(result_.data() + offsetof(StepResult, loss)); }
  std::int32_t *invalid_flag() {
    return reinterpret_cast<std::int32_t *>(result_.data() + offsetof(StepResult, invalid));
  }

  template <class U> void require_on(const Tensor<U> &t, std::size_t stage, const char *call, const char *what) const {
    if (&t.executor() != stages_[stage].ex)
      detail::fail(call, ": the ", what, " tensor lives on Device<", t.device(), "> (", t.executor().name(),
                   "), but stage ", stage, " runs on Device<", stages_[stage].device, "> (", stages_[stage].ex->name(),
                   "); make it there");
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

  template <class Sched, class MakeSink> void infer(const Source<T> &x, const Sched &sched, MakeSink make_sink) {
    const std::lock_guard turn(ctx_->issue_mutex()); // docs/threads.md
    complete_steps_in_flight();
    const std::size_t batch = batch_of(x.size, "forward");
    const std::size_t m = micro_batches_of(sched, batch, "forward");
    const Sink out = make_sink(batch);
    const auto plan = make_plan(batch, m);
    std::vector<std::vector<schedule::Task>> orders(num_stages);
    for (auto &o : orders)
      for (std::size_t k = 0; k < m; ++k) o.push_back({schedule::Task::forward, k});
    prepare(plan, orders);
    place_host_work(plan);
    begin_timeline();
    auto &last = stages_.back();
    upload_input(plan, x);
    issue(plan, orders, x, [&](std::size_t k, const Slot &slot) {
      const std::size_t at = plan.offset[k] * out_features, bytes = plan.rows[k] * out_features * sizeof(T);
      if (out.host) last.ex->download(out.host + at, slot.out.data(), bytes);
      else
        last.ex->submit(
            [ex = last.ex, dst = out.device + at, src = slot.out.data(), bytes] { ex->copy(dst, src, bytes); });
    });
    synchronize_all();
    end_timeline();
  }

  // What one micro-batch needs on one stage. The buffers that cross a boundary (input, output and
  // their gradients) are per micro-batch, since a neighbour reads or writes them on its own time;
  // the activations inside the stage live in a stash entry, held from forward to backward.
  struct Slot {
    detail::Buffer<T> input_own, out, dy_own, dx;
    std::size_t stash = 0;    // this step's entry in StageState::stash
    const T *input = nullptr; // own buffer, or the previous stage's output where no copy is made
    T *dy = nullptr;          // own buffer, or the next stage's dx
    std::unique_ptr<backend::Event> forward_done, backward_done, input_ready, dy_ready;
    backend::Event *wait_input = nullptr, *wait_dy = nullptr;
  };
  struct StageState {
    backend::Executor *ex = nullptr;
    std::size_t device = 0;
    std::vector<std::size_t> widths; // input of each layer, then the output
    detail::Buffer<T> params, grads;
    std::unique_ptr<backend::Link> to_next, to_prev;
    std::vector<Slot> slots;
    // Outputs of all layers but the last, for as many micro-batches as the schedule keeps alive at
    // once (1F1B: stages - stage; GPipe: m), and the backward's gradient ping-pong, which one stream
    // uses for one micro-batch at a time.
    std::vector<std::vector<detail::Buffer<T>>> stash;
    detail::Buffer<T> scratch[2];
    std::size_t capacity = 0;   // rows each buffer holds
    bool set_gradients = false; // this step's first backward sets the gradients (library_layers_only)
    // Whole-network steps (issue_network_step): the first stage's marks the step's end; each
    // other stage's what it was given before the step.
    std::unique_ptr<backend::Event> mark;
    std::size_t live = 0, peak = 0;
    std::size_t track = 0, next_track = 0, prev_track = 0; // timeline tracks: device, links out
  };
  struct Plan {
    std::size_t batch = 0, m = 0;
    std::vector<std::size_t> offset, rows;
  };

  template <class F> static void for_each_stage(F &&f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f.template operator()<I>(), ...); }
    (std::make_index_sequence<num_stages>{});
  }
  // Calls f.template operator()<I>() for the run-time stage index s.
  template <class F> static void with_stage(std::size_t s, F &&f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { ((s == I ? (f.template operator()<I>(), 0) : 0), ...); }
    (std::make_index_sequence<num_stages>{});
  }

  static std::size_t device_of(std::size_t s) {
    static constexpr std::array<std::size_t, num_stages> devices{Stages::device_index...};
    return devices[s];
  }

  template <std::size_t I> void build_stage(std::uint64_t seed) {
    using St = stage<I>;
    static constexpr auto w = St::widths(widths_[I]);
    auto &st = stages_[I];
    st.device = St::device_index;
    st.ex = &ctx_->executor(St::device_index);
    st.mark = st.ex->make_event();
    st.widths.assign(w.begin(), w.end());
    st.params = detail::Buffer<T>(*st.ex, St::parameter_count);
    st.grads = detail::Buffer<T>(*st.ex, St::parameter_count);
    auto host = detail::host_vector<T>(St::parameter_count, "a network's initial parameters");
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      (
          [&] {
            using L = typename St::template layer<J>;
            constexpr std::size_t at = St::parameter_offsets[J];
            Random rng = Random::derive(seed, I, J);
            L::init(std::span<T>(host.data() + at, parameter_count_v<L>), w[J], rng);
            std::size_t within = at;
            for (const ParameterSpec &p : L::parameters) {
              parameters_.emplace_back(
                  "stage" + std::to_string(I) + "." + std::to_string(J) + "." + std::string(p.name), *st.ex,
                  st.params.data() + within, st.grads.data() + within, p.rows, p.cols, in_flight_);
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
    groups_.push_back({st.ex, st.params.data(), st.grads.data(), St::parameter_count, nullptr, in_flight_});
  }

  std::size_t batch_of(std::size_t values, const char *what) const {
    if (values == 0 || values % in_features != 0)
      detail::fail(what, ": the input has ", values, " values, which is not a positive whole number of rows of ",
                   in_features, " features (row-major (batch, ", in_features, "))");
    return values / in_features;
  }

  template <class Sched> static std::size_t micro_batches_of(const Sched &sched, std::size_t batch, const char *what) {
    const std::size_t m = sched.count(batch);
    if (m == 0 || m > batch)
      detail::fail(what, ": the schedule splits a batch of ", batch, " samples into ", m,
                   " micro-batches, but needs 1 <= micro_batches <= batch (each micro-batch needs a sample); ",
                   "use at most ", batch, " micro-batches for this batch");
    return m;
  }

  // Splits `batch` rows into m micro-batches as evenly as possible; the first batch % m get one more.
  static Plan make_plan(std::size_t batch, std::size_t m) {
    Plan p{batch, m, {}, {}};
    for (std::size_t k = 0, at = 0; k < m; ++k) {
      const std::size_t rows = batch / m + (k < batch % m ? 1 : 0);
      p.offset.push_back(at);
      p.rows.push_back(rows);
      at += rows;
    }
    return p;
  }

  // Gives each micro-batch a stash entry in the stage's task order: taken by its forward, given
  // back by its backward (or right after the forward when none follows, as in inference), so the
  // stash has as many entries as the schedule keeps micro-batches alive. Returns that number. An
  // entry is reused only after the backward that freed it, on the same stream: no race.
  static std::size_t assign_stash(StageState &st, const std::vector<schedule::Task> &order) {
    const bool training = std::any_of(order.begin(), order.end(),
                                      [](const schedule::Task &t) { return t.kind == schedule::Task::backward; });
    std::vector<std::size_t> free;
    std::size_t used = 0;
    for (const auto &t : order) {
      Slot &slot = st.slots[t.micro_batch];
      if (t.kind == schedule::Task::forward) {
        if (free.empty()) free.push_back(used++);
        slot.stash = free.back();
        free.pop_back();
        if (!training) free.push_back(slot.stash);
      } else {
        free.push_back(slot.stash);
      }
    }
    return used;
  }

  // Buffers for m micro-batches of up to max(rows): allocated when the shape first grows, then reused.
  void prepare(const Plan &plan, const std::vector<std::vector<schedule::Task>> &orders) {
    const std::size_t cap = *std::max_element(plan.rows.begin(), plan.rows.end());
    for (std::size_t s = 0; s < num_stages; ++s) {
      auto &st = stages_[s];
      if (st.slots.size() < plan.m || st.capacity < cap) {
        st.ex->synchronize(); // the old buffers may still be read by issued work
        forget_graphs();
        const std::size_t rows = std::max(cap, st.capacity);
        const std::size_t slots = std::max(plan.m, st.slots.size());
        st.slots.clear();
        st.slots.resize(slots);
        st.stash.clear();
        for (auto &slot : st.slots) {
          slot.input_own = detail::Buffer<T>(*st.ex, rows * st.widths.front());
          slot.out = detail::Buffer<T>(*st.ex, rows * st.widths.back());
          slot.dy_own = detail::Buffer<T>(*st.ex, rows * st.widths.back());
          slot.dx = detail::Buffer<T>(*st.ex, rows * st.widths.front());
          slot.forward_done = st.ex->make_event();
          slot.backward_done = st.ex->make_event();
          slot.input_ready = st.ex->make_event();
          slot.dy_ready = st.ex->make_event();
        }
        const std::size_t widest = *std::max_element(st.widths.begin(), st.widths.end());
        for (auto &g : st.scratch) g = detail::Buffer<T>(*st.ex, rows * widest);
        st.capacity = rows;
      }
      const std::size_t entries = assign_stash(st, orders[s]);
      if (st.stash.size() < entries) {
        st.ex->synchronize();
        forget_graphs();
      }
      while (st.stash.size() < entries) {
        auto &entry = st.stash.emplace_back();
        for (std::size_t j = 1; j + 1 < st.widths.size(); ++j) entry.emplace_back(*st.ex, st.capacity * st.widths[j]);
      }
    }
    // Where each slot reads its input and its output gradient: a copy, or in place.
    for (std::size_t s = 0; s < num_stages; ++s) {
      for (std::size_t k = 0; k < stages_[s].slots.size(); ++k) {
        Slot &slot = stages_[s].slots[k];
        const bool copied_in = s == 0 || stages_[s - 1].to_next;
        slot.input = copied_in ? slot.input_own.data() : stages_[s - 1].slots[k].out.data();
        slot.wait_input = s == 0      ? nullptr
                          : copied_in ? slot.input_ready.get()
                                      : stages_[s - 1].slots[k].forward_done.get();
        const bool copied_dy = s + 1 == num_stages || stages_[s].to_next;
        slot.dy = copied_dy ? slot.dy_own.data() : stages_[s + 1].slots[k].dx.data();
        slot.wait_dy = s + 1 == num_stages ? nullptr
                       : copied_dy         ? slot.dy_ready.get()
                                           : stages_[s + 1].slots[k].backward_done.get();
      }
    }
  }

  // The output of layer j of a stage for one micro-batch: the stage's output, or a stash entry's.
  static T *activation(StageState &st, Slot &slot, std::size_t j) {
    return j + 1 == st.widths.size() - 1 ? slot.out.data() : st.stash[slot.stash][j].data();
  }

  // Whether a stage that can (small_stage) runs as one operation, by the option and the backend.
  bool fuses_small_stage(const StageState &st) const {
    // Its sums are float32 multiply-adds of its own: reduced precision needs the products.
    if (std::is_same_v<T, float> && ctx_->options().precision != Precision::fp32) return false;
    switch (ctx_->options().fuse_small_stages) {
    case StageFusion::always: return true;
    case StageFusion::never: return false;
    case StageFusion::automatic: break;
    }
    return st.ex->prefers_small_stages();
  }
  // Every layer of stage I is one of the library's own kinds (FusableLayer): it can run inside a
  // fused small stage, and it honours LayerBackward::accumulate.
  template <std::size_t I> static constexpr bool library_layers_only() {
    using St = stage<I>;
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return (FusableLayer<typename St::template layer<J>> && ...);
    }
    (std::make_index_sequence<St::num_layers>{});
  }
  // A stage of small layers only (op::SmallForward's limits) can run as one operation.
  template <std::size_t I> static constexpr bool small_stage() {
    bool small = stage<I>::num_layers <= backend::op::small_layers && library_layers_only<I>();
    for (const std::size_t width : stage<I>::widths(widths_[I])) small = small && width <= backend::op::small_width;
    return small;
  }
  // The whole network is small: every stage is, and all their layers fit one op::SmallNetwork.
  static constexpr bool small_network() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (small_stage<I>() && ...) && (stage<I>::num_layers + ...) <= backend::op::small_network_layers;
    }
    (std::make_index_sequence<num_stages>{});
  }
  // Whether a training step runs as one op::SmallNetwork per micro-batch: a small network whose
  // stages would each be fused, all on one device's memory with no copies forced between them, and
  // micro-batches one block can take (op::small_rows). On one GPU that is the default; on the host
  // only with fuse_small_stages = always, and then nothing crosses its workers' boundaries. The
  // timeline shows each such operation as one `network` task on the first stage.
  template <class Loss> bool fuses_network(const Plan &plan) const {
    if constexpr (!small_network() || !loss::FusableLoss<Loss>) {
      return false;
    } else {
      if (ctx_->options().force_copies) return false;
      for (const auto &st : stages_)
        if (!fuses_small_stage(st)) return false;
      if (*std::max_element(plan.rows.begin(), plan.rows.end()) > backend::op::small_rows) return false;
      return stages_.front().ex->shares_memory_with(executors_);
    }
  }
  template <std::size_t I, class Op>
  static Op small_op(std::size_t rows, const T *params, T *grads, const T *const *xs, T *const *ys) {
    using St = stage<I>;
    static constexpr auto w = St::widths(widths_[I]);
    Op op{.rows = rows, .count = St::num_layers};
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      ((op.layers[J] = St::template layer<J>::small_layer(
            LayerBackward<T>{.batch = rows,
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
                             St::template layer<J>::forward(ex, f, act);
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
  // Where layer J keeps its ReLU's mask: in its own output's stash entry, which a fused Linear
  // never writes (its product writes the ReLU's output), where the mask fits (widths of 4 and up).
  template <std::size_t I, std::size_t J> static void *relu_mask_of(const std::array<T *, stage<I>::num_layers> &ys) {
    static constexpr std::size_t width = stage<I>::widths(widths_[I])[J + 1];
    if constexpr (relu_backward_by_next<I, J>() && backend::op::relu_mask_bytes(1, width) <= width * sizeof(T))
      return ys[J];
    else return nullptr;
  }

  // Where each layer of stage I reads its input and writes its output for one micro-batch: the
  // first layer reads `input`, each other one its predecessor's output (a stash entry), and the
  // last writes the stage's output.
  template <std::size_t I> struct LayerIo {
    std::array<const T *, stage<I>::num_layers> x{};
    std::array<T *, stage<I>::num_layers> y{};
  };
  template <std::size_t I> LayerIo<I> layer_io(Slot &slot, const T *input) {
    auto &st = stages_[I];
    LayerIo<I> io;
    for (std::size_t j = 0; j < stage<I>::num_layers; ++j) {
      io.x[j] = j == 0 ? input : activation(st, slot, j - 1);
      io.y[j] = activation(st, slot, j);
    }
    return io;
  }

  template <std::size_t I> void issue_forward(Slot &slot, std::size_t rows) {
    using St = stage<I>;
    static constexpr auto w = St::widths(widths_[I]);
    auto &st = stages_[I];
    const auto io = layer_io<I>(slot, slot.input);
    const auto &xs = io.x;
    const auto &ys = io.y;
    if constexpr (small_stage<I>()) {
      if (fuses_small_stage(st)) {
        st.ex->submit([ex = st.ex, op = small_op<I, backend::op::SmallForward<T>>(
                                       rows, st.params.data(), nullptr, xs.data(), ys.data())] { ex->run(op); });
        return;
      }
    }
    st.ex->submit([ex = st.ex, params = st.params.data(), xs, ys, rows] {
      [&]<std::size_t... J>(std::index_sequence<J...>) {
        (
            [&] {
              const LayerForward<T> f{.batch = rows,
                                      .in = w[J],
                                      .out = w[J + 1],
                                      .params = params + St::parameter_offsets[J],
                                      .x = xs[J],
                                      .y = ys[J]};
              if constexpr (fuses_relu<I, J>()) { // the ReLU's output, straight from the product
                LayerForward<T> g = f;
                g.y = ys[J + 1];
                g.relu_mask = relu_mask_of<I, J>(ys);
                St::template layer<J>::forward(*ex, g, backend::Activation::relu);
              } else if constexpr (fused_activation<I, J>() == backend::Activation::gelu_tanh) {
                LayerForward<T> g = f; // GELU's backward reads its input: the Linear's output, kept
                g.y = ys[J + 1];
                g.pre_activation = ys[J];
                St::template layer<J>::forward(*ex, g, backend::Activation::gelu_tanh);
              } else if constexpr (follows_fused_linear<I, J>()) {
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

  template <std::size_t I> void issue_backward(Slot &slot, std::size_t rows, bool first) {
    using St = stage<I>;
    static constexpr auto w = St::widths(widths_[I]);
    constexpr std::size_t L = St::num_layers;
    auto &st = stages_[I];
    const auto io = layer_io<I>(slot, slot.input);
    const auto &xs = io.x;
    const auto &ys = io.y;
    // Each layer reads its output's gradient where the layer after it wrote its input's, from the
    // stage's dy down to its dx, the scratch pair taking turns in between. A ReLU whose backward
    // the Linear after it does (relu_backward_by_next) takes no turn.
    static constexpr auto skipped = [] {
      std::array<bool, L> r{};
      [&]<std::size_t... J>(std::index_sequence<J...>) { ((r[J + 1] = relu_backward_by_next<I, J>()), ...); }
      (std::make_index_sequence<L - 1>{});
      return r;
    }();
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
    if constexpr (small_stage<I>()) {
      if (fuses_small_stage(st) && rows <= backend::op::small_rows) {
        auto op =
            small_op<I, backend::op::SmallBackward<T>>(rows, st.params.data(), st.grads.data(), xs.data(), ys.data());
        op.dy = slot.dy;
        op.dx = dxs[0];
        op.accumulate = !(first && stages_[I].set_gradients);
        st.ex->submit([ex = st.ex, op] { ex->run(op); });
        return;
      }
    }
    const bool accumulate = !(first && st.set_gradients);
    // A ReLU mask exists only where the forward ran layer by layer: a fused small stage's forward
    // (used at any number of rows, its backward only up to small_rows) wrote activations there.
    // A mask pointer is then not handed on, so that a backend can never take the activations, or
    // a mask some earlier buffer at the same address once held, for this step's mask.
    bool forward_fused = false;
    if constexpr (small_stage<I>()) forward_fused = fuses_small_stage(st);
    st.ex->submit([ex = st.ex, params = st.params.data(), grads = st.grads.data(), xs, ys, dys, dxs, rows, accumulate,
                   forward_fused] {
      [&]<std::size_t... J>(std::index_sequence<J...>) {
        // last layer first
        (
            [&] {
              constexpr std::size_t j = L - 1 - J;
              if constexpr (skipped[j]) return; // done by layer j + 1
              else {
                LayerBackward<T> b{.batch = rows,
                                   .in = w[j],
                                   .out = w[j + 1],
                                   .params = params + St::parameter_offsets[j],
                                   .grads = grads + St::parameter_offsets[j],
                                   .x = xs[j],
                                   .y = ys[j],
                                   .dy = dys[j],
                                   .dx = dxs[j],
                                   .accumulate = accumulate};
                if constexpr (j >= 2) {
                  if constexpr (relu_backward_by_next<I, j - 2>()) {
                    using Before = typename St::template layer<j - 2>;
                    b.relu_before = true;
                    b.relu_mask = forward_fused ? nullptr : relu_mask_of<I, j - 2>(ys);
                    b.dbias_before = grads + St::parameter_offsets[j - 2] + Before::bias_offset;
                  }
                }
                b.bias_gradient_by_next = relu_backward_by_next<I, j>();
                St::template layer<j>::backward(*ex, b);
              }
            }(),
            ...);
      }
      (std::make_index_sequence<L>{});
    });
  }

  // Copies micro-batch k's boundary from stage `from` to its neighbour `to` (activations forward,
  // their gradient backward), issued just before `to` needs it rather than as soon as `from` has
  // made it: the host backend runs a link's copy on the destination's worker, where a copy issued
  // early would make the destination wait for the source's later micro-batches before its own
  // work. On a GPU the copy has a stream of its own and the issue order does not matter.
  void receive(std::size_t from, std::size_t to, std::size_t k, std::size_t rows) {
    // A single stage has no boundary: compiling none lets GCC's -Warray-bounds see that too.
    if constexpr (num_stages > 1) {
      StageState &src = stages_[from];
      Slot &in = src.slots[k], &out = stages_[to].slots[k];
      if (to > from && src.to_next) {
        const std::size_t bytes = rows * src.widths.back() * sizeof(T);
        copy_boundary(*src.to_next, from, to, src.next_track, k, in.out.data(), out.input_own.data(), bytes,
                      *in.forward_done, *out.input_ready);
        transferred_ += bytes;
      } else if (to < from && src.to_prev) {
        const std::size_t bytes = rows * src.widths.front() * sizeof(T);
        copy_boundary(*src.to_prev, from, to, src.prev_track, k, in.dx.data(), out.dy_own.data(), bytes,
                      *in.backward_done, *out.dy_ready);
        transferred_ += bytes;
      }
    }
  }

  // Calls visit(s, task) for every task of every stage's order, each stage's in its own order,
  // interleaved so that every task comes after those it depends on: a forward after the previous
  // stage's forward of its micro-batch, a backward after the next stage's backward of it (the last
  // stage's: after its own forward). Returns the first stage whose order it could not finish (a
  // dependency that never comes), or num_stages. step() runs it with nothing to visit first, so
  // that a schedule that cannot be issued fails before any work is.
  template <class Visit>
  static std::size_t walk(const std::vector<std::vector<schedule::Task>> &orders, std::size_t m, Visit &&visit) {
    const std::size_t S = num_stages;
    std::vector<std::size_t> next(S, 0);
    std::vector<std::vector<char>> forward_done(S, std::vector<char>(m, 0)), backward_done = forward_done;
    for (bool progress = true; progress;) {
      progress = false;
      for (std::size_t s = 0; s < S; ++s) {
        while (next[s] < orders[s].size()) {
          const schedule::Task t = orders[s][next[s]];
          const std::size_t k = t.micro_batch;
          const bool forward = t.kind == schedule::Task::forward;
          if (forward ? s > 0 && !forward_done[s - 1][k]
                      : (s + 1 == S ? !forward_done[s][k] : !backward_done[s + 1][k]))
            break;
          visit(s, t);
          (forward ? forward_done : backward_done)[s][k] = 1;
          ++next[s];
          progress = true;
        }
      }
    }
    for (std::size_t s = 0; s < S; ++s)
      if (next[s] != orders[s].size()) return s;
    return S;
  }

  // Issues every stage's task list in walk()'s order, so each wait is issued after the record it
  // waits for. `at_output(k, slot)` is issued on the last stage right after its forward of
  // micro-batch k, `after_last_backward[s]` (the update) after stage s's last backward. Its
  // stream has then run a backward of every micro-batch, each after the last stage's backward of
  // it: the update comes after every loss, and reads the status word they leave. The updates are
  // issued last, together: each is still the last work on its stage's stream (a stage's last task
  // is its last backward), and a capture that fails on the way has counted no optimizer step.
  template <class AtOutput>
  void issue(const Plan &plan, const std::vector<std::vector<schedule::Task>> &orders, const Source<T> &x,
             AtOutput &&at_output, std::vector<std::function<void()>> *after_last_backward = nullptr) {
    const std::size_t S = num_stages;
    std::vector<std::size_t> backward_left(S, 0);
    std::vector<char> first_backward(S, 1);
    std::vector<std::size_t> finished; // stages whose last backward is issued, in that order
    for (std::size_t s = 0; s < S; ++s) {
      stages_[s].live = stages_[s].peak = 0;
      for (const auto &t : orders[s]) backward_left[s] += t.kind == schedule::Task::backward;
    }
    walk(orders, plan.m, [&](std::size_t s, const schedule::Task t) {
      auto &st = stages_[s];
      const std::size_t k = t.micro_batch;
      Slot &slot = st.slots[k];
      const std::size_t rows = plan.rows[k];
      if (t.kind == schedule::Task::forward) {
        if (s == 0) {
          // Host input was uploaded into input_own (upload_input), where prepare() points.
          if (x.device) slot.input = x.device + plan.offset[k] * in_features; // read in place
        } else {
          receive(s - 1, s, k, rows);
          st.ex->wait(*slot.wait_input);
        }
        timed(s, TaskKind::forward, k, [&] { with_stage(s, [&]<std::size_t I>() { issue_forward<I>(slot, rows); }); });
        st.ex->record(*slot.forward_done);
        st.peak = std::max(st.peak, ++st.live);
        if (s + 1 == S) at_output(k, slot);
      } else {
        if (s + 1 < S) {
          receive(s + 1, s, k, rows);
          st.ex->wait(*slot.wait_dy);
        }
        timed(s, TaskKind::backward, k,
              [&] { with_stage(s, [&]<std::size_t I>() { issue_backward<I>(slot, rows, first_backward[s]); }); });
        first_backward[s] = 0;
        st.ex->record(*slot.backward_done);
        --st.live;
        if (--backward_left[s] == 0) finished.push_back(s);
      }
    });
    if (after_last_backward) {
      for (const std::size_t s : finished) (*after_last_backward)[s]();
      step_counted_ = true;
    }
  }

  template <class Loss, class Sched, class Opt>
  PendingLoss<T> step(const Source<T> &x, const Source<typename Loss::template target_type<T>> &y, const Sched &sched,
                      Opt *opt) {
    const std::lock_guard turn(ctx_->issue_mutex()); // docs/threads.md
    complete_steps_in_flight();                      // the step before: its loss check may undo an optimizer count
    using Target = typename Loss::template target_type<T>;
    constexpr bool optimizing = !std::is_same_v<Opt, NoOptimizer>;
    // Preconditions, all checked before any work is issued. Targets on the device are checked
    // there, during the step, where the optimizer can undo its count of a cancelled step.
    const std::size_t batch = batch_of(x.size, "train_step");
    const std::size_t per_sample = Loss::targets_per_sample(out_features);
    bool check_on_device = false;
    if constexpr (!optimizing || optim::Discardable<Opt>)
      check_on_device = y.device && y.size == batch * per_sample && groups_.front().skip;
    if (y.device && !check_on_device) validate_device_targets<Loss>(y, batch);
    else if (!y.device) Loss::validate(y.host_span(), batch, out_features);
    const std::size_t m = micro_batches_of(sched, batch, "train_step");
    const auto plan = make_plan(batch, m);
    std::vector<std::vector<schedule::Task>> orders(num_stages);
    for (std::size_t s = 0; s < num_stages; ++s) {
      orders[s] = sched.order(s, num_stages, m);
      check_order(orders[s], s, m);
    }
    if (const std::size_t s = walk(orders, m, [](std::size_t, schedule::Task) {}); s < num_stages)
      detail::fail("schedule: the task order of stage ", s, " cannot be issued (a dependency never comes)");

    prepare(plan, orders);
    place_host_work(plan);
    auto &last = stages_.back();
    if (!y.device && targets_.size() < batch * per_sample * sizeof(Target)) {
      targets_ = detail::Buffer<std::byte>(*last.ex, batch * per_sample * sizeof(Target));
      forget_graphs();
    }
    const Target *targets = y.device ? y.device : reinterpret_cast<const Target *>(targets_.data());
    const bool checking = ctx_->options().check_finite;

    // A step like the last one is captured, and replayed while steps stay like it.
    std::optional<GraphKey> key;
    if (ctx_->options().graphs && can_capture_ && graph_error_.empty() && !checking && !ctx_->timeline().enabled()) {
      std::optional<std::uint64_t> id = 0;
      if constexpr (optimizing) {
        if constexpr (optim::Replayable<Opt> && optim::Discardable<Opt>) id = opt->replay_id();
        else id = std::nullopt;
      }
      if (id) key = GraphKey{batch, m, orders, x.device, y.device, *id, loss_tag<Loss>(), generation_};
    }
    CapturedStep *captured = nullptr;
    if (key) {
      for (auto &g : graphs_)
        if (g.key == *key) captured = &g;
      if (!captured && last_key_ == key)
        captured = capture_step(
            *key, [&] { issue_step<Loss>(plan, orders, x, targets, opt, {}); }, opt);
    }
    last_key_ = std::move(key); // (the step reads only `captured` from here on)
    // Host inputs go into the buffers the step reads (a graph's too) ahead of its work.
    upload_input(plan, x);
    if (!y.device) last.ex->upload(targets_.data(), y.host, y.size * sizeof(Target));
    if (captured) {
      captured->graph->launch();
      transferred_ += captured->bytes;
      ++replayed_;
      if constexpr (optim::Replayable<Opt>) // else never captured
        for (std::size_t s = 0; s < num_stages; ++s) opt->replayed(s);
    } else {
      begin_timeline();
      issue_step<Loss>(plan, orders, x, targets, opt, {.optimize = !checking});
    }

    // The step is in flight; it completes (complete_pending) when its loss is asked for, or when
    // the network is next used.
    auto outcome = std::make_shared<detail::StepOutcome<T>>();
    outcome->mutex = stages_.front().ex->shared_issue_mutex();
    last.ex->download(&outcome->result, result_.data(), sizeof(StepResult));
    // Bad targets found on the device: the update was skipped there. Undo its count, then say why.
    // (Discardable, else the targets were checked on the host before; check_finite defers the
    // update, which was then never issued.)
    pending_ = {outcome, [this, y, batch, checking, opt] {
                  if constexpr (optim::Discardable<Opt>)
                    if (!checking) opt->discard_step();
                  validate_device_targets<Loss>(y, batch);
                  detail::fail("train_step: the targets failed the loss's check on the device, but not when read back");
                }};
    outcome->complete = [this] { complete_pending(); };
    for (backend::Executor *ex : executors_) ex->add_step_in_flight(in_flight_);
    outcome->finished = [this] {
      return std::all_of(executors_.begin(), executors_.end(), [](backend::Executor *e) { return e->idle(); });
    };
    if (!checking && !timeline_) return PendingLoss<T>(outcome);

    // The timeline reads the step's events, and check_finite the loss before the update: both
    // need the step completed here.
    complete_pending();
    if (!outcome->error && checking && !std::isfinite(static_cast<double>(outcome->result.loss))) {
      try {
        detail::fail("train_step: the loss is ", outcome->result.loss, " (check_finite is on): no optimizer step was ",
                     "taken, parameters and optimizer state are unchanged");
      } catch (...) {
        outcome->error = std::current_exception();
      }
    }
    if (outcome->error) {
      end_timeline();
      std::rethrow_exception(outcome->error);
    }
    if constexpr (optimizing) {
      if (checking) {
        for (std::size_t s = 0; s < num_stages; ++s) timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); });
        synchronize_all();
      }
    }
    end_timeline();
    return PendingLoss<T>(outcome);
  }

  // The step in flight (train_step_async): its outcome, and what a bad target found on the device
  // requires (undoing the optimizer's count, then the Error).
  struct InFlightStep {
    std::shared_ptr<detail::StepOutcome<T>> outcome;
    std::function<void()> on_invalid;
  };
  // Waits for the step in flight, if any, and settles its outcome: the loss, or its failure
  // (kept for PendingLoss::get, not thrown here).
  void complete_pending() noexcept {
    if (!pending_.outcome) return;
    InFlightStep step = std::move(pending_);
    pending_ = {};
    auto &outcome = *step.outcome;
    outcome.complete = nullptr;
    outcome.finished = nullptr;
    try {
      synchronize_all();
      if (outcome.result.invalid) step.on_invalid();
    } catch (...) {
      outcome.error = std::current_exception();
    }
    outcome.done = true;
  }

  struct IssueOptions {
    bool optimize = true; // each stage's update right after its last backward (off: the caller's)
  };
  // Zeroes the gradients and the step's result, then issues every stage's forward and backward,
  // the loss and (see IssueOptions) the updates.
  template <class Loss, class Opt>
  void issue_step(const Plan &plan, const std::vector<std::vector<schedule::Task>> &orders, const Source<T> &x,
                  const typename Loss::template target_type<T> *targets, Opt *opt, IssueOptions how) {
    constexpr bool optimizing = !std::is_same_v<Opt, NoOptimizer>;
    if constexpr (small_network() && loss::FusableLoss<Loss>) {
      if (fuses_network<Loss>(plan)) {
        issue_network_step<Loss>(plan, x, targets, opt, how);
        return;
      }
    }
    auto &last = stages_.back();
    for (std::size_t s = 0; s < num_stages; ++s) {
      auto &st = stages_[s];
      with_stage(s, [&]<std::size_t I>() { st.set_gradients = library_layers_only<I>(); });
      if (st.set_gradients) continue; // the stage's first backward sets them
      st.ex->submit([ex = st.ex, g = st.grads.data(), n = st.grads.size()] {
        if (n) ex->run(backend::op::Fill<T>{.n = n, .value = T(0), .dst = g});
      });
    }
    clear_result();
    const T scale = Loss::template scale<T>(plan.batch, out_features);
    const std::size_t per_sample = Loss::targets_per_sample(out_features);
    std::vector<std::function<void()>> after;
    if constexpr (optimizing)
      for (std::size_t s = 0; s < num_stages; ++s)
        after.push_back([this, opt, s] { timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); }); });
    issue(
        plan, orders, x,
        [&](std::size_t k, Slot &slot) {
          timed(num_stages - 1, TaskKind::loss, k, [&] {
            last.ex->submit([ex = last.ex, rows = plan.rows[k], out = slot.out.data(),
                             t = targets + plan.offset[k] * per_sample, scale, l = loss_slot(),
                             invalid = invalid_flag(), dy = slot.dy] {
              Loss::run(*ex, rows, out_features, static_cast<const T *>(out), t, scale, l, dy, invalid);
            });
          });
        },
        optimizing && how.optimize ? &after : nullptr);
  }

  // The step as fuses_network() allows: one op::SmallNetwork per micro-batch on the first stage's
  // device, in order (the first sets the gradients and the step's result, the rest add), reading
  // every stage's parameters and writing its gradients and activations in place; then each
  // stage's update, inside the last one where the optimizer is Fusable, else after it.
  template <class Loss, class Opt>
  void issue_network_step(const Plan &plan, const Source<T> &x, const typename Loss::template target_type<T> *targets,
                          Opt *opt, IssueOptions how) {
    auto &first = stages_.front();
    // It reads what the other stages' streams were given before it: the targets, uploaded on the
    // last one's.
    for (std::size_t s = 1; s < num_stages; ++s) {
      stages_[s].ex->record(*stages_[s].mark);
      first.ex->wait(*stages_[s].mark);
    }
    const T scale = Loss::template scale<T>(plan.batch, out_features);
    const std::size_t per_sample = Loss::targets_per_sample(out_features);
    // The updates go into the last micro-batch's operation where the optimizer can describe them.
    constexpr bool optimizing = !std::is_same_v<Opt, NoOptimizer>;
    constexpr bool fuses_updates =
        std::is_same_v<T, float> && optim::Fusable<Opt> && num_stages <= backend::op::small_network_updates;
    for (std::size_t k = 0; k < plan.m; ++k) {
      const std::size_t rows = plan.rows[k];
      backend::op::SmallNetwork<T> net{.rows = rows, .first = k == 0};
      if constexpr (fuses_updates)
        if (how.optimize && k + 1 == plan.m) {
          for (std::size_t s = 0; s < num_stages; ++s) net.updates[net.update_count++] = opt->fused_step_group(s);
          step_counted_ = true;
        }
      net.loss =
          Loss::template small_loss<T>(targets + plan.offset[k] * per_sample, scale, loss_slot(), invalid_flag());
      for_each_stage([&]<std::size_t I>() {
        auto &st = stages_[I];
        Slot &slot = st.slots[k];
        const T *input = I > 0      ? stages_[I - 1].slots[k].out.data() // the boundary, read in place
                         : x.device ? x.device + plan.offset[k] * in_features
                                    : slot.input;
        const auto io = layer_io<I>(slot, input);
        const auto op = small_op<I, backend::op::SmallForward<T>>(rows, st.params.data(), st.grads.data(), io.x.data(),
                                                                  io.y.data());
        for (std::size_t j = 0; j < stage<I>::num_layers; ++j) net.layers[net.count++] = op.layers[j];
        st.live = 0;
        st.peak = 1; // a micro-batch's activations are used up before the next one's are made
      });
      timed(0, TaskKind::network, static_cast<std::ptrdiff_t>(k),
            [&] { first.ex->submit([ex = first.ex, net] { ex->run(net); }); });
    }
    // What the other stages do next (their updates, where not fused; the loss's download on the
    // last) comes after it.
    first.ex->record(*first.mark);
    for (std::size_t s = 1; s < num_stages; ++s) stages_[s].ex->wait(*first.mark);
    if constexpr (optimizing && !fuses_updates)
      if (how.optimize) {
        for (std::size_t s = 0; s < num_stages; ++s) timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); });
        step_counted_ = true;
      }
  }

  // On the host backend, a step with nothing for the stages to overlap, or too little work per
  // task to repay handing it to a worker thread, runs on the calling thread (context.hpp). A
  // parameter costs about 6 flops per sample in training (2 forward, 4 backward).
  void place_host_work(const Plan &plan) {
    bool calling = false;
    switch (ctx_->options().host_execution) {
    case HostExecution::workers: break;
    case HostExecution::calling_thread: calling = true; break;
    case HostExecution::automatic: {
      const std::size_t rows = *std::max_element(plan.rows.begin(), plan.rows.end());
      calling = host_step_on_calling_thread(plan.m, 6.0 * static_cast<double>(largest_stage_ * rows));
      break;
    }
    }
    for (auto *ex : executors_) ex->run_on_issuing_thread(calling);
  }
  static constexpr std::size_t largest_stage_ = std::max({Stages::parameter_count...});

  // Input from host memory into stage 0's per-micro-batch buffers, before the work that reads
  // them is issued (or a graph that reads them is launched).
  void upload_input(const Plan &plan, const Source<T> &x) {
    if (x.device) return;
    auto &first = stages_.front();
    for (std::size_t k = 0; k < plan.m; ++k)
      first.ex->upload(first.slots[k].input_own.data(), x.host + plan.offset[k] * in_features,
                       plan.rows[k] * in_features * sizeof(T));
  }

  // Reads targets on the device back and checks them on the host; throws the loss's Error.
  template <class Loss>
  void validate_device_targets(const Source<typename Loss::template target_type<T>> &y, std::size_t batch) {
    using Target = typename Loss::template target_type<T>;
    auto host = detail::host_vector<Target>(y.size, "a copy of the targets");
    auto &last = *stages_.back().ex;
    last.download(host.data(), y.device, y.size * sizeof(Target));
    last.synchronize();
    Loss::validate(std::span<const Target>(host), batch, out_features);
  }

  // What makes two training steps the same work: a captured one is replayed only for its key.
  struct GraphKey {
    std::size_t batch = 0, m = 0;
    std::vector<std::vector<schedule::Task>> orders;
    const T *x = nullptr; // device inputs are read in place (null: host inputs, copied in)
    const void *y = nullptr;
    std::uint64_t optimizer = 0; // its replay_id (0: no optimizer)
    const void *loss = nullptr;  // loss_tag<Loss>()
    std::size_t generation = 0;  // of the buffers the graph points into
    friend bool operator==(const GraphKey &, const GraphKey &) = default;
  };
  struct CapturedStep {
    GraphKey key;
    std::unique_ptr<backend::Graph> graph;
    std::size_t bytes = 0; // crossing stage boundaries per launch
  };
  // A few shapes (a full batch and an epoch's last, shorter one) stay captured at once.
  static constexpr std::size_t max_graphs = 4;
  template <class Loss> static const void *loss_tag() {
    static const char tag = 0;
    return &tag;
  }

  // Captures a step; on failure (an operation that cannot be captured) remembers why, undoes the
  // optimizer's count of the step that was not run, if the capture got as far as counting it, and
  // returns null: the step is then issued.
  template <class Issue, class Opt> CapturedStep *capture_step(const GraphKey &key, Issue &&issue_work, Opt *opt) {
    const std::size_t before = transferred_;
    std::unique_ptr<backend::Graph> graph;
    step_counted_ = false;
    try {
      graph = stages_.front().ex->capture(executors_, issue_work);
    } catch (const std::exception &e) {
      graph_error_ = e.what();
      if (graph_error_.empty()) graph_error_ = "capture failed";
      transferred_ = before;
      if constexpr (optim::Discardable<Opt>) // else never captured
        if (step_counted_) opt->discard_step();
      return nullptr;
    }
    // Issuing counted the step's bytes and the optimizer's steps; the launch counts them again.
    const std::size_t bytes = transferred_ - before;
    transferred_ = before;
    if constexpr (optim::Discardable<Opt>) opt->discard_step();
    if (graphs_.size() == max_graphs) graphs_.erase(graphs_.begin());
    graphs_.push_back({key, std::move(graph), bytes});
    return &graphs_.back();
  }
  // The step's loss and status word, in one fill on the last stage: +0.0 and 0 are all zero bits.
  void clear_result() {
    auto &last = *stages_.back().ex;
    last.submit([ex = &last, r = reinterpret_cast<T *>(result_.data())] {
      ex->run(backend::op::Fill<T>{.n = sizeof(StepResult) / sizeof(T), .value = T(0), .dst = r});
    });
  }
  // Buffers a graph points into were replaced: no graph may run again.
  void forget_graphs() {
    graphs_.clear();
    last_key_.reset();
    ++generation_;
  }

  static void check_order(const std::vector<schedule::Task> &order, std::size_t s, std::size_t m) {
    std::vector<int> f(m, 0), b(m, 0);
    for (const auto &t : order) {
      if (t.micro_batch >= m) detail::fail("schedule: stage ", s, " lists micro-batch ", t.micro_batch, " of ", m);
      auto &c = t.kind == schedule::Task::forward ? f[t.micro_batch] : b[t.micro_batch];
      if (++c > 1 || (t.kind == schedule::Task::backward && !f[t.micro_batch]))
        detail::fail("schedule: stage ", s, " runs micro-batch ", t.micro_batch, "'s ",
                     t.kind == schedule::Task::forward ? "forward" : "backward", " twice or out of order");
    }
    for (std::size_t k = 0; k < m; ++k)
      if (!f[k] || !b[k]) detail::fail("schedule: stage ", s, " never runs micro-batch ", k);
  }

  // Timeline hooks: when the context's timeline records, each task's issue is bracketed by events
  // on the executor that runs it (copies: on the destination's, which records the copy's done).
  void begin_timeline() {
    Timeline &tl = ctx_->timeline();
    timeline_ = tl.enabled() ? &tl : nullptr;
    if (!timeline_) return;
    auto device = [](std::size_t s) { return "Device<" + std::to_string(device_of(s)) + ">"; };
    std::array<backend::Executor *, num_stages> executors{};
    for (std::size_t s = 0; s < num_stages; ++s) {
      auto &st = stages_[s];
      executors[s] = st.ex;
      st.track = tl.track(device(s));
      if (st.to_next) st.next_track = tl.track(device(s) + " -> " + device(s + 1));
      if (st.to_prev) st.prev_track = tl.track(device(s) + " -> " + device(s - 1));
    }
    tl.begin_step(executors);
  }
  void end_timeline() {
    if (timeline_) timeline_->end_step();
    timeline_ = nullptr;
  }
  template <class F> void timed(std::size_t s, TaskKind kind, std::ptrdiff_t k, F &&issue_work) {
    if (!timeline_) return issue_work();
    const auto mark = timeline_->open(*stages_[s].ex, stages_[s].track, kind, s, k);
    issue_work();
    timeline_->close(mark);
  }
  void copy_boundary(backend::Link &link, std::size_t from, std::size_t to, std::size_t track, std::size_t k,
                     const void *src, void *dst, std::size_t bytes, backend::Event &ready, backend::Event &done) {
    if (!timeline_) return link.copy(src, dst, bytes, ready, done);
    // at(): GCC cannot tell that `to` is a stage index on every path it inlines this into.
    const auto mark = timeline_->prepare(*stages_.at(to).ex, track, TaskKind::copy, from, std::ptrdiff_t(k));
    link.copy(src, dst, bytes, ready, done, &timeline_->begin(mark));
    timeline_->close(mark, done);
  }

  // Its own step in flight and any other network's on its devices (Executor::add_step_in_flight):
  // whatever this network waits for next must not take another step's failure.
  void complete_steps_in_flight() noexcept {
    complete_pending();
    for (backend::Executor *ex : executors_) ex->complete_steps_in_flight();
  }

  // Listed on each device of a step in flight: whoever waits on that device first completes it.
  struct Completer final : backend::StepInFlight {
    explicit Completer(BasicPipeline *p) : pipeline(p) {}
    void complete_pending() noexcept override { pipeline->complete_pending(); }
    BasicPipeline *pipeline;
  };

  void synchronize_all() {
    std::exception_ptr first;
    for (auto &st : stages_) {
      try {
        st.ex->synchronize();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  }

  // First, so it goes last: the Context's body and executors outlive everything below.
  std::shared_ptr<detail::ContextState> ctx_;
  Context *context_;
  std::array<StageState, num_stages> stages_{};
  std::vector<Parameter<T>> parameters_;
  std::vector<optim::ParameterGroup<T>> groups_;
  InFlightStep pending_;
  std::shared_ptr<Completer> in_flight_ = std::make_shared<Completer>(this); // (before groups_ are made)
  std::vector<backend::Executor *> executors_;                               // each stage's, in stage order
  detail::Buffer<std::byte> targets_;
  detail::Buffer<std::byte> result_; // a StepResult on the last stage's device
  // Captured steps (ContextOptions::graphs), after the buffers they point into: destroyed first.
  bool can_capture_ = false;
  std::vector<CapturedStep> graphs_;
  std::optional<GraphKey> last_key_; // the last step's: one seen twice in a row is captured
  std::size_t generation_ = 0;
  std::size_t replayed_ = 0;
  std::string graph_error_;
  std::size_t transferred_ = 0;
  // Set where a step's issue counted the optimizer's step (all its groups at once: the updates go
  // last); capture_step reads it to undo the count of a step that was never captured.
  bool step_counted_ = false;
  Timeline *timeline_ = nullptr; // the context's, during a step that records
};

// The float network users write: Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, ...>.
template <class... Stages> using Pipeline = BasicPipeline<float, Stages...>;

} // namespace tandem
