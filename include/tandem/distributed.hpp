// SPDX-License-Identifier: Apache-2.0
// Stages across processes over MPI (docs/distributed.md): distributed::Environment, and with it
// Context(env). Needs MPI (CMake target tandem::distributed); <tandem/tandem.hpp> does not include it.
#pragma once

#include "tandem/distributed/environment.hpp"
#include "tandem/distributed/mpi_transport.hpp"
#include "tandem/distributed/trace.hpp"
