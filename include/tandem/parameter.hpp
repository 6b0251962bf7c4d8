// SPDX-License-Identifier: Apache-2.0
// Parameter: a named handle to one parameter tensor (and its gradient) on its device.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"

namespace tandem {

// Named as PyTorch names nn.Sequential members: "stage{i}.{j}.weight", j the layer's index in
// its stage. Reading or writing waits for the work issued on the device so far; the training
// steps in flight there (train_step_async) are completed first, so that a failure of theirs
// reaches their PendingLoss rather than this call. A handle may be copied and may outlive its
// network: its memory went with the network, and reading or writing it then throws Error. Across
// processes (Context(env)) a parameter lives on its stage's rank only; the other ranks hold its
// name and shape.
template <class T> class Parameter {
public:
  // `network`: expires when the network that owns the memory is gone (null: never checked).
  Parameter(std::string name, backend::Executor &ex, T *data, T *grad, std::size_t rows, std::size_t cols, int rank = 0,
            std::weak_ptr<const void> network = {})
      : name_(std::move(name)), owner_(ex.weak_from_this().lock()), ex_(&ex), data_(data), grad_(grad), rows_(rows),
        cols_(cols), rank_(rank), network_(std::move(network)), tracked_(!network_.expired()) {}
  // Another rank's parameter.
  Parameter(std::string name, std::size_t rows, std::size_t cols, int rank)
      : name_(std::move(name)), ex_(nullptr), data_(nullptr), grad_(nullptr), rows_(rows), cols_(cols), rank_(rank),
        tracked_(false) {}

  const std::string &name() const { return name_; }
  std::size_t size() const { return rows_ * cols_; }
  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  // Whether this process holds it, and the rank that does.
  bool is_local() const { return ex_ != nullptr; }
  int rank() const { return rank_; }
  // Device memory, for code that works beside the pipeline on the same executor (null on
  // another rank).
  T *data() const { return data_; }
  T *grad() const { return grad_; }
  backend::Executor &executor() const {
    require_local("executor()");
    return *ex_;
  }

  std::vector<T> to_host() const { return read(data_, "to_host"); }
  // The gradient of the last forward/backward (the sum over its micro-batches).
  std::vector<T> grad_to_host() const { return read(grad_, "grad_to_host"); }

  void copy_from(std::span<const T> values) const {
    require_local("copy_from");
    const std::lock_guard turn(ex_->issue_mutex());
    require_network("copy_from");
    if (values.size() != size())
      detail::fail("Parameter '", name_, "' (", rows_, " x ", cols_, " = ", size(), " values on ", ex_->name(),
                   "): copy_from got ", values.size(), " values");
    ex_->complete_steps_in_flight();
    ex_->upload(data_, values.data(), values.size() * sizeof(T));
    ex_->synchronize();
  }

private:
  void require_local(const char *call) const {
    if (!ex_)
      detail::fail("Parameter '", name_, "': ", call, " on another rank's parameter; it lives on rank ", rank_,
                   ", where its stage runs (Parameter::is_local() says where to ask)");
  }
  std::vector<T> read(const T *src, const char *call) const {
    require_local(call);
    const std::lock_guard turn(ex_->issue_mutex());
    require_network(call);
    ex_->complete_steps_in_flight();
    auto out = detail::host_vector<T>(size(), "Parameter::to_host");
    ex_->download(out.data(), src, out.size() * sizeof(T));
    ex_->synchronize();
    return out;
  }
  void require_network(const char *call) const {
    if (tracked_ && network_.expired())
      detail::fail("Parameter '", name_, "': ", call, " after its network was destroyed (the parameter's memory ",
                   "went with it)");
  }

  std::string name_;
  std::shared_ptr<backend::Executor> owner_; // keeps ex_ alive (null for an executor no shared_ptr owns)
  backend::Executor *ex_;
  T *data_, *grad_;
  std::size_t rows_, cols_;
  int rank_;
  std::weak_ptr<const void> network_;
  bool tracked_;
};

} // namespace tandem
