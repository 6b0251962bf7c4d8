// SPDX-License-Identifier: Apache-2.0
// host::Event: the host backend's event, a counter that workers raise and wait on.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "tandem/backend/event.hpp"
#include "tandem/backend/host/spin.hpp"

namespace tandem::backend::host {

// `issued` counts record() calls on the issuing thread; a worker raises `completed` when it
// reaches a record. wait() takes the latest ticket at issue time, which gives cudaEvent_t's
// semantics: the wait is for the most recent record issued before it.
class Event final : public backend::Event {
public:
  std::uint64_t issue() { return ++issued_; }
  std::uint64_t latest() const { return issued_; }

  void complete(std::uint64_t ticket) {
    {
      std::lock_guard lock(mutex_);
      when_ = std::chrono::steady_clock::now();
      if (ticket > completed_.load(std::memory_order_relaxed)) completed_.store(ticket, std::memory_order_release);
    }
    changed_.notify_all();
  }

  void wait_for(std::uint64_t ticket) {
    if (spin_until([&] { return completed_.load(std::memory_order_acquire) >= ticket; })) return;
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return completed_.load(std::memory_order_relaxed) >= ticket; });
  }

  // When the latest record was reached (valid once it has completed).
  std::chrono::steady_clock::time_point when() {
    std::lock_guard lock(mutex_);
    return when_;
  }

private:
  std::uint64_t issued_ = 0; // touched by the issuing thread only
  std::mutex mutex_;
  std::condition_variable changed_;
  std::atomic<std::uint64_t> completed_{0}; // raised under mutex_, read without it by spinners
  std::chrono::steady_clock::time_point when_{};
};

} // namespace tandem::backend::host
