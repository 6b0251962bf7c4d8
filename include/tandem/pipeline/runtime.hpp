// SPDX-License-Identifier: Apache-2.0
// detail::Runtime: a network's run-time half - its stages' state on their devices, and the steps
// it issues through the rooms beside this header: build_stage.hpp (a stage at construction),
// plan.hpp (micro-batches, task lists, the walk), stage_state.hpp (buffers), fusion.hpp,
// stage_issue.hpp (a stage's forward and backward), boundary.hpp (copies between stages),
// rank_boundary.hpp (messages between ranks), ranks.hpp, network_step.hpp, graph_cache.hpp,
// step_in_flight.hpp and step_trace.hpp (the timeline). BasicPipeline (pipeline.hpp) is its
// public face.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/context.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"
#include "tandem/loss/loss.hpp"
#include "tandem/optim/optimizer.hpp"
#include "tandem/parameter.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/pipeline/boundary.hpp"
#include "tandem/pipeline/build_stage.hpp"
#include "tandem/pipeline/fusion.hpp"
#include "tandem/pipeline/graph_cache.hpp"
#include "tandem/pipeline/network_step.hpp"
#include "tandem/pipeline/plan.hpp"
#include "tandem/pipeline/rank_boundary.hpp"
#include "tandem/pipeline/ranks.hpp"
#include "tandem/pipeline/stage_issue.hpp"
#include "tandem/pipeline/stage_state.hpp"
#include "tandem/pipeline/step_in_flight.hpp"
#include "tandem/pipeline/step_io.hpp"
#include "tandem/pipeline/step_trace.hpp"
#include "tandem/random.hpp"
#include "tandem/timeline.hpp"

