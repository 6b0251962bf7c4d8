// SPDX-License-Identifier: Apache-2.0
// Tensor<T>: a (rows, cols) row-major array that lives on one logical device.
#pragma once

#include <cstddef>
#include <limits>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/context.hpp"
#include "tandem/detail/buffer.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/device.hpp"
#include "tandem/error.hpp"

namespace tandem {

// Device-resident data for a hot loop: a pipeline reads an input Tensor on its first stage's
// device and labels on its last stage's in place, where host data would be copied in every step.
// A tensor keeps its device alive: it may outlive its Context. Destroying it completes a training
// step in flight that reads it first.
template <class T> class Tensor {
public:
  Tensor(Context &ctx, std::size_t device, std::size_t rows, std::size_t cols)
      : buffer_(ctx.executor(device), checked_size(rows, cols, device)), device_(device), rows_(rows), cols_(cols) {}
  template <std::size_t N>
  Tensor(Context &ctx, Device<N>, std::size_t rows, std::size_t cols) : Tensor(ctx, N, rows, cols) {}
  // Allocates and fills from the host.
  Tensor(Context &ctx, std::size_t device, std::size_t rows, std::size_t cols, std::span<const T> values)
      : Tensor(ctx, device, rows, cols) {
    copy_from(values);
  }
  template <std::size_t N>
  Tensor(Context &ctx, Device<N>, std::size_t rows, std::size_t cols, std::span<const T> values)
      : Tensor(ctx, N, rows, cols, values) {}

  Tensor(Tensor &&) noexcept = default;
  Tensor &operator=(Tensor &&other) noexcept {
    if (this != &other) {
      release();
      buffer_ = std::move(other.buffer_);
      device_ = other.device_, rows_ = other.rows_, cols_ = other.cols_;
    }
    return *this;
  }
  ~Tensor() { release(); }

  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t size() const { return rows_ * cols_; }
  // The logical device (Device<N>'s N) and its executor.
  std::size_t device() const { return device_; }
  backend::Executor &executor() const { return *buffer_.executor(); }
  // Device memory: valid on executor() only.
  T *data() { return buffer_.data(); }
  const T *data() const { return buffer_.data(); }

  // Wait for the work issued on the device so far, then read or write. A network's training step
  // in flight there (train_step_async) is completed first: a failure of that step is for its
  // PendingLoss, not for this call.
  std::vector<T> to_host() const {
    const std::lock_guard turn(executor().issue_mutex());
    executor().complete_steps_in_flight();
    auto out = detail::host_vector<T>(size(), "Tensor::to_host");
    executor().download(out.data(), data(), out.size() * sizeof(T));
    executor().synchronize();
    return out;
  }
  void copy_from(std::span<const T> values) {
    const std::lock_guard turn(executor().issue_mutex());
    if (values.size() != size())
      detail::fail("Tensor (", rows_, " x ", cols_, " on Device<", device_, ">): copy_from got ", values.size(),
                   " values");
    executor().complete_steps_in_flight();
    executor().upload(data(), values.data(), values.size() * sizeof(T));
    executor().synchronize();
  }

private:
  // A training step in flight may still read this memory (train_step_async): it completes first.
  void release() noexcept {
    if (!buffer_.data()) return;
    const std::lock_guard turn(executor().issue_mutex());
    executor().complete_steps_in_flight();
  }
  static std::size_t checked_size(std::size_t rows, std::size_t cols, std::size_t device) {
    if (cols != 0 && rows > std::numeric_limits<std::size_t>::max() / sizeof(T) / cols)
      detail::fail("Tensor (", rows, " x ", cols, " on Device<", device, ">): ", rows, " x ", cols, " values of ",
                   sizeof(T), " bytes overflow a std::size_t");
    return rows * cols;
  }

  detail::Buffer<T> buffer_;
  std::size_t device_, rows_, cols_;
};

} // namespace tandem
