// SPDX-License-Identifier: Apache-2.0
// detail::Buffer: an owning array in one executor's memory.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>

#include "tandem/backend/executor.hpp"
#include "tandem/detail/host_memory.hpp"

namespace tandem::detail {

// Keeps its executor alive (where a shared_ptr owns it, as a Context's executors are owned), so
// that the memory can be given back whenever the buffer goes, whatever went before it.
// Allocating and freeing take the executor's turn (issue_mutex): a GPU's allocator and its
// bookkeeping are shared with whoever issues there.
template <class T> class Buffer {
public:
  Buffer() = default;
  Buffer(backend::Executor &ex, std::size_t n) : owner_(ex.weak_from_this().lock()), ex_(&ex), size_(n) {
    const std::size_t bytes = checked_product(n, sizeof(T), "a device buffer's bytes");
    const std::lock_guard turn(ex.issue_mutex());
    ex.charge(bytes);
    try {
      data_ = static_cast<T *>(ex.allocate(bytes));
    } catch (...) {
      ex.refund(bytes);
      throw;
    }
  }
  Buffer(Buffer &&o) noexcept
      : owner_(std::move(o.owner_)), ex_(std::exchange(o.ex_, nullptr)), data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  Buffer &operator=(Buffer &&o) noexcept {
    if (this != &o) {
      reset();
      owner_ = std::move(o.owner_);
      ex_ = std::exchange(o.ex_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~Buffer() { reset(); }

  T *data() const { return data_; }
  std::size_t size() const { return size_; }
  backend::Executor *executor() const { return ex_; }

private:
  void reset() noexcept {
    if (ex_) {
      const std::lock_guard turn(ex_->issue_mutex());
      if (data_) ex_->deallocate(data_);
      ex_->refund(size_ * sizeof(T));
    }
    ex_ = nullptr;
    data_ = nullptr;
    size_ = 0;
  }
  std::shared_ptr<backend::Executor> owner_; // null for an executor no shared_ptr owns
  backend::Executor *ex_ = nullptr;
  T *data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace tandem::detail
