// SPDX-License-Identifier: Apache-2.0
// distributed::Environment: MPI for the program's lifetime (RAII), and tandem's transport over it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "tandem/backend/transport.hpp"
#include "tandem/detail/mpi_launch.hpp"
#include "tandem/distributed/mpi_transport.hpp"

namespace tandem::distributed {

namespace detail {

// MPI for the whole process, shared by every Environment: the first makes it (initialising MPI
// unless the program did), the last to go finalises it (if initialised here). MPI can be
// initialised once per process, so an Environment made after that is an Error.
inline std::shared_ptr<Session> shared_session(int *argc, char ***argv) {
  static std::mutex mutex;
  static std::weak_ptr<Session> current;
  const std::lock_guard lock(mutex);
  if (auto s = current.lock()) return s;
  if (finalized())
    tandem::detail::fail("distributed::Environment: MPI was finalised already (by an earlier Environment or by "
                         "the program), and MPI starts once per process: make one Environment for the whole program");
  auto s = std::make_shared<Session>(argc, argv);
  current = s;
  return s;
}

// An exception that leaves main under MPI: its message, once, on one line naming the rank, then
// MPI_Abort ends every rank of the job (instead of each rank's abort and backtrace, and ranks that
// wait for the dead one until their timeout).
inline void terminate_job() {
  static std::once_flag said;
  std::call_once(said, [] {
    int rank = -1, initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised && !finalized()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::string what = "std::terminate without an exception";
    if (const std::exception_ptr e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception &x) {
        what = std::string("uncaught exception: ") + x.what();
      } catch (...) {
        what = "uncaught exception that is not a std::exception";
      }
    }
    std::fprintf(stderr, "tandem: rank %d: %s; ending the MPI job (catch it in main to end otherwise)\n", rank,
                 what.c_str());
    std::fflush(stderr);
    if (initialised && !finalized()) MPI_Abort(MPI_COMM_WORLD, 1);
  });
  std::abort();
}

} // namespace detail

// Made first in main, on every rank: `Environment env(argc, argv); tandem::Context ctx(env);`.
// Initialises MPI with MPI_THREAD_MULTIPLE (the host backend's worker threads send and wait on
// their own), unless the program initialised MPI itself: then it adopts it, and a lower thread
// level makes the host backend run every step on the calling thread, the only one that then
// calls MPI. Environments share MPI: it is finalised only if initialised here, once every
// Environment and every Context made from one are gone. While one exists, an exception that
// escapes main prints its message once and ends the whole job (std::set_terminate, MPI_Abort).
class Environment {
public:
  Environment(int &argc, char **&argv) : Environment(&argc, &argv) {}
  Environment() : Environment(nullptr, nullptr) {}
  Environment(const Environment &) = delete;
  Environment &operator=(const Environment &) = delete;

  int rank() const { return transport_->rank(); }
  int size() const { return transport_->size(); }
  // tandem's own communicator (a duplicate of MPI_COMM_WORLD); each network duplicates it again.
  MPI_Comm communicator() const { return transport_->communicator(); }
  // The thread level MPI provides (MPI_THREAD_MULTIPLE when initialised here).
  int thread_level() const { return transport_->thread_level(); }
  // Whether tandem initialised MPI (and will finalise it).
  bool initialised_mpi() const { return transport_->initialised_mpi(); }
  const std::string &host_name() const { return transport_->hosts().at(static_cast<std::size_t>(rank())); }

  std::shared_ptr<backend::Transport> transport() const { return transport_; }

private:
  Environment(int *argc, char ***argv)
      : transport_(std::make_shared<MpiTransport>(detail::shared_session(argc, argv), MPI_COMM_WORLD)) {
    tandem::detail::mpi_environment_made().store(true);
    std::set_terminate(detail::terminate_job);
  }

  std::shared_ptr<MpiTransport> transport_;
};

} // namespace tandem::distributed
