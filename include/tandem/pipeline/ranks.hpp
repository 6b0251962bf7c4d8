// SPDX-License-Identifier: Apache-2.0
// detail::Ranks: a network whose stages live in several processes (Context(env)): which rank runs
// each stage, the checks that every rank makes the same network and the same calls, and the
// boundaries that cross between ranks (over the context's backend::Transport). Inactive - every
// check a plain call, nothing sent - in a single process.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/backend/transport.hpp"
#include "tandem/context.hpp"
#include "tandem/detail/compiled.hpp"
#include "tandem/error.hpp"
#include "tandem/pipeline/plan.hpp"

namespace tandem::detail {

// FNV-1a: the same 64 bits for the same text on every rank.
TANDEM_INLINE std::uint64_t fingerprint(std::string_view text, std::uint64_t h = 0xcbf29ce484222325ull);
TANDEM_INLINE std::uint64_t fingerprint(const TaskOrders &orders);

// A failure's message, to send to the other ranks.
TANDEM_INLINE std::string message_of(const std::exception_ptr &error);

class Ranks {
  static constexpr std::size_t text_bytes = 224;
  struct Text {
    char text[text_bytes] = {};
    void set(const std::exception_ptr &error) {
      if (!error) return;
      const std::string m = message_of(error);
      std::memcpy(text, m.data(), std::min(m.size(), text_bytes - 1));
    }
  };

public:
  // What every rank must agree on when it builds a network.
  struct NetworkRecord {
    std::uint64_t type = 0, seed = 0, placement = 0, value_bytes = 0, stages = 0, parameters = 0;
  };

  // `stage_ranks`: the rank of each stage.
  Ranks(Context &ctx, std::vector<int> stage_ranks) : stage_ranks_(std::move(stage_ranks)), rank_(ctx.rank()) {
    if (backend::Transport *t = ctx.transport(); t && t->size() > 1) {
      channel_ = t->open_channel(ctx.options().peer_timeout);
      size_ = t->size();
    }
  }

  bool active() const { return channel_ != nullptr; }
  int rank() const { return rank_; }
  int rank_of(std::size_t stage) const { return stage_ranks_[stage]; }
  bool local(std::size_t stage) const { return stage_ranks_[stage] == rank_; }
  backend::Channel &channel() { return *channel_; }

  // Throws on every rank where the ranks build different networks; changes nothing.
  TANDEM_INLINE void agree_network(const NetworkRecord &mine);

  // What a call's plan for a batch comes to on one rank: micro-batch count and task lists.
  struct Planned {
    std::size_t m = 0;
    TaskOrders orders;
  };

  // One call's checks on every rank: `run` does this rank's part, and agree() gathers every
  // rank's outcome, so that a failure or a disagreement throws on every rank, before any work
  // is issued. In a single process `run` just runs and its Error goes straight up.
  class Call {
  public:
    Call(Ranks &ranks, const char *name, std::uint64_t kind) : ranks_(ranks), name_(name), kind_(kind) {
      if (ranks_.active()) ranks_.channel().begin_step(name);
    }
    template <class F> void run(F &&f) {
      if (!ranks_.active()) return f();
      if (error_) return;
      try {
        f();
      } catch (...) {
        error_ = std::current_exception();
      }
    }
    // The batch and the plan, in one exchange. `rows`: the rows this rank read (0: it passed no
    // input, having no first stage), the same on every rank that read any; the first stage's rank
    // has read it. `plan(batch)` checks what depends on the batch, prepares the step and returns
    // its Planned. A rank that read no input plans for the batch of the network's last call
    // before the exchange; where that guess is wrong (the first call, a new batch size) it plans
    // again and a second exchange compares the plans.
    template <class Plan> std::size_t agree(std::size_t rows, Plan &&plan) {
      if (!ranks_.active()) {
        plan(rows);
        return rows;
      }
      const std::size_t guess = rows ? rows : ranks_.last_batch_;
      Planned planned;
      std::exception_ptr guess_error; // from a plan for a guessed batch: moot if the guess is wrong
      if (guess && !error_) {
        try {
          planned = plan(guess);
        } catch (...) {
          (rows ? error_ : guess_error) = std::current_exception();
        }
      }
      bool again = false;
      const std::size_t batch = agree_checks(rows, guess, planned, guess_error, again);
      if (again) {
        if (guess != batch) {
          planned = Planned{};
          run([&] { planned = plan(batch); });
        }
        agree_plan(planned.m, planned.orders);
      }
      ranks_.last_batch_ = batch;
      return batch;
    }

