// SPDX-License-Identifier: Apache-2.0
// distributed::MpiTransport and MpiChannel: backend::Transport over MPI. Every message is
// non-blocking point-to-point on a communicator of the network's own (duplicated from tandem's),
// and every wait polls MPI_Test against a deadline, so that a rank that stops calling makes the
// others throw instead of hang.
#pragma once

// MPI's C API only: the C++ bindings (removed in MPI-3) would bring warnings and nothing tandem uses.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/transport.hpp"
#include "tandem/error.hpp"

namespace tandem::distributed {

namespace detail {

// Throws Error for an MPI call that did not succeed (tandem's communicators return errors).
inline void check(int rc, const char *call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  tandem::detail::fail("MPI: ", call, " failed: ", std::string(text, static_cast<std::size_t>(length)));
}

inline bool finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

// MPI itself: initialised here unless the program did so first, finalised when the last holder
// (the Environment, a transport, a channel) lets go, and only if it was initialised here.
class Session {
public:
  Session(int *argc, char ***argv) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised) {
      MPI_Query_thread(&provided_);
    } else {
      // The host backend runs stages on worker threads, which send and wait themselves.
      detail::check(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided_), "MPI_Init_thread");
      owned_ = true;
    }
  }
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;
  ~Session() {
    if (owned_ && !finalized()) MPI_Finalize();
  }
  int thread_level() const { return provided_; }
  bool owned() const { return owned_; }

private:
  int provided_ = MPI_THREAD_SINGLE;
  bool owned_ = false;
};

// A communicator of our own, with errors returned rather than fatal; freed while MPI still runs.
class Communicator {
public:
  Communicator(std::shared_ptr<Session> session, MPI_Comm comm) : session_(std::move(session)), comm_(comm) {
    detail::check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }
  Communicator(Communicator &&other) noexcept
      : session_(std::move(other.session_)), comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  Communicator(const Communicator &) = delete;
  Communicator &operator=(const Communicator &) = delete;
  ~Communicator() {
    if (comm_ != MPI_COMM_NULL && !finalized()) MPI_Comm_free(&comm_);
  }
  MPI_Comm get() const { return comm_; }

private:
  std::shared_ptr<Session> session_;
  MPI_Comm comm_;
};

// Polls `done()` until it says yes or the deadline passes: yields at first (a message between
// processes on one machine takes microseconds), then sleeps a little longer each time, so that
// ranks sharing cores leave them to the ranks that compute.
template <class Done> bool poll_until(std::chrono::steady_clock::time_point deadline, Done &&done) {
  for (unsigned polls = 0;; ++polls) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return done();
    if (polls < 2000) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(std::min(20u + (polls - 2000) / 4, 500u)));
  }
}

// Tests each request on its own, so that those done become MPI_REQUEST_NULL (MPI_Testall leaves
// them all active until all are done, and could not say which never came). True when all are done.
inline bool test_each(std::vector<MPI_Request> &requests) {
  bool all = true;
  for (MPI_Request &r : requests) {
    if (r == MPI_REQUEST_NULL) continue;
    int flag = 0;
    check(MPI_Test(&r, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    all = all && flag;
  }
  return all;
}

// Drives MPI's progress engine while messages are in flight. MPI moves the body of a large
// message (above the eager limit: the rendezvous protocol; between machines, most messages) only
// inside MPI calls, on the sender's side as well as the receiver's; a sender that goes straight
// into its next micro-batch's forward would otherwise hold the receiver up until its next MPI call,
// which serialises the pipeline. While any channel of the transport holds it, this thread calls
// MPI_Iprobe on a communicator that carries no messages (it runs the progress engine and takes
// nothing) every `interval`; otherwise it sleeps. It needs MPI_THREAD_MULTIPLE.
class Progress {
public:
  Progress(Communicator comm, std::chrono::microseconds interval) : comm_(std::move(comm)), interval_(interval) {}
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  ~Progress() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // A channel has messages in flight until the matching release().
  void hold() {
    {
      std::lock_guard lock(mutex_);
      if (holders_++ == 0 && !thread_.joinable()) thread_ = std::thread([this] { loop(); });
    }
    wake_.notify_one();
  }
  void release() {
    std::lock_guard lock(mutex_);
    --holders_;
  }

private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || holders_ > 0; });
      if (stopping_) return;
      lock.unlock();
      int flag = 0;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_.get(), &flag, MPI_STATUS_IGNORE);
      std::this_thread::sleep_for(interval_);
      lock.lock();
    }
  }

  Communicator comm_;
  std::chrono::microseconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::size_t holders_ = 0;
  bool stopping_ = false;
  std::thread thread_; // started by the first hold()
};

