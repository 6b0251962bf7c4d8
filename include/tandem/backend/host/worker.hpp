// SPDX-License-Identifier: Apache-2.0
// host::Worker: the host backend's stream, a thread that runs queued tasks in order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "tandem/backend/host/spin.hpp"
#include "tandem/detail/compiled.hpp"

namespace tandem::backend::host {

// One worker per logical device gives each stage its own core, so micro-batches of different
// stages really run at once. A task that throws does not stop the queue (later tasks may record
// events other workers wait for); the first failure is kept and rethrown by drain().
class Worker {
public:
  Worker() : thread_([this] { loop(); }) {}
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;
  ~Worker() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_one();
    thread_.join();
  }

  TANDEM_INLINE void push(std::function<void()> task);

  // Waits until every task pushed so far has run; a failure stays kept for drain().
  TANDEM_INLINE void wait_idle();

  // Whether every task pushed so far has run.
  bool idle() const { return pending_.load(std::memory_order_acquire) == 0; }

  // Waits until every task pushed so far has run, then rethrows the first failure, if any.
  TANDEM_INLINE void drain();

private:
  TANDEM_INLINE void loop();

  std::mutex mutex_;
  std::condition_variable ready_, idle_;
  std::deque<std::function<void()>> queue_;
  // Atomic so that spinners can watch them without the lock; changed under it, so that a sleeper
  // woken by the condition variable sees them too.
  std::atomic<std::size_t> pending_{0}, queued_{0};
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
  std::thread thread_; // last: starts after the members it uses exist
};

// Defined here in a header-only program; in one linked with tandem::compiled, in src/compiled.cpp.
#if TANDEM_INLINE_DEFINITIONS
TANDEM_INLINE void Worker::push(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(task));
    pending_.fetch_add(1, std::memory_order_relaxed);
    queued_.fetch_add(1, std::memory_order_release);
  }
  ready_.notify_one();
}

TANDEM_INLINE void Worker::wait_idle() {
  spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return pending_ == 0; });
}

TANDEM_INLINE void Worker::drain() {
  wait_idle();
  std::lock_guard lock(mutex_);
  if (error_) {
    auto error = std::exchange(error_, nullptr);
    std::rethrow_exception(error);
  }
}

TANDEM_INLINE void Worker::loop() {
  for (;;) {
    std::function<void()> task;
    {
      spin_until([this] { return queued_.load(std::memory_order_acquire) > 0 || stopping_.load(); });
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return; // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    try {
      task();
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    {
      std::lock_guard lock(mutex_);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) idle_.notify_all();
    }
  }
}
#endif

} // namespace tandem::backend::host
