// SPDX-License-Identifier: Apache-2.0
// Timeline: when each forward, backward, loss, copy and optimizer task ran, as a Chrome trace.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tandem/backend/event.hpp"
#include "tandem/backend/executor.hpp"
#include "tandem/detail/compiled.hpp"
#include "tandem/error.hpp"

namespace tandem {

// What a timed task did. `network`: a whole-network step of one micro-batch (op::SmallNetwork:
// every stage's forward and backward, the loss, and the updates where they are fused into it).
// Across processes, `send` hands a boundary to MPI and `receive` waits until another rank's has
// arrived: its length is the time the stage stood idle for that message.
// backward_input and backward_weights: the two halves of a split backward (schedule::Task).
enum class TaskKind {
  forward,
  backward,
  loss,
  copy,
  optimizer,
  network,
  send,
  receive,
  backward_input,
  backward_weights
};

inline const char *to_string(TaskKind k) {
  switch (k) {
  case TaskKind::forward: return "forward";
  case TaskKind::backward: return "backward";
  case TaskKind::loss: return "loss";
  case TaskKind::copy: return "copy";
  case TaskKind::optimizer: return "optimizer";
  case TaskKind::network: return "network";
  case TaskKind::send: return "send";
  case TaskKind::receive: return "receive";
  case TaskKind::backward_input: return "backward_input";
  case TaskKind::backward_weights: return "backward_weights";
  }
  return "task";
}

// One task on one track (a logical device's stream, or a link's copy stream).
struct TimelineSpan {
  TaskKind kind;
  std::size_t track;          // index into Timeline::tracks()
  std::size_t stage;          // the pipeline stage that issued it
  std::ptrdiff_t micro_batch; // -1 for per-step work (the optimizer)
  double start_us;            // since the first recorded step began (or the last clear())
  double duration_us;
  double end_us() const { return start_us + duration_us; }
};

// Records the start and end of tasks with events on the executors that run them, and writes them
// as a Chrome trace (chrome://tracing, https://ui.perfetto.dev).
//
// Clocks. Executor::elapsed_us compares two events of one executor only, so each executor gets an
// epoch event per step, recorded while it is idle, and the host clock read just before it is that
// executor's anchor: a task's start is anchor + elapsed_us(epoch, begin). Within one track times
// are exact (on its executor's clock). Across tracks they agree up to the delay between reading
// the host clock and the idle executor reaching its epoch: a worker's wake-up on the host (a few
// to tens of microseconds), a launch on a GPU (a few microseconds; GPU timers also drift from the
// host clock over long runs). Compare tracks for overlap at the scale of tasks, not of microseconds.
//
// Recording protocol, for code that issues work (the pipeline does this when the context's
// timeline is enabled), all on the issuing thread: begin_step() with every executor the step
// uses, open()/close() around each task's issue, end_step() once everything issued has completed.
class Timeline {
public:
  using Mark = std::size_t;

  explicit Timeline(bool enabled = false) : enabled_(enabled) {}
  Timeline(const Timeline &) = delete;
  Timeline &operator=(const Timeline &) = delete;

  bool enabled() const { return enabled_; }
  void enable(bool on = true) { enabled_ = on; }

  // Track names: "Device<0>", "Device<0> -> Device<1>".
  const std::vector<std::string> &tracks() const { return tracks_; }
  const std::vector<TimelineSpan> &spans() const { return spans_; }
  // Forgets the spans and restarts the clock (tracks keep their numbers).
  void clear() {
    spans_.clear();
    has_origin_ = false;
  }

  // The track named `name`, made on first use.
  std::size_t track(std::string_view name) {
    for (std::size_t i = 0; i < tracks_.size(); ++i)
      if (tracks_[i] == name) return i;
    tracks_.emplace_back(name);
    return tracks_.size() - 1;
  }

  // Anchors each executor's clock to the host clock. Waits for the executors to be idle first (a
  // step starts with them idle, so this costs one round trip each), which makes the anchor good.
  TANDEM_INLINE void begin_step(std::span<backend::Executor *const> executors);

  // A task about to be issued on `ex`: records its begin event there.
  Mark open(backend::Executor &ex, std::size_t track, TaskKind kind, std::size_t stage, std::ptrdiff_t micro_batch) {
    const Mark m = prepare(ex, track, kind, stage, micro_batch);
    ex.record(*pending_[m].begin);
    return m;
  }
  // The task is issued: records its end event on the same executor.
  void close(Mark m) {
    Pending &p = pending_.at(m);
    p.end = &take_event(*p.ex);
    p.ex->record(*p.end);
  }

  // For a task that records its own events (Link::copy): like open(), but leaves recording
  // begin(m) to the task; close(m, end) names the event the task records when done. Both must
  // belong to `ex`.
  TANDEM_INLINE Mark prepare(backend::Executor &ex, std::size_t track, TaskKind kind, std::size_t stage,
                             std::ptrdiff_t micro_batch);
  backend::Event &begin(Mark m) { return *pending_.at(m).begin; }
  void close(Mark m, backend::Event &end) { pending_.at(m).end = &end; }

  // Reads the clocks of every task since begin_step(). Everything issued must have completed.
  TANDEM_INLINE void end_step();

  // The spans as Chrome's trace event format: one process, one thread per track, an "X"
  // (complete) event per task; times in microseconds.
  TANDEM_INLINE std::string chrome_trace() const;

