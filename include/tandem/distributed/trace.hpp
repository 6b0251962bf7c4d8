// SPDX-License-Identifier: Apache-2.0
// distributed::write_chrome_trace: every rank's timeline in one Chrome trace, a process row per rank.
#pragma once

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/distributed/environment.hpp"
#include "tandem/distributed/mpi_transport.hpp"
#include "tandem/error.hpp"
#include "tandem/timeline.hpp"

namespace tandem::distributed {

namespace detail {

inline void escape_json(std::ostream &os, std::string_view s) {
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') os << '\\' << ch;
    else if (static_cast<unsigned char>(ch) >= 0x20) os << ch;
  }
}

// One rank's spans as trace events of process `rank + 1`, named "rank R on host".
inline std::string trace_events(const Timeline &tl, int rank, const std::string &host) {
  std::ostringstream os;
  os.precision(15);
  const int pid = rank + 1;
  os << R"({"name":"process_name","ph":"M","pid":)" << pid << R"(,"tid":0,"args":{"name":"rank )" << rank << " on ";
  escape_json(os, host);
  os << R"("}},)" << '\n'
     << R"({"name":"process_sort_index","ph":"M","pid":)" << pid << R"(,"tid":0,"args":{"sort_index":)" << rank << "}}";
  for (std::size_t t = 0; t < tl.tracks().size(); ++t) {
    os << ",\n"
       << R"({"name":"thread_name","ph":"M","pid":)" << pid << R"(,"tid":)" << t << R"(,"args":{"name":")";
    escape_json(os, tl.tracks()[t]);
    os << R"("}})";
  }
  for (const TimelineSpan &s : tl.spans()) {
    os << ",\n{\"name\":\"" << to_string(s.kind);
    if (s.micro_batch >= 0) os << ' ' << s.micro_batch;
    os << R"(","cat":")" << to_string(s.kind) << R"(","ph":"X","ts":)" << s.start_us << R"(,"dur":)" << s.duration_us
       << R"(,"pid":)" << pid << R"(,"tid":)" << s.track << R"(,"args":{"stage":)" << s.stage << R"(,"micro_batch":)"
       << s.micro_batch << "}}";
  }
  return os.str();
}

} // namespace detail

// Every rank calls it (a collective on the environment's communicator); rank 0 writes the file,
// with one process row per rank and, in it, the tracks of that rank's devices. Each rank's times
// count from its first traced step, which every rank begins right after the call's exchange of
// checks: the rows line up to within that exchange (microseconds on one machine). Throws on rank 0
// if the file cannot be written.
inline void write_chrome_trace(const Environment &env, const Timeline &tl, const std::string &path) {
  const std::string mine = detail::trace_events(tl, env.rank(), env.host_name());
  const int bytes = static_cast<int>(mine.size());
  std::vector<int> sizes(static_cast<std::size_t>(env.size())), offsets(sizes.size());
  MPI_Comm comm = env.communicator();
  detail::check(MPI_Gather(&bytes, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm), "MPI_Gather");
  std::string all;
  if (env.rank() == 0) {
    std::size_t total = 0;
    for (std::size_t r = 0; r < sizes.size(); ++r) offsets[r] = static_cast<int>(total), total += sizes[r];
    all.resize(total);
  }
  detail::check(MPI_Gatherv(mine.data(), bytes, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR, 0, comm),
                "MPI_Gatherv");
  if (env.rank() != 0) return;
  std::ofstream out(path, std::ios::binary);
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  for (std::size_t r = 0; r < sizes.size(); ++r)
    out << (r ? ",\n" : "") << std::string_view(all).substr(static_cast<std::size_t>(offsets[r]), sizes[r]);
  out << "\n]}\n";
  out.close();
  if (!out) tandem::detail::fail("write_chrome_trace: could not write the trace to '", path, "'");
}

} // namespace tandem::distributed