inline const char *direction_words(backend::Direction d) {
  return d == backend::Direction::forward ? "forward activations" : "backward gradients";
}

} // namespace detail

class MpiChannel final : public backend::Channel {
public:
  MpiChannel(std::shared_ptr<detail::Session> session, MPI_Comm comm, int rank, std::chrono::duration<double> timeout,
             std::shared_ptr<detail::Progress> progress = nullptr)
      : comm_(std::move(session), comm), rank_(rank), timeout_(timeout), progress_(std::move(progress)) {
    int flag = 0;
    void *value = nullptr;
    MPI_Comm_get_attr(comm, MPI_TAG_UB, &value, &flag);
    tag_ub_ = flag ? *static_cast<int *>(value) : 32767;
  }
  ~MpiChannel() override {
    drop_pending();
    let_progress_go();
  }

  void begin_step(const char *call) override {
    require_in_step();
    call_ = call;
    step_failed_ = false;
    first_timeout_ = nullptr;
  }

  void post_receive(void *dst, std::size_t bytes, const backend::Crossing &c) override {
    need_progress();
    auto &r = receives_[key(c)];
    r.crossing = c;
    detail::check(MPI_Irecv(dst, count(bytes), MPI_BYTE, c.peer, tag(c), comm_.get(), &r.request), "MPI_Irecv");
  }

  void send(backend::Executor &ex, const void *src, std::size_t bytes, const backend::Crossing &c) override {
    const int n = count(bytes), t = tag(c);
    need_progress();
    ex.submit([this, src, n, t, peer = c.peer] {
      MPI_Request request;
      detail::check(MPI_Isend(src, n, MPI_BYTE, peer, t, comm_.get(), &request), "MPI_Isend");
      std::lock_guard lock(mutex_);
      sends_.push_back({request, peer});
    });
  }