namespace tandem::detail {

template <class Topo> class Runtime {
  using T = typename Topo::value_type;
  using Fuse = Fusion<Topo>;
  using Issue = StageIssue<Topo>;
  static constexpr std::size_t num_stages = Topo::num_stages;
  static constexpr std::size_t in_features = Topo::in_features, out_features = Topo::out_features;
  static constexpr std::size_t rows_per_sample = Topo::rows_per_sample;
  using Input = typename Topo::input_type; // the network's input: values, or token ids
  template <class Loss> using target_t = typename Loss::template target_type<T>;

public:
  Runtime(Context &ctx, std::uint64_t seed)
      : ctx_(ctx.state()), context_(&ctx), ranks_(ctx, stage_ranks(ctx)), seed_(seed) {
    const std::lock_guard turn(ctx.issue_mutex()); // docs/threads.md
    // Across processes every rank builds the same network (or throws, having built nothing).
    ranks_.agree_network(network_record(seed));
    // Building waits on the devices: another network's step in flight there completes first.
    for (std::size_t s = 0; s < num_stages; ++s)
      if (ranks_.local(s)) ctx.executor(Topo::device_of(s)).complete_steps_in_flight();
    Topo::for_each_stage(
        [&]<std::size_t I>() { build_stage<Topo, I>(stages_[I], ranks_, *ctx_, seed, alive_, parameters_, groups_); });
    for (std::size_t s = 0; s + 1 < num_stages; ++s) {
      if (!ranks_.local(s) || !ranks_.local(s + 1)) continue; // a message, not a link
      stages_[s].to_next = ctx.link(Topo::device_of(s), Topo::device_of(s + 1));
      stages_[s + 1].to_prev = ctx.link(Topo::device_of(s + 1), Topo::device_of(s));
    }
    for (auto &st : stages_)
      if (st.ex) executors_.push_back(st.ex);
    in_flight_ = std::make_shared<NetworkStepInFlight<T>>(executors_);
    for (auto &g : groups_) g.in_flight = in_flight_;
    if (ranks_.active())
      in_flight_->settle_with([this](StepOutcome<T> &outcome, std::exception_ptr &error) {
        ranks_.settle("train_step", outcome.result, error);
      });
    // Each step's loss and status, side by side so that one download brings both back. Where
    // every stage can read the last stage's memory, the optimizers read the status there and
    // skip the update of a step that found a bad label (so labels on the device need no check
    // on the host before the step); captured steps need every stage on one GPU in any case.
    // Across processes it lives on this rank's last stage; the loss there is the last stage's
    // rank's, which the other ranks take when the step completes.
    result_ex_ = executors_.empty() ? nullptr : executors_.back();
    if (!result_ex_) return; // a rank without stages
    auto &last = *result_ex_;
    result_ = Buffer<std::byte>(last, sizeof(StepResult<T>));
    // Zero until a step sets it: an optimizer stepped by hand before any step reads the status.
    clear_result();
    last.synchronize();          // (before another stage's stream reads it)
    if (ranks_.active()) return; // labels are checked on the host; no graphs
    if (last.shares_memory_with(executors_))
      for (auto &g : groups_) g.skip = invalid_flag();
    graphs_.set_capturable(!Topo::draws_random && stages_.front().ex->can_capture(executors_));
  }
  Runtime(const Runtime &) = delete;
  Runtime &operator=(const Runtime &) = delete;
  ~Runtime() {
    const std::lock_guard turn(ctx_->issue_mutex());
    // Its own step and any other network's on its devices: the waits below must not take (and
    // drop) a failure that is for another PendingLoss. Completing keeps failures; it throws nothing.
    in_flight_->complete_all();
    in_flight_.reset(); // the devices' lists and the optimizers find nothing left of it
    // Nothing may still use the buffers about to be freed.
    for (auto *ex : executors_) {
      try {
        ex->synchronize();
      } catch (...) {
      }
    }
  }

  // The Context it was made on, while that lives (the network itself may outlive it).
  Context &context() const { return *context_; }
  std::span<const Parameter<T>> parameters() const { return parameters_; }
  std::span<const optim::ParameterGroup<T>> parameter_groups() const { return groups_; }
  const StageState<T> &stage(std::size_t s) const { return stages_.at(s); }
  std::size_t transferred_bytes() const { return transferred_; }
  const GraphCache<T> &graphs() const { return graphs_; }

  // Bytes the stages hold for steps (buffers of micro-batches in flight, activations kept for
  // the backward, scratch, the targets' copy), and giving them all back.
  std::size_t workspace_bytes() const {
    std::size_t bytes = targets_.size();
    for (const auto &st : stages_) bytes += st.held_bytes();
    return bytes;
  }
  void release_workspace() {
    in_flight_->complete_all();
    synchronize_all(executors_);
    graphs_.forget();
    for (auto &st : stages_) st.release();
    targets_ = Buffer<std::byte>();
  }

  // Inference: `make_sink(batch)` says where the output goes once the batch is known.
  // Across processes every rank returns the output, sent from the last stage's rank.
  template <class Sched, class MakeSink> void infer(const Source<Input> &x, const Sched &sched, MakeSink make_sink) {
    const std::lock_guard turn(ctx_->issue_mutex()); // docs/threads.md
    in_flight_->complete_all();
    Ranks::Call call(ranks_, "forward", fingerprint("forward"));
    std::size_t rows = 0, m = 0;
    call.run([&] {
      if (x.device && ranks_.active()) fail("forward: across processes the input is host data (a span)");
      if (x.size || ranks_.local(0)) rows = batch_rows(x.size, in_features, "forward");
      if (rows) (void)batch_samples(rows, rows_per_sample, "forward");
      if (x.host && x.size) Topo::check_input(x.host_span(), "forward");
    });
    Plan plan;
    TaskOrders orders;
    const std::size_t batch = call.agree(rows, [&](std::size_t b) {
      m = micro_batches(sched, b / rows_per_sample, "forward");
      plan = Plan::split(b / rows_per_sample, m, rows_per_sample);
      orders = forward_orders(num_stages, m);
      prepare(plan, orders);
      return Ranks::Planned{m, orders};
    });
    const Sink<T> out = make_sink(batch);
    place_host_work(plan);
    trace_.begin(ctx_->timeline(), all_stages());
    auto &last = stages_.back();
    rank_boundary().post_receives(plan, false);
    upload_input(plan, x);
    std::exception_ptr error;
    try {
      issue(plan, orders, x, 0, [&](std::size_t k, const Slot<T> &slot) {
        const std::size_t at = plan.offset[k] * out_features, bytes = plan.rows[k] * out_features * sizeof(T);
        if (out.host) last.ex->download(out.host + at, slot.out.data(), bytes);
        else
          last.ex->submit(
              [ex = last.ex, dst = out.device + at, src = slot.out.data(), bytes] { ex->copy(dst, src, bytes); });
      });
      synchronize_all(executors_);
    } catch (...) {
      if (!ranks_.active()) throw;
      error = std::current_exception();
      try {
        synchronize_all(executors_);
      } catch (...) {
      }
    }
    StepResult<T> unused{};
    ranks_.settle("forward", unused, error);
    trace_.end();
    if (error) std::rethrow_exception(error);
    if (ranks_.active())
      ranks_.channel().broadcast(out.host, batch * out_features * sizeof(T), ranks_.rank_of(num_stages - 1), "forward");
  }

  // A training step (Opt = NoOptimizer: forward and backward only), in phases: the checks and the
  // plan, the targets' buffer, a captured graph to replay, the step's data, the work, the step in
  // flight. Every precondition is checked before any work is issued; targets on the device are
  // checked there, during the step, where the optimizer can undo its count of a cancelled step.
  template <class Loss, class Sched, class Opt>
  PendingLoss<T> step(const Source<Input> &x, const Source<target_t<Loss>> &y, const Sched &sched, Opt *opt) {
    const std::lock_guard turn(ctx_->issue_mutex()); // docs/threads.md
    in_flight_->complete_all();                      // the step before: its loss check may undo an optimizer count
    const StepPlan sp = plan_step<Loss>(x, y, sched, opt);
    const target_t<Loss> *targets = stage_targets<Loss>(y, sp.batch);
    const bool checking = ctx_->options().check_finite;
    auto *captured = replayable_graph<Loss>(sp, x, y, targets, opt, checking);
    upload_step_data(sp.plan, x, y);
    auto outcome = launch_step<Loss>(sp, captured, x, targets, opt, checking);
    return start_in_flight<Loss>(outcome, y, sp.batch, checking, opt);
  }

private:
  // A step's shape once every rank agrees on it: its rows, micro-batches and task lists.
  struct StepPlan {
    std::size_t batch = 0, m = 0;
    Plan plan;
    TaskOrders orders;
  };

  // The checks and the plan. Across processes each rank checks what it holds, and every rank
  // throws if any rank's check fails or the ranks disagree (ranks.hpp); in one process each check
  // throws at once. The workspace is made to fit the plan.
  template <class Loss, class Sched, class Opt>
  StepPlan plan_step(const Source<Input> &x, const Source<target_t<Loss>> &y, const Sched &sched, Opt *) {
    constexpr bool optimizing = optimizing_v<Opt>;
    Ranks::Call call(ranks_, "train_step",
                     fingerprint(typeid(Loss).name(), fingerprint(optimizing ? "train_step" : "forward_backward")));
    std::size_t rows = 0;
    call.run([&] {
      if ((x.device || y.device) && ranks_.active())
        fail("train_step: across processes the input and targets are host data (spans)");
      if (x.size || ranks_.local(0)) rows = batch_rows(x.size, in_features, "train_step");
      if (rows) (void)batch_samples(rows, rows_per_sample, "train_step");
      if (x.host && x.size) Topo::check_input(x.host_span(), "train_step");
    });
    const std::size_t per_sample = Loss::targets_per_sample(out_features);
    const bool holds_last = ranks_.local(num_stages - 1);
    StepPlan sp;
    sp.batch = call.agree(rows, [&](std::size_t b) {
      bool check_on_device = false;
      if constexpr (!optimizing || optim::Discardable<Opt>)
        check_on_device = y.device && y.size == b * per_sample && groups_.front().skip;
      if (y.device && !check_on_device) validate_device_targets<Loss>(*stages_.back().ex, y, b, out_features);
      else if (!y.device && (holds_last || y.size)) Loss::validate(y.host_span(), b, out_features);
      sp.m = micro_batches(sched, b / rows_per_sample, "train_step");
      sp.plan = Plan::split(b / rows_per_sample, sp.m, rows_per_sample);
      sp.orders = training_orders(sched, stage_devices(), sp.m);
      prepare(sp.plan, sp.orders);
      return Ranks::Planned{sp.m, sp.orders};
    });
    place_host_work(sp.plan);
    return sp;
  }

  // Where the loss reads the targets: the caller's device tensor, or the network's copy on the
  // last stage, made to fit (the workspace's rule).
  template <class Loss> const target_t<Loss> *stage_targets(const Source<target_t<Loss>> &y, std::size_t batch) {
    using Target = target_t<Loss>;
    const std::size_t bytes =
        checked_product(batch * Loss::targets_per_sample(out_features), sizeof(Target), "the targets' copy");
    if (ranks_.local(num_stages - 1) && !y.device && (targets_.size() < bytes || oversized(targets_.size(), bytes))) {
      auto &last = *stages_.back().ex;
      last.synchronize();
      graphs_.forget();
      targets_ = Buffer<std::byte>();
      targets_ = Buffer<std::byte>(last, bytes);
    }
    return y.device ? y.device : reinterpret_cast<const Target *>(targets_.data());
  }

  // A step like the last one is captured, and replayed while steps stay like it: the graph, or
  // null where the step is issued.
  template <class Loss, class Opt>
  typename GraphCache<T>::Captured *replayable_graph(const StepPlan &sp, const Source<Input> &x,
                                                     const Source<target_t<Loss>> &y, const target_t<Loss> *targets,
                                                     Opt *opt, bool checking) {
    std::optional<typename GraphCache<T>::Key> key;
    if (ctx_->options().graphs && graphs_.usable() && !checking && !ctx_->timeline().enabled()) {
      std::optional<std::uint64_t> id = 0;
      if constexpr (optimizing_v<Opt>) {
        if constexpr (optim::Replayable<Opt> && optim::Discardable<Opt>) id = opt->replay_id();
        else id = std::nullopt;
      }
      if (id)
        key = typename GraphCache<T>::Key{sp.batch,
                                          sp.m,
                                          sp.orders,
                                          reinterpret_cast<const T *>(x.device),
                                          y.device,
                                          *id,
                                          GraphCache<T>::template loss_tag<Loss>(),
                                          graphs_.generation()};
    }
    bool capture_now = false;
    auto *captured = graphs_.find(std::move(key), capture_now);
    if (capture_now) captured = capture_step<Loss>(sp.plan, sp.orders, x, targets, opt);
    return captured;
  }

  // Host inputs and targets go into the buffers the step reads (a graph's too) ahead of its work,
  // and the receives of another rank's boundaries are posted.
  template <class Target> void upload_step_data(const Plan &plan, const Source<Input> &x, const Source<Target> &y) {
    rank_boundary().post_receives(plan, true);
    upload_input(plan, x);
    if (!y.device && ranks_.local(num_stages - 1))
      stages_.back().ex->upload(targets_.data(), y.host, y.size * sizeof(Target));
  }

  // The work: the graph replayed, or every stage's tasks issued. Across processes a failure to
  // issue is kept in the outcome, which the other ranks learn of as the step completes.
  template <class Loss, class Opt>
  std::shared_ptr<StepOutcome<T>> launch_step(const StepPlan &sp, typename GraphCache<T>::Captured *captured,
                                              const Source<Input> &x, const target_t<Loss> *targets, Opt *opt,
                                              bool checking) {
    auto outcome = std::make_shared<StepOutcome<T>>();
    outcome->mutex = ctx_->shared_issue_mutex();
    ++steps_; // (the key of the step's random layers, step_key)
    if (captured) {
      captured->graph->launch();
      transferred_ += captured->bytes;
      graphs_.count_replay();
      if constexpr (optim::Replayable<Opt>) // else never captured
        for (std::size_t s = 0; s < num_stages; ++s) opt->replayed(s);
    } else {
      trace_.begin(ctx_->timeline(), all_stages());
      bool counted = false;
      try {
        issue_step<Loss>(sp.plan, sp.orders, x, targets, opt, !checking, counted);
      } catch (...) {
        if (!ranks_.active()) throw;
        outcome->error = std::current_exception();
      }
    }
    return outcome;
  }

  // The step is in flight; it completes when its loss is asked for, or when the network is next
  // used. Bad targets found on the device: the update was skipped there. Undo its count, then say
  // why. (Discardable, else the targets were checked on the host before; check_finite defers the
  // update, which was then never issued.)
  template <class Loss, class Opt>
  PendingLoss<T> start_in_flight(const std::shared_ptr<StepOutcome<T>> &outcome, const Source<target_t<Loss>> &y,
                                 std::size_t batch, bool checking, Opt *opt) {
    if (result_ex_) result_ex_->download(&outcome->result, result_.data(), sizeof(StepResult<T>));
    in_flight_->start(in_flight_, outcome, [this, y, batch, checking, opt] {
      if constexpr (optim::Discardable<Opt>) {
        if (!checking) opt->discard_step();
      } else {
        (void)checking, (void)opt; // (clang: captured for the Discardable case alone)
      }
      validate_device_targets<Loss>(*stages_.back().ex, y, batch, out_features);
      fail("train_step: the targets failed the loss's check on the device, but not when read back");
    });
    if (!checking && !trace_.recording()) return PendingLoss<T>(outcome);
    return finish_checked_step(*in_flight_, trace_, all_stages(), executors_, outcome, checking, opt);
  }

  // The workspace for the step (prepare_workspace): replacing a stage's buffers waits for the work
  // that may still read them, and no graph that points into them may run again.
  void prepare(const Plan &plan, const TaskOrders &orders) {
    prepare_workspace(all_stages(), plan, orders, [&](StageState<T> &st) {
      st.ex->synchronize();
      graphs_.forget();
    });
    connect_slots(all_stages());
  }

  // The host's choice per step: the calling thread or the workers (place_host_work). A parameter
  // costs about 6 flops per sample in training (2 forward, 4 backward).
  void place_host_work(const Plan &plan) {
    detail::place_host_work(ctx_->options(), executors_, plan.m,
                            6.0 * static_cast<double>(Topo::largest_stage * plan.max_rows()));
  }

  // Input from host memory into stage 0's per-micro-batch buffers, before the work that reads
  // them is issued (or a graph that reads them is launched).
  void upload_input(const Plan &plan, const Source<Input> &x) {
    auto &first = stages_.front();
    if (x.device || !first.ex) return;
    for (std::size_t k = 0; k < plan.m; ++k)
      first.ex->upload(first.slots[k].input_own.data(), x.host + plan.offset[k] * in_features,
                       plan.rows[k] * in_features * sizeof(Input));
  }

  // Issues every task list in walk()'s order, so each wait is issued after the record it waits
  // for. `at_output(k, slot)` is issued on the last stage right after its forward of micro-batch
  // k, `after_last_backward[s]` (the update) after stage s's last backward (or backward_weights).
  // Its stream has then run a backward of every micro-batch, each after the last stage's backward
  // of it: the update comes after every loss, and reads the status word they leave. The updates
  // are issued last, together: each is still the last work on its stage's stream (a stage's last
  // task is its last backward), and a capture that fails on the way has counted no optimizer step.
  // A split backward: backward_input receives dy, gives the stage before its dx and records
  // backward_done (what that stage waits for); backward_weights frees the stash entry.
  // `key`: the step's key for random layers (0: inference, which draws nothing).
  template <class AtOutput>
  void issue(const Plan &plan, const TaskOrders &orders, const Source<Input> &x, std::uint64_t key,
             AtOutput &&at_output, std::vector<std::function<void()>> *after_last_backward = nullptr) {
    const std::size_t S = num_stages;
    std::vector<std::size_t> backward_left(S, 0);
    std::vector<char> first_backward(S, 1);
    std::vector<std::size_t> finished; // stages whose last backward is issued, in that order
    std::array<bool, num_stages> fused{};
    const auto split = split_stages(orders);
    for (std::size_t s = 0; s < S; ++s) {
      stages_[s].live = stages_[s].peak = 0;
      if (!stages_[s].ex) continue; // another rank's: its tasks are skipped below
      fused[s] = Fuse::fuses_small_stage(ctx_->options(), *stages_[s].ex) && !split[s];
    }
    for (const auto &list : orders)
      for (const auto &t : list)
        backward_left[t.stage] += t.kind == schedule::Task::backward || t.kind == schedule::Task::backward_weights;
    // Every rank walks every stage's tasks in the same order and issues its own stages' only. A
    // boundary with another rank's stage is a message: sent right after the work that makes it,
    // on the same executor, and waited for right before the work that reads it.
    RankBoundary<T> messages = rank_boundary();
    walk(orders, S, plan.m, [&](std::size_t s, const schedule::Task t) {
      auto &st = stages_[s];
      if (!st.ex) return;
      const std::size_t k = t.micro_batch;
      Slot<T> &slot = st.slots[k];
      const std::size_t rows = plan.rows[k];
      const typename Issue::Call layer_call{rows, plan.offset[k], key};
      if (t.kind == schedule::Task::forward) {
        if (s == 0) {
          // Host input was uploaded into input_own (upload_input), where prepare() points. Token
          // ids are read from a value's buffer (LayerForward::x).
          if (x.device) slot.input = reinterpret_cast<const T *>(x.device + plan.offset[k] * in_features);
        } else {
          if (stages_[s - 1].ex) transferred_ += receive(all_stages(), s - 1, s, k, rows, trace_);
          else messages.arrive(s, messages.crossing(s - 1, k, backend::Direction::forward, s - 1), *slot.input_ready);
          st.ex->wait(*slot.wait_input);
        }
        trace_.timed(s, TaskKind::forward, k, [&] {
          Topo::with_stage(s, [&]<std::size_t I>() { Issue::template forward<I>(st, slot, layer_call, fused[s]); });
        });
        st.ex->record(*slot.forward_done);
        st.peak = std::max(st.peak, ++st.live);
        if (s + 1 == S) at_output(k, slot);
        else if (!stages_[s + 1].ex)
          transferred_ += messages.send(s, slot.out.data(), rows * st.widths.back(),
                                        messages.crossing(s, k, backend::Direction::forward, s + 1));
      } else if (t.kind == schedule::Task::backward_weights) {
        trace_.timed(s, TaskKind::backward_weights, k, [&] {
          Topo::with_stage(s, [&]<std::size_t I>() { Issue::template backward_weights<I>(st, slot, layer_call); });
        });
        --st.live;
        if (--backward_left[s] == 0) finished.push_back(s);
      } else {
        const bool whole = t.kind == schedule::Task::backward;
        if (s + 1 < S) {
          if (stages_[s + 1].ex) transferred_ += receive(all_stages(), s + 1, s, k, rows, trace_);
          else messages.arrive(s, messages.crossing(s, k, backend::Direction::backward, s + 1), *slot.dy_ready);
          st.ex->wait(*slot.wait_dy);
        }
        trace_.timed(s, whole ? TaskKind::backward : TaskKind::backward_input, k, [&] {
          Topo::with_stage(s, [&]<std::size_t I>() {
            if (whole) Issue::template backward<I>(st, slot, layer_call, first_backward[s], fused[s]);
            else Issue::template backward_input<I>(st, slot, layer_call);
          });
        });
        first_backward[s] = 0;
        st.ex->record(*slot.backward_done);
        if (s > 0 && !stages_[s - 1].ex)
          transferred_ += messages.send(s, slot.dx.data(), rows * st.widths.front(),
                                        messages.crossing(s - 1, k, backend::Direction::backward, s - 1));
        if (whole) {
          --st.live;
          if (--backward_left[s] == 0) finished.push_back(s);
        }
      }
    });
    if (after_last_backward)
      for (const std::size_t s : finished) (*after_last_backward)[s]();
  }

  // Boundaries with another rank's stages, as messages (rank_boundary.hpp).
  RankBoundary<T> rank_boundary() { return {ranks_, all_stages(), trace_}; }

  // The stages whose backwards the lists split (Task::backward_input).
  static std::array<bool, num_stages> split_stages(const TaskOrders &orders) {
    std::array<bool, num_stages> split{};
    for (const auto &list : orders)
      for (const auto &t : list) split[t.stage] = split[t.stage] || t.kind == schedule::Task::backward_input;
    return split;
  }
  // Each stage's device (its index in Device<N>).
  static std::vector<std::size_t> stage_devices() {
    std::vector<std::size_t> devices;
    for (std::size_t s = 0; s < num_stages; ++s) devices.push_back(Topo::device_of(s));
    return devices;
  }
  // The rank of each stage's device.
  static std::vector<int> stage_ranks(const Context &ctx) {
    std::vector<int> ranks;
    for (std::size_t s = 0; s < num_stages; ++s) ranks.push_back(ctx.rank_of(Topo::device_of(s)));
    return ranks;
  }
  // What every rank must agree on when it builds the network: the type (its mangled name, which
  // spells every stage, device, layer and width), seed, value type and placement.
  Ranks::NetworkRecord network_record(std::uint64_t seed) const {
    std::string placement;
    for (std::size_t s = 0; s < num_stages; ++s) placement += std::to_string(ranks_.rank_of(s)) + ',';
    return {
        fingerprint(typeid(Topo).name()), seed, fingerprint(placement), sizeof(T), num_stages, Topo::parameter_count};
  }
  // Zeroes the gradients and the step's result, then issues every stage's forward and backward,
  // the loss and (with `optimize`) the updates. `counted` says whether the optimizer has counted
  // the step, also where issuing fails after that.
  template <class Loss, class Opt>
  void issue_step(const Plan &plan, const TaskOrders &orders, const Source<Input> &x, const target_t<Loss> *targets,
                  Opt *opt, bool optimize, bool &counted) {
    constexpr bool optimizing = optimizing_v<Opt>;
    // A schedule that splits backwards runs its tasks as listed, each stage on its own.
    const auto split = split_stages(orders);
    if constexpr (Fuse::small_network() && loss::FusableLoss<Loss>) {
      const bool any_split = std::find(split.begin(), split.end(), true) != split.end();
      if (!any_split && !ranks_.active() && Fuse::template fuses_network<Loss>(ctx_->options(), executors_, plan))
        return issue_network_step<Topo, Loss>(all_stages(), plan, reinterpret_cast<const T *>(x.device), targets, opt,
                                              optimize, loss_slot(), invalid_flag(), trace_, counted);
    }
    auto &last = stages_.back();
    for (std::size_t s = 0; s < num_stages; ++s) {
      auto &st = stages_[s];
      if (!st.ex) continue;
      // (a split backward adds every micro-batch's gradients to zeroed ones)
      Topo::with_stage(
          s, [&]<std::size_t I>() { st.set_gradients = Fuse::template sets_gradients_only<I>() && !split[s]; });
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
        after.push_back([this, opt, s] { trace_.timed(s, TaskKind::optimizer, -1, [&] { opt->step_group(s); }); });
    const bool updates = optimizing && optimize;
    issue(
        plan, orders, x, step_key(),
        [&](std::size_t k, Slot<T> &slot) {
          trace_.timed(num_stages - 1, TaskKind::loss, k, [&] {
            last.ex->submit([ex = last.ex, rows = plan.rows[k], out = slot.out.data(),
                             t = targets + plan.offset[k] * per_sample, scale, l = loss_slot(),
                             invalid = invalid_flag(), dy = slot.dy] {
              Loss::run(*ex, rows, out_features, static_cast<const T *>(out), t, scale, l, dy, invalid);
            });
          });
        },
        updates ? &after : nullptr);
    counted = updates;
  }

  // Captures the step as a graph (GraphCache::capture). Issuing it counted the step's bytes and
  // the optimizer's step, which each launch counts again: both are undone here, and so is the
  // count of a capture that failed after the updates were issued. Null: issue the step instead.
  template <class Loss, class Opt>
  typename GraphCache<T>::Captured *capture_step(const Plan &plan, const TaskOrders &orders, const Source<Input> &x,
                                                 const target_t<Loss> *targets, Opt *opt) {
    const std::size_t before = transferred_;
    bool counted = false;
    auto *captured = graphs_.capture(std::span<backend::Executor *const>(executors_),
                                     [&] { issue_step<Loss>(plan, orders, x, targets, opt, true, counted); });
    const std::size_t bytes = transferred_ - before;
    transferred_ = before;
    if constexpr (optim::Discardable<Opt>) // else never captured
      if (counted) opt->discard_step();
    if (captured) captured->bytes = bytes;
    return captured;
  }

  // The loss of a step and whether it found bad targets on the device (CrossEntropy::run's
  // `invalid`), written on the last stage's device and downloaded together.
  T *loss_slot() { return reinterpret_cast<T *>(result_.data() + offsetof(StepResult<T>, loss)); }
  std::int32_t *invalid_flag() {
    return reinterpret_cast<std::int32_t *>(result_.data() + offsetof(StepResult<T>, invalid));
  }
  // The step's loss and status word, in one fill on the last stage: +0.0 and 0 are all zero bits.
  void clear_result() {
    if (!result_ex_) return;
    auto &last = *result_ex_;
    last.submit([ex = &last, r = reinterpret_cast<T *>(result_.data())] {
      ex->run(backend::op::Fill<T>{.n = sizeof(StepResult<T>) / sizeof(T), .value = T(0), .dst = r});
    });
  }

  std::span<StageState<T>> all_stages() { return stages_; }
  // The key of this training step's random layers (Dropout): the network's seed and the step's
  // number, the same on every rank and under every schedule. Never 0, which means "not training".
  std::uint64_t step_key() const { return Random::derive(seed_, steps_, 0).next() | 1; }

  // First, so it goes last: the Context's body and executors outlive everything below.
  std::shared_ptr<ContextState> ctx_;
  Context *context_;
  // Expires with the network: parameter handles that outlive it refuse to touch its memory.
  std::shared_ptr<const char> alive_ = std::make_shared<const char>(0);
  Ranks ranks_; // which rank runs each stage; across processes, the network's channel
  std::uint64_t seed_;
  std::uint64_t steps_ = 0; // training steps issued
  std::array<StageState<T>, num_stages> stages_{};
  std::vector<Parameter<T>> parameters_;
  std::vector<optim::ParameterGroup<T>> groups_;
  std::vector<backend::Executor *> executors_; // each of this rank's stages', in stage order
  std::shared_ptr<NetworkStepInFlight<T>> in_flight_;
  Buffer<std::byte> targets_;
  backend::Executor *result_ex_ = nullptr; // the last stage's (across processes: this rank's last)
  Buffer<std::byte> result_;               // a StepResult there
  // Captured steps, after the buffers they point into: destroyed first.
  GraphCache<T> graphs_;
  std::size_t transferred_ = 0;
  StepTrace trace_;
};

} // namespace tandem::detail
