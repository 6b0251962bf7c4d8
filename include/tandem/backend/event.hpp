// SPDX-License-Identifier: Apache-2.0
// backend::Event: a point in one executor's stream that others can wait for.
#pragma once

namespace tandem::backend {

// Made by an Executor and used with the executor that made it. As with cudaEvent_t, wait()
// waits for the most recent record() issued before it, so work must be issued in an order that
// respects its dependencies (the pipeline's scheduler does so).
class Event {
public:
  virtual ~Event() = default;
};

} // namespace tandem::backend
