// SPDX-License-Identifier: Apache-2.0
// host::Link: a boundary copy between two host workers.
#pragma once

#include <cstddef>
#include <cstring>

#include "tandem/backend/event.hpp"
#include "tandem/backend/executor.hpp"
#include "tandem/backend/link.hpp"

namespace tandem::backend::host {

// The copy runs on the destination's worker, after it has waited for the source. A separate
// copy thread would only add a hand-over per transfer: host memcpy of a boundary is cheap next to
// the wake-up of another thread, and the destination could not start before the copy anyway.
class Link final : public backend::Link {
public:
  explicit Link(backend::Executor &dst) : dst_(dst) {}

  void copy(const void *src, void *dst, std::size_t bytes, backend::Event &ready, backend::Event &done,
            backend::Event *begin = nullptr) override {
    dst_.wait(ready);
    if (begin) dst_.record(*begin);
    dst_.submit([=] { std::memcpy(dst, src, bytes); });
    dst_.record(done);
  }

private:
  backend::Executor &dst_;
};

} // namespace tandem::backend::host
