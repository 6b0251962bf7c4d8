// SPDX-License-Identifier: Apache-2.0
// Whether this process was started by mpiexec as one of several, and whether it made a
// distributed::Environment: a program that mpiexec starts N times but that never makes one runs N
// independent copies, which a single-process Context says once.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace tandem::detail {

// Set by the first distributed::Environment (a function's static: one flag for the whole program).
inline std::atomic<bool> &mpi_environment_made() {
  static std::atomic<bool> made{false};
  return made;
}

// The rank count mpiexec gave this process (Open MPI's, MPICH's and PMIx's variables), or 0.
inline long launched_ranks() {
  for (const char *name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char *value = std::getenv(name);
    if (!value || !*value) continue;
    char *end = nullptr;
    const long n = std::strtol(value, &end, 10);
    if (*end == '\0' && n > 0) return n;
  }
  return 0;
}

// Warns once when mpiexec started this process as one of several and no Environment was made.
inline void warn_if_alone_under_mpiexec() {
  if (mpi_environment_made().load()) return;
  const long ranks = launched_ranks();
  if (ranks < 2) return;
  static const bool once = [ranks] {
    std::fprintf(stderr,
                 "tandem: warning: mpiexec started this program as %ld processes, but this one made no "
                 "tandem::distributed::Environment: it runs alone, as %ld independent copies of the program. "
                 "Make `tandem::distributed::Environment env(argc, argv); tandem::Context ctx(env);` first in "
                 "main (<tandem/distributed.hpp>)\n",
                 ranks, ranks);
    return true;
  }();
  (void)once;
}

} // namespace tandem::detail