  void arrive(backend::Executor &ex, const backend::Crossing &c) override {
    const auto it = receives_.find(key(c));
    if (it == receives_.end())
      tandem::detail::fail("MpiChannel::arrive: no receive was posted for micro-batch ", c.micro_batch, " at boundary ",
                           c.boundary);
    Receive *r = &it->second; // map nodes stay put until finish_step()
    ex.submit([this, r] {
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
      int flag = 0;
      const bool arrived = detail::poll_until(deadline, [&] {
        if (step_failed_.load(std::memory_order_relaxed)) return true;
        detail::check(MPI_Test(&r->request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        return flag != 0;
      });
      if (arrived && flag) return;
      const auto &c = r->crossing;
      if (arrived) // another crossing of this step failed first
        tandem::detail::fail(call_, " on rank ", rank_, ": not waiting for the ", detail::direction_words(c.direction),
                             " of micro-batch ", c.micro_batch, " from rank ", c.peer,
                             ": an earlier crossing of this step failed");
      const std::size_t from = c.direction == backend::Direction::forward ? c.boundary : c.boundary + 1;
      const std::size_t to = c.direction == backend::Direction::forward ? c.boundary + 1 : c.boundary;
      try {
        tandem::detail::fail(call_, " on rank ", rank_, ": the ", detail::direction_words(c.direction),
                             " of micro-batch ", c.micro_batch, " across boundary ", c.boundary, " (stage ", from,
                             " -> stage ", to, ") from rank ", c.peer, " never arrived (waited ", timeout_.count(),
                             " s, ContextOptions::peer_timeout); does rank ", c.peer,
                             " still call the network, with the same arguments?");
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!first_timeout_) first_timeout_ = std::current_exception();
        step_failed_ = true;
        lost_ = true;
        throw;
      }
    });
  }

  void finish_step(bool failed) override {
    if (failed || step_failed_) {
      drop_pending();
      let_progress_go();
      return;
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
    std::vector<MPI_Request> requests;
    for (const auto &s : sends_) requests.push_back(s.request);
    const bool sent = detail::poll_until(deadline, [&] { return detail::test_each(requests); });
    for (std::size_t i = 0; i < requests.size(); ++i) sends_[i].request = requests[i];
    let_progress_go();
    if (!sent) {
      std::string peers;
      for (const auto &s : sends_)
        if (s.request != MPI_REQUEST_NULL) peers += (peers.empty() ? "" : ", ") + std::to_string(s.peer);
      lost_ = true;
      drop_pending();
      tandem::detail::fail(call_, " on rank ", rank_, ": ", ranks_words(peers),
                           " did not take this step's boundaries within ", timeout_.count(),
                           " s (ContextOptions::peer_timeout)");
    }
    sends_.clear();
    receives_.clear();
  }

  bool lost() const override { return lost_; }
  std::exception_ptr first_timeout() const override {
    std::lock_guard lock(mutex_);
    return first_timeout_;
  }
  void lose() override { lost_ = true; }

  std::vector<std::byte> all_gather(const void *mine, std::size_t bytes, const char *call) override {
    int size = 0;
    MPI_Comm_size(comm_.get(), &size);
    std::vector<std::byte> all(bytes * static_cast<std::size_t>(size));
    std::memcpy(all.data() + bytes * static_cast<std::size_t>(rank_), mine, bytes);
    std::vector<MPI_Request> requests;
    std::vector<int> from;
    for (int r = 0; r < size; ++r) {
      if (r == rank_) continue;
      requests.emplace_back();
      from.push_back(r);
      detail::check(MPI_Irecv(all.data() + bytes * static_cast<std::size_t>(r), count(bytes), MPI_BYTE, r, control_tag,
                              comm_.get(), &requests.back()),
                    "MPI_Irecv");
    }
    const std::size_t receives = requests.size();
    for (int r = 0; r < size; ++r) {
      if (r == rank_) continue;
      requests.emplace_back();
      detail::check(MPI_Isend(mine, count(bytes), MPI_BYTE, r, control_tag, comm_.get(), &requests.back()),
                    "MPI_Isend");
    }
    wait_control(requests, receives, from, call, "reach the same call");
    return all;
  }

  void broadcast(void *data, std::size_t bytes, int root, const char *call) override {
    int size = 0;
    MPI_Comm_size(comm_.get(), &size);
    std::vector<MPI_Request> requests;
    std::vector<int> from;
    if (rank_ == root) {
      for (int r = 0; r < size; ++r) {
        if (r == root) continue;
        requests.emplace_back();
        detail::check(MPI_Isend(data, count(bytes), MPI_BYTE, r, control_tag, comm_.get(), &requests.back()),
                      "MPI_Isend");
      }
      wait_control(requests, 0, from, call, "take the result");
    } else {
      requests.emplace_back();
      from.push_back(root);
      detail::check(MPI_Irecv(data, count(bytes), MPI_BYTE, root, control_tag, comm_.get(), &requests.back()),
                    "MPI_Irecv");
      wait_control(requests, 1, from, call, "send its result");
    }
  }

private:
  static constexpr int control_tag = 0; // gathers and broadcasts; boundaries from 1 up

  struct Receive {
    MPI_Request request = MPI_REQUEST_NULL;
    backend::Crossing crossing;
  };
  struct Send {
    MPI_Request request;
    int peer;
  };
  using Key = std::tuple<std::size_t, std::size_t, int>;
  static Key key(const backend::Crossing &c) { return {c.boundary, c.micro_batch, static_cast<int>(c.direction)}; }

  static int count(std::size_t bytes) {
    if (bytes > static_cast<std::size_t>(INT_MAX))
      tandem::detail::fail("MpiChannel: a message of ", bytes, " bytes is over MPI's count limit of ", INT_MAX,
                           " bytes; use more micro-batches");
    return static_cast<int>(bytes);
  }
  // Distinct per micro-batch, direction and boundary within a step; steps never overlap, and MPI
  // keeps the order of messages with one tag between two ranks.
  int tag(const backend::Crossing &c) const {
    const std::size_t t = 1 + (c.micro_batch * 2 + static_cast<std::size_t>(c.direction)) * 4096 + c.boundary;
    if (c.boundary >= 4096 || t > static_cast<std::size_t>(tag_ub_))
      tandem::detail::fail(call_, ": micro-batch ", c.micro_batch, " at boundary ", c.boundary,
                           " needs an MPI tag above this MPI's limit of ", tag_ub_, "; use fewer micro-batches");
    return static_cast<int>(t);
  }

  static std::string ranks_words(const std::string &list) {
    return (list.find(',') == std::string::npos ? "rank " : "ranks ") + list;
  }

  void require_in_step() const {
    if (lost_)
      tandem::detail::fail("this network's ranks lost step with each other after a rank did not answer in time (see ",
                           "the first error); build the network again on every rank");
  }

  // Waits for control messages; the first `receives` requests are receives from `from`.
  void wait_control(std::vector<MPI_Request> &requests, std::size_t receives, const std::vector<int> &from,
                    const char *call, const char *what) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout_);
    if (detail::poll_until(deadline, [&] { return detail::test_each(requests); })) return;
    std::string missing;
    for (std::size_t i = 0; i < receives; ++i)
      if (requests[i] != MPI_REQUEST_NULL) missing += (missing.empty() ? "" : ", ") + std::to_string(from[i]);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (requests[i] == MPI_REQUEST_NULL) continue;
      if (i < receives) {
        MPI_Cancel(&requests[i]);
        MPI_Wait(&requests[i], MPI_STATUS_IGNORE);
      } else {
        MPI_Request_free(&requests[i]);
      }
    }
    lost_ = true;
    tandem::detail::fail(call, " on rank ", rank_, ": ", ranks_words(missing), " did not ", what, " within ",
                         timeout_.count(), " s (ContextOptions::peer_timeout); does every rank call the ",
                         "network the same way?");
  }

  // The step's messages are in flight from its first receive or send until finish_step().
  void need_progress() {
    if (progress_ && !holding_) progress_->hold(), holding_ = true;
  }
  void let_progress_go() {
    if (holding_) progress_->release(), holding_ = false;
  }

  // Cancels the receives that never came and lets go of the sends (MPI completes them or drops
  // them; their buffers outlive the channel's next step, never the network).
  void drop_pending() noexcept {
    if (detail::finalized()) return;
    for (auto &[k, r] : receives_) {
      if (r.request == MPI_REQUEST_NULL) continue;
      int flag = 0;
      MPI_Test(&r.request, &flag, MPI_STATUS_IGNORE);
      if (flag) continue;
      MPI_Cancel(&r.request);
      MPI_Wait(&r.request, MPI_STATUS_IGNORE);
    }
    for (auto &s : sends_)
      if (s.request != MPI_REQUEST_NULL) MPI_Request_free(&s.request);
    receives_.clear();
    sends_.clear();
  }

  detail::Communicator comm_;
  int rank_;
  std::chrono::duration<double> timeout_;
  int tag_ub_ = 32767;
  const char *call_ = "train_step";
  std::map<Key, Receive> receives_; // posted on the issuing thread before the step's work
  mutable std::mutex mutex_;
  std::exception_ptr first_timeout_; // under mutex_, as sends_, which grows on the workers that send
  std::vector<Send> sends_;
  std::atomic<bool> step_failed_{false};       // a crossing of this step timed out: the rest stop waiting
  std::atomic<bool> lost_{false};              // a rank did not answer: the ranks are out of step for good
  std::shared_ptr<detail::Progress> progress_; // null where MPI allows no thread of ours
  bool holding_ = false;                       // (issuing thread)
};

