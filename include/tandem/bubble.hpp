// SPDX-License-Identifier: Apache-2.0
// The bubble of a recorded step: how much of its time each device stood idle, read from the
// timeline rather than taken from a schedule's formula.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/error.hpp"
#include "tandem/timeline.hpp"

namespace tandem {

// Whether a span is work on its device. Copies are not: they sit on the link's track, and on a GPU
// they run on a stream of their own beside the compute, so a device waiting for a copy is idle
// for the schedule (on the host a copy is a memcpy on the destination's worker, microseconds
// next to a stage's milliseconds: counted idle there too). A `receive` is a rank waiting for
// another rank's message: idle. Everything else on a device's track is work, whatever its kind
// (forward, backward and its parts, loss, optimizer, a whole-network step, an MPI send).
inline bool busy_on_device(TaskKind kind) { return kind != TaskKind::copy && kind != TaskKind::receive; }

// One device in one step.
struct DeviceBubble {
  std::string device; // its track's name: "Device<0>"
  std::size_t track = 0;
  double first_us = 0; // the start of its first busy task
  double last_us = 0;  // the end of its last busy task
  double busy_us = 0;  // the time covered by its busy tasks, each instant once
  double span_us() const { return last_us - first_us; }
  // The fraction of [first_us, last_us] the device did nothing; 0 for a window of no length.
  double idle_fraction() const { return span_us() > 0 ? 1.0 - busy_us / span_us() : 0.0; }
};

// Every device's idle fraction in one step, and the mean and maximum over devices. The first
// stage's device starts the step and (with its backwards and its update) ends it, so its window is
// the whole step and `max` is the number to set beside a schedule's formula (n-1)/(m+n-1): a later
// stage's window leaves out the fill before its first task and the drain after its last.
struct Bubble {
  std::vector<DeviceBubble> devices; // in track order; devices with no busy task are left out
  double mean = 0, max = 0;
};

// The bubble of the spans of one step. A device is a track that holds anything but copies (links'
// tracks hold only copies); several stages on one device share its track, and intervals that
// overlap there (a worker's tasks do not, a GPU's streams may) count once. Spans of several steps
// would count the time between the steps as idle: clear() the timeline before the step to measure.
inline Bubble measure_bubble(std::span<const TimelineSpan> spans, std::span<const std::string> tracks) {
  std::vector<std::vector<std::pair<double, double>>> busy(tracks.size());
  std::vector<bool> device(tracks.size(), false);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const TimelineSpan &s = spans[i];
    if (s.track >= tracks.size())
      detail::fail("measure_bubble: span ", i, " (", to_string(s.kind), ") is on track ", s.track, ", but there are ",
                   tracks.size(), " tracks");
    if (!(s.duration_us >= 0) || !std::isfinite(s.start_us) || !std::isfinite(s.duration_us))
      detail::fail("measure_bubble: span ", i, " (", to_string(s.kind), " on ", tracks[s.track], ") starts at ",
                   s.start_us, " us and lasts ", s.duration_us, " us; a duration must be finite and not negative");
    if (s.kind != TaskKind::copy) device[s.track] = true;
    if (busy_on_device(s.kind)) busy[s.track].emplace_back(s.start_us, s.end_us());
  }
  Bubble out;
  for (std::size_t t = 0; t < tracks.size(); ++t) {
    auto &iv = busy[t];
    if (!device[t] || iv.empty()) continue;
    std::sort(iv.begin(), iv.end());
    DeviceBubble d{tracks[t], t, iv.front().first, iv.front().second, 0};
    double open = iv.front().first, close = iv.front().second; // the union's current piece
    for (const auto &[a, b] : iv) {
      if (a > close) {
        d.busy_us += close - open;
        open = a;
      }
      close = std::max(close, b);
    }
    d.busy_us += close - open;
    d.last_us = close;
    out.devices.push_back(std::move(d));
  }
  for (const DeviceBubble &d : out.devices) {
    out.mean += d.idle_fraction() / double(out.devices.size());
    out.max = std::max(out.max, d.idle_fraction());
  }
  return out;
}

// The bubble of what `tl` recorded: one step, if it was cleared before that step.
inline Bubble measure_bubble(const Timeline &tl) { return measure_bubble(tl.spans(), tl.tracks()); }

} // namespace tandem
