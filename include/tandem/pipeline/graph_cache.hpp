// SPDX-License-Identifier: Apache-2.0
// detail::GraphCache: training steps captured as graphs (ContextOptions::graphs) and replayed while
// the steps that come stay like them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/graph.hpp"
#include "tandem/pipeline/plan.hpp"

namespace tandem::detail {

template <class T> class GraphCache {
public:
  // What makes two training steps the same work: a captured one is replayed only for its key.
  struct Key {
    std::size_t batch = 0, m = 0;
    TaskOrders orders;
    const T *x = nullptr; // device inputs are read in place (null: host inputs, copied in)
    const void *y = nullptr;
    std::uint64_t optimizer = 0; // its replay_id (0: no optimizer)
    const void *loss = nullptr;  // loss_tag<Loss>()
    std::size_t generation = 0;  // of the buffers the graph points into
    friend bool operator==(const Key &, const Key &) = default;
  };
  struct Captured {
    Key key;
    std::unique_ptr<backend::Graph> graph;
    std::size_t bytes = 0; // crossing stage boundaries per launch
  };
  // A few shapes (a full batch and an epoch's last, shorter one) stay captured at once.
  static constexpr std::size_t max_graphs = 4;
  template <class Loss> static const void *loss_tag() {
    static const char tag = 0;
    return &tag;
  }

  // Whether capturing is still worth trying (it failed never), on executors that can.
  bool usable() const { return can_capture_ && error_.empty(); }
  void set_capturable(bool can) { can_capture_ = can; }
  std::size_t generation() const { return generation_; }

  // The step with this key: captured already, or to be captured now (null: issue it), which a
  // step is when the step before it had the same key. Remembers the key for the next step.
  Captured *find(std::optional<Key> key, bool &capture_now) {
    capture_now = false;
    Captured *found = nullptr;
    if (key) {
      for (auto &g : graphs_)
        if (g.key == *key) found = &g;
      capture_now = !found && last_key_ == key;
    }
    last_key_ = std::move(key);
    return found;
  }

  // Captures `issue_work` on `executors` (the first one leads) as the last find()'s key's graph.
  // On failure (an operation that cannot be captured) remembers why, and returns null: the step
  // is then issued, and no later step is captured.
  template <class Issue> Captured *capture(std::span<backend::Executor *const> executors, Issue &&issue_work) {
    std::unique_ptr<backend::Graph> graph;
    try {
      graph = executors.front()->capture(executors, issue_work);
    } catch (const std::exception &e) {
      error_ = e.what();
      if (error_.empty()) error_ = "capture failed";
      return nullptr;
    }
    if (graphs_.size() == max_graphs) graphs_.erase(graphs_.begin());
    graphs_.push_back({*last_key_, std::move(graph), 0});
    return &graphs_.back();
  }

  // Buffers a graph points into were replaced: no graph may run again.
  void forget() {
    graphs_.clear();
    last_key_.reset();
    ++generation_;
  }

  void count_replay() { ++replayed_; }
  std::size_t replayed() const { return replayed_; }
  const std::string &error() const { return error_; }

private:
  bool can_capture_ = false;
  std::vector<Captured> graphs_;
  std::optional<Key> last_key_; // the last step's: one seen twice in a row is captured
  std::size_t generation_ = 0;
  std::size_t replayed_ = 0;
  std::string error_;
};

} // namespace tandem::detail
