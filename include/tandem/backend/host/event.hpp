// SPDX-License-Identifier: Apache-2.0
// host::Event: the host backend's event, a counter that workers raise and wait on.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "tandem/backend/event.hpp"

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
      completed_ = std::max(completed_, ticket);
      when_ = std::chrono::steady_clock::now();
    }
    changed_.notify_all();
  }

  void wait_for(std::uint64_t ticket) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return completed_ >= ticket; });
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
  std::uint64_t completed_ = 0;
  std::chrono::steady_clock::time_point when_{};
};

} // namespace tandem::backend::host
