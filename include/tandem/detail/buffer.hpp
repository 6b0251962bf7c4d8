// SPDX-License-Identifier: Apache-2.0
// detail::Buffer: an owning array in one executor's memory.
#pragma once

#include <cstddef>
#include <utility>

#include "tandem/backend/executor.hpp"

namespace tandem::detail {

template <class T> class Buffer {
public:
  Buffer() = default;
  Buffer(backend::Executor &ex, std::size_t n) : ex_(&ex), size_(n) {
    data_ = static_cast<T *>(ex.allocate(n * sizeof(T)));
  }
  Buffer(Buffer &&o) noexcept
      : ex_(std::exchange(o.ex_, nullptr)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Buffer &operator=(Buffer &&o) noexcept {
    if (this != &o) {
      reset();
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
    if (ex_ && data_) ex_->deallocate(data_);
    data_ = nullptr;
  }
  backend::Executor *ex_ = nullptr;
  T *data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace tandem::detail
