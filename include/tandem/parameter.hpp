// SPDX-License-Identifier: Apache-2.0
// Parameter: a named handle to one parameter tensor (and its gradient) on its device.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/error.hpp"

namespace tandem {

// Named as PyTorch names nn.Sequential members: "stage{i}.{j}.weight", j the layer's index in
// its stage. Reading or writing waits for the work issued on the device so far; the training
// steps in flight there (train_step_async) are completed first, so that a failure of theirs
// reaches their PendingLoss rather than this call. Across processes (Context(env)) a parameter
// lives on its stage's rank only; the other ranks hold its name and shape.
template <class T> class Parameter {
public:
  Parameter(std::string name, backend::Executor &ex, T *data, T *grad, std::size_t rows, std::size_t cols, int rank = 0)
      : name_(std::move(name)), ex_(&ex), data_(data), grad_(grad), rows_(rows), cols_(cols), rank_(rank) {}
  // Another rank's parameter.
  Parameter(std::string name, std::size_t rows, std::size_t cols, int rank)
      : name_(std::move(name)), ex_(nullptr), data_(nullptr), grad_(nullptr), rows_(rows), cols_(cols), rank_(rank) {}

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
    ex_->complete_steps_in_flight();
    std::vector<T> out(size());
    ex_->download(out.data(), src, out.size() * sizeof(T));
    ex_->synchronize();
    return out;
  }

  std::string name_;
  backend::Executor *ex_;
  T *data_, *grad_;
  std::size_t rows_, cols_;
  int rank_;
};

} // namespace tandem
