// SPDX-License-Identifier: Apache-2.0
// Parameter: a named handle to one parameter tensor (and its gradient) on its device.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/error.hpp"
#include "tandem/optim/optimizer.hpp"

namespace tandem {

// Named as PyTorch names nn.Sequential members: "stage{i}.{j}.weight", j the layer's index in
// its stage. Reading or writing waits for the work issued on the device so far; a network's
// training step in flight (train_step_async) is completed first, so that its failure reaches its
// PendingLoss rather than this call.
template <class T> class Parameter {
public:
  Parameter(std::string name, backend::Executor &ex, T *data, T *grad, std::size_t rows, std::size_t cols,
            std::weak_ptr<optim::StepsInFlight> in_flight = {})
      : name_(std::move(name)), ex_(&ex), data_(data), grad_(grad), rows_(rows), cols_(cols),
        in_flight_(std::move(in_flight)) {}

  const std::string &name() const { return name_; }
  std::size_t size() const { return rows_ * cols_; }
  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  // Device memory, for code that works beside the pipeline on the same executor.
  T *data() const { return data_; }
  T *grad() const { return grad_; }
  backend::Executor &executor() const { return *ex_; }

  std::vector<T> to_host() const { return read(data_); }
  // The gradient of the last forward/backward (the sum over its micro-batches).
  std::vector<T> grad_to_host() const { return read(grad_); }

  void copy_from(std::span<const T> values) const {
    if (values.size() != size())
      detail::fail("Parameter '", name_, "' (", rows_, " x ", cols_, " = ", size(), " values on ", ex_->name(),
                   "): copy_from got ", values.size(), " values");
    optim::complete_step_in_flight(in_flight_);
    ex_->upload(data_, values.data(), values.size() * sizeof(T));
    ex_->synchronize();
  }

private:
  std::vector<T> read(const T *src) const {
    optim::complete_step_in_flight(in_flight_);
    std::vector<T> out(size());
    ex_->download(out.data(), src, out.size() * sizeof(T));
    ex_->synchronize();
    return out;
  }

  std::string name_;
  backend::Executor *ex_;
  T *data_, *grad_;
  std::size_t rows_, cols_;
  std::weak_ptr<optim::StepsInFlight> in_flight_; // the network's; expired once it is gone
};

} // namespace tandem