  TANDEM_INLINE void write_chrome_trace(const std::string &path) const;

private:
  struct Clock {
    backend::Executor *ex = nullptr;
    std::unique_ptr<backend::Event> epoch;
    double anchor_us = 0;
    bool anchored = false;
    // Events are made once and reused step after step: on a GPU making one is not free.
    std::vector<std::unique_ptr<backend::Event>> events;
    std::size_t used = 0;
  };
  struct Pending {
    backend::Executor *ex;
    backend::Event *begin, *end;
    TimelineSpan span;
  };

  TANDEM_INLINE Clock &clock_of(backend::Executor &ex);
  TANDEM_INLINE backend::Event &take_event(backend::Executor &ex);
  static void escape(std::ostream &os, std::string_view s) {
    for (char ch : s) {
      if (ch == '"' || ch == '\\') os << '\\' << ch;
      else if (static_cast<unsigned char>(ch) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", ch);
        os << buf;
      } else os << ch;
    }
  }

  bool enabled_;
  std::vector<std::string> tracks_;
  std::vector<TimelineSpan> spans_;
  std::vector<std::unique_ptr<Clock>> clocks_; // stable addresses
  std::vector<Pending> pending_;
  std::chrono::steady_clock::time_point origin_{};
  bool has_origin_ = false;
};

// Defined here in a header-only program; in one linked with tandem::compiled, in src/compiled.cpp.
#if TANDEM_INLINE_DEFINITIONS
TANDEM_INLINE void Timeline::begin_step(std::span<backend::Executor *const> executors) {
  pending_.clear();
  for (auto &c : clocks_) c->used = 0;
  for (backend::Executor *ex : executors) ex->synchronize();
  for (backend::Executor *ex : executors) {
    Clock &c = clock_of(*ex);
    if (c.anchored) continue; // listed twice: stages sharing a logical device
    const auto now = std::chrono::steady_clock::now();
    if (!has_origin_) origin_ = now, has_origin_ = true;
    c.anchor_us = std::chrono::duration<double, std::micro>(now - origin_).count();
    if (!c.epoch) c.epoch = ex->make_event();
    ex->record(*c.epoch);
    c.anchored = true;
  }
}

TANDEM_INLINE void Timeline::end_step() {
  for (const Pending &p : pending_) {
    if (!p.end) continue; // opened but never closed: an issue that failed half-way
    Clock &c = clock_of(*p.ex);
    TimelineSpan s = p.span;
    s.start_us = c.anchor_us + p.ex->elapsed_us(*c.epoch, *p.begin);
    s.duration_us = p.ex->elapsed_us(*p.begin, *p.end);
    spans_.push_back(s);
  }
  pending_.clear();
  for (auto &c : clocks_) c->anchored = false;
}

TANDEM_INLINE Timeline::Mark Timeline::prepare(backend::Executor &ex, std::size_t track, TaskKind kind,
                                               std::size_t stage, std::ptrdiff_t micro_batch) {
  Clock &c = clock_of(ex);
  if (!c.anchored) detail::fail("timeline: a task on ", ex.name(), ", which begin_step() was not given");
  pending_.push_back({&ex, &take_event(ex), nullptr, {kind, track, stage, micro_batch, 0, 0}});
  return pending_.size() - 1;
}

TANDEM_INLINE std::string Timeline::chrome_trace() const {
  std::ostringstream os;
  os.precision(15);
  os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  os << R"({"name":"process_name","ph":"M","pid":1,"tid":0,"args":{"name":"tandem"}})";
  for (std::size_t t = 0; t < tracks_.size(); ++t) {
    os << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":" << t << ",\"args\":{\"name\":\"";
    escape(os, tracks_[t]);
    os << "\"}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":" << t
       << ",\"args\":{\"sort_index\":" << t << "}}";
  }
  for (const TimelineSpan &s : spans_) {
    os << ",\n{\"name\":\"" << to_string(s.kind);
    if (s.micro_batch >= 0) os << ' ' << s.micro_batch;
    os << "\",\"cat\":\"" << to_string(s.kind) << "\",\"ph\":\"X\",\"ts\":" << s.start_us
       << ",\"dur\":" << s.duration_us << ",\"pid\":1,\"tid\":" << s.track << ",\"args\":{\"stage\":" << s.stage
       << ",\"micro_batch\":" << s.micro_batch << "}}";
  }
  os << "\n]}\n";
  return os.str();
}

TANDEM_INLINE void Timeline::write_chrome_trace(const std::string &path) const {
  std::ofstream out(path, std::ios::binary);
  out << chrome_trace();
  out.close();
  if (!out) detail::fail("timeline: could not write the trace to '", path, "'");
}

TANDEM_INLINE Timeline::Clock &Timeline::clock_of(backend::Executor &ex) {
  for (auto &c : clocks_)
    if (c->ex == &ex) return *c;
  clocks_.push_back(std::make_unique<Clock>());
  clocks_.back()->ex = &ex;
  return *clocks_.back();
}

TANDEM_INLINE backend::Event &Timeline::take_event(backend::Executor &ex) {
  Clock &c = clock_of(ex);
  if (c.used == c.events.size()) c.events.push_back(ex.make_event());
  return *c.events[c.used++];
}
#endif

} // namespace tandem
