// SPDX-License-Identifier: Apache-2.0
// distributed::Environment: MPI for the program's lifetime (RAII), and tandem's transport over it.
#pragma once

#include <memory>
#include <string>

#include "tandem/backend/transport.hpp"
#include "tandem/distributed/mpi_transport.hpp"

namespace tandem::distributed {

// Made first in main, on every rank: `Environment env(argc, argv); tandem::Context ctx(env);`.
// Initialises MPI with MPI_THREAD_MULTIPLE (the host backend's worker threads send and wait on
// their own), unless the program initialised MPI itself: then it adopts it, and a lower thread
// level makes the host backend run every step on the calling thread, the only one that then
// calls MPI. MPI is finalised only if initialised here, once the Environment and every Context
// made from it are gone.
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
  // Whether this Environment initialised MPI (and will finalise it).
  bool initialised_mpi() const { return transport_->initialised_mpi(); }
  const std::string &host_name() const { return transport_->hosts().at(static_cast<std::size_t>(rank())); }

  std::shared_ptr<backend::Transport> transport() const { return transport_; }

private:
  Environment(int *argc, char ***argv)
      : transport_(std::make_shared<MpiTransport>(std::make_shared<detail::Session>(argc, argv), MPI_COMM_WORLD)) {}

  std::shared_ptr<MpiTransport> transport_;
};

} // namespace tandem::distributed