  private:
    // The exchange of agree(): every rank's failure, call, rows and plan (for the batch it
    // planned for). Returns the batch; `again` says that some rank planned for another batch.
    TANDEM_INLINE std::size_t agree_checks(std::size_t rows, std::size_t planned_for, const Planned &planned,
                                           const std::exception_ptr &guess_error, bool &again);
    // The second exchange, where needed: micro-batch count and task lists.
    TANDEM_INLINE void agree_plan(std::size_t m, const TaskOrders &orders);

    template <class Record> void same_plans(const std::vector<Record> &all) const {
      for (int r = 1; r < ranks_.size_; ++r) {
        if (all[r].m != all[0].m)
          fail(name_, ": the ranks disagree on the micro-batch count: rank 0 has ", all[0].m, ", rank ", r, " has ",
               all[r].m, "; every rank passes the same schedule");
        if (all[r].orders != all[0].orders)
          fail(name_, ": the ranks disagree on the schedule: rank ", r, "'s task lists differ from rank 0's (",
               all[0].m, " micro-batches); every rank passes the same schedule");
      }
    }
    template <class Record> void rethrow_first(const std::vector<Record> &all) {
      if (error_) std::rethrow_exception(error_);
      for (int r = 0; r < ranks_.size_; ++r)
        if (all[r].error.text[0]) fail(name_, ": rank ", r, " failed its checks: ", all[r].error.text);
    }
    Ranks &ranks_;
    const char *name_;
    std::uint64_t kind_;
    std::exception_ptr error_;
  };

  // The end of a step, on every rank: gathers each rank's outcome, so that a failure anywhere
  // throws everywhere (this rank's own failure first), and takes the loss and status of the last
  // stage's rank. `error` is this rank's failure so far; the channel's sends complete here.
  template <class Result> void settle(const char *call, Result &result, std::exception_ptr &error) {
    if (!active()) return;
    if (auto cause = channel_->first_timeout()) error = cause; // the root, not the waits that gave up after it
    try {
      channel_->finish_step(error != nullptr);
    } catch (...) {
      if (!error) error = std::current_exception();
    }
    struct Record {
      double loss = 0;
      std::int32_t invalid = 0, failed = 0, lost = 0;
      Text error;
    } mine{static_cast<double>(result.loss), result.invalid, error ? 1 : 0, channel_->lost() ? 1 : 0, {}};
    mine.error.set(error);
    std::vector<Record> all;
    try {
      all = gather(mine, call);
    } catch (...) {
      if (!error) error = std::current_exception();
      return;
    }
    const auto &last = all[rank_of(stage_ranks_.size() - 1)];
    result.loss = static_cast<decltype(result.loss)>(last.loss);
    result.invalid = last.invalid;
    for (int r = 0; r < size_; ++r) {
      if (all[r].lost) channel_->lose(); // messages may be left behind: build the network again
      if (!all[r].failed) continue;
      if (!error) {
        try {
          fail(call, ": rank ", r, " failed: ", all[r].error.text);
        } catch (...) {
          error = std::current_exception();
        }
      }
    }
  }

private:
  template <class Record> std::vector<Record> gather(const Record &mine, const char *call) {
    const auto bytes = channel_->all_gather(&mine, sizeof(Record), call);
    std::vector<Record> all(static_cast<std::size_t>(size_));
    std::memcpy(all.data(), bytes.data(), bytes.size());
    return all;
  }

