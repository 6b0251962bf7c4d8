// SPDX-License-Identifier: Apache-2.0
// backend::Transport: the seam between a network and the other processes of its program (ranks),
// and backend::Channel, one network's line to them. <tandem/distributed.hpp> implements both over
// MPI; another implementation (NCCL, say) plugs in here without touching the pipeline.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "tandem/backend/executor.hpp"

namespace tandem::backend {

// Which way a boundary crossing goes: a stage's output activations forward, or the gradient of
// its input backward.
enum class Direction : std::uint8_t { forward, backward };

// One micro-batch crossing one boundary (the one between stages `boundary` and `boundary + 1`)
// between this rank and `peer`.
struct Crossing {
  std::size_t boundary = 0, micro_batch = 0;
  Direction direction = Direction::forward;
  int peer = 0;
};

// One network's messages, apart from every other network's. Every wait on another rank ends with
// an Error after the channel's timeout, naming what never came; after such a timeout the ranks
// have lost step with each other and every later call throws at once.
class Channel {
public:
  virtual ~Channel() = default;

  // Names the call (train_step, forward) that the following messages belong to, for errors.
  virtual void begin_step(const char *call) = 0;
  // Starts receiving `c` into `dst`, ahead of the work that needs it (issuing thread). `dst`
  // stays untouched until finish_step().
  virtual void post_receive(void *dst, std::size_t bytes, const Crossing &c) = 0;
  // Issues on `ex`, after the work issued there so far: sends `bytes` at `src`, which stays
  // untouched until finish_step().
  virtual void send(Executor &ex, const void *src, std::size_t bytes, const Crossing &c) = 0;
  // Issues on `ex`: waits until the posted receive of `c` has arrived; the work issued after it
  // may read it. Fails the executor's work with Error after the timeout.
  virtual void arrive(Executor &ex, const Crossing &c) = 0;
  // Once the step's work has completed (issuing thread): waits for its sends; after a failure,
  // drops what is still pending instead.
  virtual void finish_step(bool failed) = 0;
  // Whether a wait timed out, which leaves the ranks out of step for good: every later
  // begin_step() throws. lose() says so for another rank's timeout.
  virtual bool lost() const = 0;
  virtual void lose() = 0;
  // The step's first wait that timed out (the other waits of the step then give up at once and
  // fail too, in whatever order); null if none did.
  virtual std::exception_ptr first_timeout() const = 0;

  // Every rank's `bytes` bytes at `mine`, in rank order (issuing thread, every rank together).
  virtual std::vector<std::byte> all_gather(const void *mine, std::size_t bytes, const char *call) = 0;
  // `bytes` at `data` on rank `root` to every rank's `data`.
  virtual void broadcast(void *data, std::size_t bytes, int root, const char *call) = 0;
};

// The program's processes: this one's rank among `size`, and channels between them.
class Transport {
public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The host each rank runs on, by rank.
  virtual const std::vector<std::string> &hosts() const = 0;
  // Whether a channel may be used from any thread (executors' workers included); otherwise only
  // from the issuing thread, and the host backend then runs steps there.
  virtual bool any_thread() const = 0;
  // A channel for one network, opened by every rank together, in the same order on each.
  virtual std::unique_ptr<Channel> open_channel(std::chrono::duration<double> timeout) = 0;
};

} // namespace tandem::backend
