// SPDX-License-Identifier: Apache-2.0
// A timeline as text: one row per device, time flowing right, a letter and a micro-batch number
// where each task starts, '.' where the device is idle. For docs, logs and terminals, where a
// Chrome trace cannot be opened.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "tandem/error.hpp"
#include "tandem/timeline.hpp"

namespace tandem {

// The letter a task kind gets in a picture: F forward, B backward, L loss, O optimizer, N a
// whole-network step, S send, R receive, C copy, and for a split backward B (the input gradient,
// as the zero-bubble paper draws it) and W; another kind, its name's first letter.
inline char picture_letter(TaskKind kind) {
  switch (kind) {
  case TaskKind::forward: return 'F';
  case TaskKind::backward: return 'B';
  case TaskKind::backward_input: return 'B';
  case TaskKind::backward_weights: return 'W';
  case TaskKind::loss: return 'L';
  case TaskKind::optimizer: return 'O';
  case TaskKind::network: return 'N';
  case TaskKind::send: return 'S';
  case TaskKind::receive: return 'R';
  case TaskKind::copy: return 'C';
  default: return static_cast<char>(std::toupper(static_cast<unsigned char>(to_string(kind)[0])));
  }
}

// The rows of every track that holds more than copies (the devices; links' tracks are left out),
// in track order, each `columns` characters wide after its name. Time runs from the earliest start
// to the latest end; a column stands for that time over `columns`. A task covers the columns from
// its start to its end, rounded: its label (letter, then the micro-batch for per-micro-batch work)
// and '-' to its end, cut to its width. A task shorter than a column gets one column if that one is
// still idle, so a short loss between a forward and a backward may not show.
inline std::string timeline_picture(std::span<const TimelineSpan> spans, std::span<const std::string> tracks,
                                    std::size_t columns = 96) {
  if (columns == 0) detail::fail("timeline_picture: columns = 0; a picture needs at least one column");
  std::vector<bool> device(tracks.size(), false);
  double from = 0, to = 0;
  bool any = false;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const TimelineSpan &s = spans[i];
    if (s.track >= tracks.size())
      detail::fail("timeline_picture: span ", i, " is on track ", s.track, ", but there are ", tracks.size(),
                   " tracks");
    if (s.kind == TaskKind::copy) continue;
    device[s.track] = true;
    from = any ? std::min(from, s.start_us) : s.start_us;
    to = any ? std::max(to, s.end_us()) : s.end_us();
    any = true;
  }
  std::size_t name_width = 0;
  for (std::size_t t = 0; t < tracks.size(); ++t)
    if (device[t]) name_width = std::max(name_width, tracks[t].size());
  const double per_column = to > from ? (to - from) / double(columns) : 1.0;
  const auto column = [&](double us) {
    const double c = std::round((us - from) / per_column);
    return static_cast<std::size_t>(std::clamp(c, 0.0, double(columns)));
  };

  std::vector<const TimelineSpan *> order;
  for (const TimelineSpan &s : spans) order.push_back(&s);
  std::stable_sort(order.begin(), order.end(), [](auto *a, auto *b) { return a->start_us < b->start_us; });

  std::string out;
  for (std::size_t t = 0; t < tracks.size(); ++t) {
    if (!device[t]) continue;
    std::string row(columns, '.');
    for (const TimelineSpan *s : order) {
      if (s->track != t || s->kind == TaskKind::copy) continue;
      std::size_t a = column(s->start_us), b = column(s->end_us());
      if (a == b) {
        if (a == columns) a = columns - 1; // a task at the very end: the last column
        if (row[a] != '.') continue;
        b = a + 1;
      }
      std::string label(1, picture_letter(s->kind));
      if (s->micro_batch >= 0) label += std::to_string(s->micro_batch);
      for (std::size_t c = a; c < b; ++c) row[c] = c - a < label.size() ? label[c - a] : '-';
    }
    out += tracks[t];
    out.append(name_width - tracks[t].size() + 1, ' ');
    out += row;
    out += '\n';
  }
  return out;
}

inline std::string timeline_picture(const Timeline &tl, std::size_t columns = 96) {
  return timeline_picture(tl.spans(), tl.tracks(), columns);
}

} // namespace tandem