  std::vector<int> stage_ranks_;
  int rank_ = 0, size_ = 1;
  std::size_t last_batch_ = 0; // the batch of the last call whose checks passed (agree())
  std::unique_ptr<backend::Channel> channel_;
};

// Defined here in a header-only program; in one linked with tandem::compiled, in src/compiled.cpp.
#if TANDEM_INLINE_DEFINITIONS
TANDEM_INLINE std::uint64_t fingerprint(std::string_view text, std::uint64_t h) {
  for (const char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

TANDEM_INLINE std::uint64_t fingerprint(const TaskOrders &orders) {
  std::string text;
  for (std::size_t s = 0; s < orders.size(); ++s) {
    text += std::to_string(s) + ':';
    for (const auto &t : orders[s])
      text += "FBIW"[t.kind] + std::to_string(t.micro_batch) + '@' + std::to_string(t.stage);
    text += ';';
  }
  return fingerprint(text);
}

TANDEM_INLINE std::string message_of(const std::exception_ptr &error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception &e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

TANDEM_INLINE void Ranks::agree_network(const NetworkRecord &mine) {
  if (!active()) return;
  const auto all = gather(mine, "building a network");
  const auto differs = [&](auto field, const char *what) {
    for (int r = 1; r < size_; ++r)
      if (all[r].*field != all[0].*field)
        fail("building a network: the ranks disagree on ", what, ": rank 0 has ", all[0].*field, ", rank ", r, " has ",
             all[r].*field, "; every rank must build the same Pipeline type with the same seed and ",
             "placement, in the same order");
  };
  differs(&NetworkRecord::type, "the pipeline type (a fingerprint of its stages and layers)");
  differs(&NetworkRecord::stages, "the number of stages");
  differs(&NetworkRecord::parameters, "the parameter count");
  differs(&NetworkRecord::value_bytes, "the value type's size in bytes");
  differs(&NetworkRecord::seed, "the seed");
  differs(&NetworkRecord::placement, "where the stages run (a fingerprint of each stage's rank; TANDEM_DEVICES)");
}

TANDEM_INLINE std::size_t Ranks::Call::agree_checks(std::size_t rows, std::size_t planned_for, const Planned &planned,
                                                    const std::exception_ptr &guess_error, bool &again) {
  struct Record {
    std::uint64_t kind, rows, planned_for, m, orders;
    std::int32_t guessed; // the error is from a plan for a guessed batch
    Text error;
  } mine{kind_, rows, planned_for, planned.m, planned.m ? fingerprint(planned.orders) : 0, 0, {}};
  if (error_) mine.error.set(error_);
  else if (guess_error) mine.error.set(guess_error), mine.guessed = 1;
  if (error_ || (!planned.m && !guess_error)) mine.planned_for = 0; // no plan to compare
  const auto all = ranks_.gather(mine, name_);
  if (error_) std::rethrow_exception(error_);
  const std::size_t batch = all[ranks_.rank_of(0)].rows;
  if (guess_error && planned_for == batch) std::rethrow_exception(guess_error); // the guess was right
  for (int r = 0; r < ranks_.size_; ++r)
    if (all[r].error.text[0] && (!all[r].guessed || all[r].planned_for == batch))
      fail(name_, ": rank ", r, " failed its checks: ", all[r].error.text);
  for (int r = 0; r < ranks_.size_; ++r)
    if (all[r].kind != kind_)
      fail(name_, ": the ranks make different calls (or use different losses): rank ", ranks_.rank_, " calls ", name_,
           ", rank ", r, " another; every rank makes the same calls in the same order");
  for (int r = 0; r < ranks_.size_; ++r)
    if (all[r].rows && all[r].rows != batch)
      fail(name_, ": the ranks disagree on the batch: rank ", ranks_.rank_of(0), " (the first stage's) has ", batch,
           " rows, rank ", r, " has ", all[r].rows, "; ranks without the first stage may pass an empty input");
  again = false;
  for (int r = 0; r < ranks_.size_; ++r) again = again || all[r].planned_for != batch;
  if (!again) same_plans(all);
  return batch;
}

TANDEM_INLINE void Ranks::Call::agree_plan(std::size_t m, const TaskOrders &orders) {
  if (!ranks_.active()) return;
  struct Record {
    std::uint64_t m, orders;
    Text error;
  } mine{m, error_ ? 0 : fingerprint(orders), {}};
  mine.error.set(error_);
  const auto all = ranks_.gather(mine, name_);
  rethrow_first(all);
  same_plans(all);
}
#endif

} // namespace tandem::detail
