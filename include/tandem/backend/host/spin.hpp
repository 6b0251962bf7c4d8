// SPDX-License-Identifier: Apache-2.0
// host::spin_until: a short busy wait before a thread goes to sleep.
#pragma once

#include <chrono>
#include <thread>

namespace tandem::backend::host {

// Waking a sleeping thread costs tens of microseconds, as much as a small stage's whole forward
// pass: a worker that spins briefly catches the next task (or event) of a busy pipeline without
// that cost. Yielding inside the loop keeps a spinner from starving a thread that has work when
// there are more threads than cores. Returns whether `ready()` became true within `budget`.
template <class Ready>
bool spin_until(Ready &&ready, std::chrono::microseconds budget = std::chrono::microseconds(50)) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 0;; ++i) {
    if (ready()) return true;
    if ((i & 63) == 63) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::yield();
    }
  }
}

} // namespace tandem::backend::host