class MpiTransport final : public backend::Transport {
public:
  // `comm` (the program's, usually MPI_COMM_WORLD) is duplicated: tandem's messages never meet the
  // program's own.
  MpiTransport(std::shared_ptr<detail::Session> session, MPI_Comm comm) : session_(session) {
    MPI_Comm dup = MPI_COMM_NULL;
    detail::check(MPI_Comm_dup(comm, &dup), "MPI_Comm_dup");
    comm_ = std::make_unique<detail::Communicator>(std::move(session), dup);
    MPI_Comm_rank(dup, &rank_);
    MPI_Comm_size(dup, &size_);
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int length = 0;
    MPI_Get_processor_name(name, &length);
    std::vector<char> all(static_cast<std::size_t>(MPI_MAX_PROCESSOR_NAME) * static_cast<std::size_t>(size_));
    detail::check(
        MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, dup),
        "MPI_Allgather");
    for (int r = 0; r < size_; ++r)
      hosts_.emplace_back(all.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME);
    // On every rank alike (a collective), whatever each rank's thread level and setting.
    MPI_Comm quiet = MPI_COMM_NULL;
    detail::check(MPI_Comm_dup(dup, &quiet), "MPI_Comm_dup");
    detail::Communicator owned(session_, quiet);
    if (const auto interval = progress_interval(); interval.count() > 0 && any_thread())
      progress_ = std::make_shared<detail::Progress>(std::move(owned), interval);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<std::string> &hosts() const override { return hosts_; }
  bool any_thread() const override { return session_->thread_level() >= MPI_THREAD_MULTIPLE; }
  MPI_Comm communicator() const { return comm_->get(); }
  int thread_level() const { return session_->thread_level(); }
  bool initialised_mpi() const { return session_->owned(); }

