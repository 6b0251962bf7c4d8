// SPDX-License-Identifier: Apache-2.0
// backend::Link: one direction of one stage boundary.
#pragma once

#include <cstddef>

#include "tandem/backend/event.hpp"

namespace tandem::backend {

// Moves a boundary's activations (forward) or gradients (backward) from the source executor's
// memory to the destination's, on its own stream, so the copy can overlap compute.
class Link {
public:
  virtual ~Link() = default;
  // Waits for `ready` (recorded on the source), copies, then records `done`, which the
  // destination waits for. `src` must stay untouched until `done` has completed. `begin`, when
  // given, is recorded on the link's stream just before the copy starts (for the timeline); it
  // must be an event of the destination executor, as `done` is.
  virtual void copy(const void *src, void *dst, std::size_t bytes, Event &ready, Event &done,
                    Event *begin = nullptr) = 0;
};

} // namespace tandem::backend
