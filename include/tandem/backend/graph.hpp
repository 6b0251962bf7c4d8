// SPDX-License-Identifier: Apache-2.0
// backend::Graph: work captured once on one or more executors, launched again as a whole.
#pragma once

namespace tandem::backend {

// Made by Executor::capture. A launch runs every operation, copy and dependency that was issued
// during the capture, with the arguments and pointers they had then, after all work issued
// before the launch on the captured executors; work issued on them afterwards runs after it.
class Graph {
public:
  virtual ~Graph() = default;
  virtual void launch() = 0;
};

} // namespace tandem::backend