  std::unique_ptr<backend::Channel> open_channel(std::chrono::duration<double> timeout) override {
    MPI_Comm dup = MPI_COMM_NULL;
    MPI_Request request;
    detail::check(MPI_Comm_idup(comm_->get(), &dup, &request), "MPI_Comm_idup");
    int flag = 0;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    if (!detail::poll_until(deadline, [&] {
          detail::check(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
          return flag != 0;
        }))
      tandem::detail::fail("building a network on rank ", rank_, ": not every rank built one within ", timeout.count(),
                           " s (ContextOptions::peer_timeout); every rank must build the same networks in the same ",
                           "order");
    return std::make_unique<MpiChannel>(session_, dup, rank_, timeout, progress_);
  }

  // How often the progress thread runs MPI's progress engine while messages are in flight:
  // TANDEM_MPI_PROGRESS_US microseconds (0: no progress thread), by default 200.
  static std::chrono::microseconds progress_interval() {
    const char *text = std::getenv("TANDEM_MPI_PROGRESS_US");
    if (!text || !*text) return std::chrono::microseconds(200);
    char *end = nullptr;
    const long us = std::strtol(text, &end, 10);
    if (*end || us < 0)
      tandem::detail::fail("TANDEM_MPI_PROGRESS_US is '", text, "', but must be a number of microseconds (0: off)");
    return std::chrono::microseconds(us);
  }

private:
  std::shared_ptr<detail::Session> session_;
  std::unique_ptr<detail::Communicator> comm_;
  int rank_ = 0, size_ = 1;
  std::vector<std::string> hosts_;
  std::shared_ptr<detail::Progress> progress_; // null without MPI_THREAD_MULTIPLE, or when turned off
};

} // namespace tandem::distributed
