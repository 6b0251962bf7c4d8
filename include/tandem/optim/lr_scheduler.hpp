// SPDX-License-Identifier: Apache-2.0
// Learning-rate schedules as torch.optim.lr_scheduler spells them: StepLR, MultiStepLR,
// ExponentialLR, CosineAnnealingLR, LinearLR and SequentialLR.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <numbers>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tandem/error.hpp"

namespace tandem::optim {

// What the schedules share: the optimizer they drive (any with lr() and set_lr(float)), the epoch
// count and the rate. As in PyTorch, making a schedule takes its first step (epoch 0), and each
// step() computes the next rate from the current one (PyTorch's chainable forms), in double as
// Python does; the optimizer gets the float nearest to it through set_lr, so a new rate is a new
// CUDA graph as set_lr makes it. The optimizer must outlive the schedule and stay where it is.
class LRScheduler {
public:
  LRScheduler(const LRScheduler &) = delete;
  LRScheduler &operator=(const LRScheduler &) = delete;
  virtual ~LRScheduler() = default;

  // One epoch (or one step, for schedules counted in steps) on: the optimizer's rate changes now.
  // A rate the optimizer refuses (set_lr throws) changes nothing here either.
  virtual void step() { take(last_epoch_ + 1, chained(last_epoch_ + 1)); }
  // The rate the optimizer uses now, as PyTorch's get_last_lr()[0] rounded to float.
  float last_lr() const { return static_cast<float>(group_lr_); }
  // Steps taken since the schedule was made (PyTorch's last_epoch): 0 right after construction.
  int last_epoch() const { return last_epoch_; }
  // The rate the schedule started from (PyTorch's base_lrs[0]).
  double base_lr() const { return base_lr_; }

  // Checkpoints: the schedule's kind and options as text ("CosineAnnealingLR{T_max=100,
  // eta_min=0}"; a SequentialLR's lists its schedules'), which a resumed run's schedule must
  // match, and its counters: its own, then (SequentialLR) each of its schedules' in turn.
  struct State {
    int last_epoch = 0;
    double base_lr = 0, group_lr = 0;
  };
  virtual std::string describe() const = 0;
  virtual std::vector<State> state() const { return {{last_epoch_, base_lr_, group_lr_}}; }
  // Sets the counters state() gave (the optimizer's rate is the checkpoint's to set). A list of
  // another length throws and changes nothing.
  virtual void restore(std::span<const State> s) {
    if (s.size() != 1) detail::fail("optim::", describe(), ": restore() takes 1 state, but got ", s.size());
    set(s[0]);
  }

protected:
  template <class Opt>
  explicit LRScheduler(Opt &opt)
      : optimizer_(&opt), read_([](const void *o) { return static_cast<const Opt *>(o)->lr(); }),
        write_([](void *o, float lr) { static_cast<Opt *>(o)->set_lr(lr); }), base_lr_(opt.lr()), group_lr_(base_lr_),
        made_(next_made()) {}

  // PyTorch's get_lr() at `epoch`, from the current rate; closed_form: _get_closed_form_lr(),
  // from the base rate alone (what SequentialLR uses when it switches to a schedule).
  virtual double chained(int epoch) const = 0;
  virtual double closed_form(int epoch) const = 0;

  // The optimizer's rate as PyTorch's group['lr'] holds it: the double this schedule last set,
  // unless someone has set another since (set_lr by hand), whose float is then all there is.
  double group_lr() const {
    const float now = read_(optimizer_);
    return now == static_cast<float>(group_lr_) ? group_lr_ : static_cast<double>(now);
  }
  // Hands `lr` to the optimizer, then counts the step: a refused rate leaves both as they were.
  void take(int epoch, double lr) {
    write_(optimizer_, static_cast<float>(lr));
    last_epoch_ = epoch;
    group_lr_ = lr;
  }
  // The constructor's first step, once the derived schedule's options are in place.
  void initial_step() { step(); }

  void set(const State &s) {
    last_epoch_ = s.last_epoch;
    base_lr_ = s.base_lr;
    group_lr_ = s.group_lr;
  }
  // A double in describe(): 17 significant digits, so that equal text means equal options.
  static std::string text(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
  // Pieces appended in turn (g++ 12 warns falsely, -Wrestrict, of "literal" + std::string&&).
  static std::string concat(std::initializer_list<std::string_view> parts) {
    std::string s;
    for (const auto part : parts) s += part;
    return s;
  }
  static std::string text(const std::vector<int> &values) {
    std::string s;
    for (const int x : values) {
      if (!s.empty()) s += ',';
      s += std::to_string(x);
    }
    return s;
  }

private:
  friend class SequentialLR;
  static std::uint64_t next_made() {
    static std::atomic<std::uint64_t> next{0};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  void *optimizer_;
  float (*read_)(const void *);
  void (*write_)(void *, float);
  double base_lr_;
  double group_lr_;
  int last_epoch_ = -1;
  std::uint64_t made_; // the order schedules were made in, for SequentialLR's initial rate
};

// Fields as torch.optim.lr_scheduler.StepLR names its arguments; step_size has no default there
// either.
struct StepLROptions {
  std::optional<int> step_size{};
  double gamma = 0.1;
};

// Multiplies the rate by gamma every step_size epochs.
class StepLR : public LRScheduler {
public:
  using Options = StepLROptions;
  template <class Opt> StepLR(Opt &opt, Options options) : LRScheduler(opt), step_size_(validate(options)) {
    gamma_ = options.gamma;
    initial_step();
  }
  std::string describe() const override {
    return concat({"StepLR{step_size=", std::to_string(step_size_), ", gamma=", text(gamma_), "}"});
  }

private:
  static int validate(const Options &o) {
    if (!o.step_size)
      detail::fail("optim::StepLR: no step_size; pass one, as in optim::StepLR sched(opt, {.step_size = 30})");
    if (*o.step_size < 1) detail::fail("optim::StepLR: step_size is ", *o.step_size, " (must be >= 1)");
    return *o.step_size;
  }
  double chained(int epoch) const override {
    return epoch == 0 || epoch % step_size_ != 0 ? group_lr() : group_lr() * gamma_;
  }
  double closed_form(int epoch) const override { return base_lr() * std::pow(gamma_, epoch / step_size_); }

  int step_size_;
  double gamma_ = 0;
};

struct MultiStepLROptions {
  std::vector<int> milestones{};
  double gamma = 0.1;
};

// Multiplies the rate by gamma at each milestone epoch (by gamma^k at one listed k times).
class MultiStepLR : public LRScheduler {
public:
  using Options = MultiStepLROptions;
  template <class Opt> MultiStepLR(Opt &opt, Options options) : LRScheduler(opt), options_(std::move(options)) {
    std::sort(options_.milestones.begin(), options_.milestones.end());
    initial_step();
  }
  std::string describe() const override {
    return concat({"MultiStepLR{milestones=[", text(options_.milestones), "], gamma=", text(options_.gamma), "}"});
  }

private:
  double chained(int epoch) const override {
    const auto n = std::count(options_.milestones.begin(), options_.milestones.end(), epoch);
    return n == 0 ? group_lr() : group_lr() * std::pow(options_.gamma, static_cast<double>(n));
  }
  double closed_form(int epoch) const override {
    const auto passed =
        std::upper_bound(options_.milestones.begin(), options_.milestones.end(), epoch) - options_.milestones.begin();
    return base_lr() * std::pow(options_.gamma, static_cast<double>(passed));
  }

  Options options_;
};

// gamma has no default in PyTorch either.
struct ExponentialLROptions {
  std::optional<double> gamma{};
};

// Multiplies the rate by gamma every epoch.
class ExponentialLR : public LRScheduler {
public:
  using Options = ExponentialLROptions;
  template <class Opt> ExponentialLR(Opt &opt, Options options) : LRScheduler(opt) {
    if (!options.gamma)
      detail::fail("optim::ExponentialLR: no gamma; pass one, as in optim::ExponentialLR sched(opt, {.gamma = 0.95})");
    gamma_ = *options.gamma;
    initial_step();
  }
  std::string describe() const override { return concat({"ExponentialLR{gamma=", text(gamma_), "}"}); }

private:
  double chained(int epoch) const override { return epoch == 0 ? group_lr() : group_lr() * gamma_; }
  double closed_form(int epoch) const override { return base_lr() * std::pow(gamma_, epoch); }

  double gamma_ = 0;
};

// T_max has no default in PyTorch either.
struct CosineAnnealingLROptions {
  std::optional<int> T_max{};
  double eta_min = 0;
};

// Anneals the rate from its base to eta_min along half a cosine over T_max epochs, then back up
// over the next T_max (PyTorch's recursive form, not SGDR's restarts).
class CosineAnnealingLR : public LRScheduler {
public:
  using Options = CosineAnnealingLROptions;
  template <class Opt> CosineAnnealingLR(Opt &opt, Options options) : LRScheduler(opt) {
    if (!options.T_max)
      detail::fail(
          "optim::CosineAnnealingLR: no T_max; pass one, as in optim::CosineAnnealingLR sched(opt, {.T_max = 100})");
    if (*options.T_max < 1) detail::fail("optim::CosineAnnealingLR: T_max is ", *options.T_max, " (must be >= 1)");
    t_max_ = *options.T_max;
    eta_min_ = options.eta_min;
    initial_step();
  }
  std::string describe() const override {
    return concat({"CosineAnnealingLR{T_max=", std::to_string(t_max_), ", eta_min=", text(eta_min_), "}"});
  }

private:
  // The operations in Python's order, so that the doubles agree to the last bit. The period test
  // counts in 64 bits: 2 * T_max overflows an int from T_max = 2^30 on.
  double chained(int epoch) const override {
    constexpr double pi = std::numbers::pi;
    if (epoch == 0) return group_lr();
    const std::int64_t t_max = t_max_;
    if ((std::int64_t{epoch} - 1 - t_max) % (2 * t_max) == 0)
      return group_lr() + (base_lr() - eta_min_) * (1 - std::cos(pi / t_max_)) / 2;
    return (1 + std::cos(pi * epoch / t_max_)) / (1 + std::cos(pi * (epoch - 1) / t_max_)) * (group_lr() - eta_min_) +
           eta_min_;
  }
  double closed_form(int epoch) const override {
    return eta_min_ + (base_lr() - eta_min_) * (1 + std::cos(std::numbers::pi * epoch / t_max_)) / 2;
  }

  int t_max_ = 1;
  double eta_min_ = 0;
};

// PyTorch's defaults: from a third of the rate to all of it over 5 epochs.
struct LinearLROptions {
  double start_factor = 1.0 / 3;
  double end_factor = 1.0;
  int total_iters = 5;
};

// Scales the rate linearly from start_factor to end_factor times its base over total_iters epochs
// (a warm-up), then leaves it.
class LinearLR : public LRScheduler {
public:
  using Options = LinearLROptions;
  template <class Opt> LinearLR(Opt &opt, Options options) : LRScheduler(opt), options_(options) {
    // PyTorch allows start_factor 0, then divides by zero at epoch 1.
    if (!(options.start_factor > 0 && options.start_factor <= 1))
      detail::fail("optim::LinearLR: start_factor is ", options.start_factor, " (must be in (0, 1])");
    if (!(options.end_factor >= 0 && options.end_factor <= 1))
      detail::fail("optim::LinearLR: end_factor is ", options.end_factor, " (must be in [0, 1])");
    if (options.total_iters < 1)
      detail::fail("optim::LinearLR: total_iters is ", options.total_iters, " (must be >= 1)");
    initial_step();
  }
  std::string describe() const override {
    return concat({"LinearLR{start_factor=", text(options_.start_factor), ", end_factor=", text(options_.end_factor),
                   ", total_iters=", std::to_string(options_.total_iters), "}"});
  }

private:
  double chained(int epoch) const override {
    const auto &o = options_;
    if (epoch == 0) return group_lr() * o.start_factor;
    if (epoch > o.total_iters) return group_lr();
    return group_lr() * (1. + (o.end_factor - o.start_factor) /
                                  (o.total_iters * o.start_factor + (epoch - 1) * (o.end_factor - o.start_factor)));
  }
  double closed_form(int epoch) const override {
    const auto &o = options_;
    return base_lr() *
           (o.start_factor + (o.end_factor - o.start_factor) * std::min(o.total_iters, epoch) / o.total_iters);
  }

  Options options_;
};

// The schedules in turn, schedulers[i] from milestones[i - 1] on; they must drive this optimizer
// and outlive the SequentialLR.
struct SequentialLROptions {
  std::vector<LRScheduler *> schedulers{};
  std::vector<int> milestones{};
};

// As PyTorch's SequentialLR: it restarts every schedule from the rate the optimizer had when the
// first of them was made, runs the first, and at each milestone starts the next from its closed
// form at epoch 0.
class SequentialLR : public LRScheduler {
public:
  using Options = SequentialLROptions;
  template <class Opt> SequentialLR(Opt &opt, Options options) : LRScheduler(opt), options_(std::move(options)) {
    const auto &s = options_.schedulers;
    if (s.empty()) detail::fail("optim::SequentialLR: no schedulers");
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (!s[i]) detail::fail("optim::SequentialLR: scheduler ", i, " is null");
      if (s[i]->optimizer_ != static_cast<void *>(&opt))
        detail::fail("optim::SequentialLR: scheduler ", i, " drives another optimizer than the one given");
    }
    if (options_.milestones.size() != s.size() - 1)
      detail::fail("optim::SequentialLR: ", s.size(), " schedulers need ", s.size() - 1, " milestones, but got ",
                   options_.milestones.size());
    if (!std::is_sorted(options_.milestones.begin(), options_.milestones.end()))
      detail::fail("optim::SequentialLR: the milestones must be in increasing order");
    // PyTorch's initial_lr: the rate when the first schedule on this optimizer was made.
    const LRScheduler *first =
        *std::min_element(s.begin(), s.end(), [](auto *a, auto *b) { return a->made_ < b->made_; });
    const double initial = first->base_lr_;
    write_(optimizer_, static_cast<float>(initial));
    for (LRScheduler *x : s) {
      x->base_lr_ = initial;
      x->group_lr_ = initial;
      x->last_epoch_ -= 1;
    }
    s[0]->step();
    share(*s[0]);
    base_lr_ = initial;
    last_epoch_ = 0;
  }

  std::string describe() const override {
    std::string s = "SequentialLR{schedulers=[";
    for (std::size_t i = 0; i < options_.schedulers.size(); ++i) {
      if (i) s += ", ";
      s += options_.schedulers[i]->describe();
    }
    return concat({s, "], milestones=[", text(options_.milestones), "]}"});
  }
  // Its own counters, then each schedule's.
  std::vector<State> state() const override {
    std::vector<State> all = LRScheduler::state();
    for (const LRScheduler *x : options_.schedulers) {
      const auto theirs = x->state();
      all.insert(all.end(), theirs.begin(), theirs.end());
    }
    return all;
  }
  void restore(std::span<const State> s) override {
    std::size_t expected = 1;
    for (const LRScheduler *x : options_.schedulers) expected += x->state().size();
    if (s.size() != expected)
      detail::fail("optim::SequentialLR: restore() takes ", expected, " states, but got ", s.size());
    set(s[0]);
    std::size_t at = 1;
    for (LRScheduler *x : options_.schedulers) {
      const std::size_t n = x->state().size();
      x->restore(s.subspan(at, n));
      at += n;
    }
  }

  void step() override {
    const int epoch = last_epoch_ + 1;
    const auto &m = options_.milestones;
    const auto idx = static_cast<std::size_t>(std::upper_bound(m.begin(), m.end(), epoch) - m.begin());
    LRScheduler &s = *options_.schedulers[idx];
    if (idx > 0 && m[idx - 1] == epoch) s.take(0, s.closed_form(0));
    else s.step();
    share(s);
    last_epoch_ = epoch;
  }

private:
  // Every schedule reads the optimizer's rate as the one that stepped left it.
  void share(const LRScheduler &from) {
    for (LRScheduler *x : options_.schedulers) x->group_lr_ = from.group_lr_;
    group_lr_ = from.group_lr_;
  }
  double chained(int) const override { return group_lr(); }
  double closed_form(int) const override { return group_lr(); }

  Options options_;
};

} // namespace tandem::optim
