// SPDX-License-Identifier: Apache-2.0
// cuda::PinnedBuffer: page-locked host memory, for copies that must not block the issuing thread.
#pragma once

#include <cstddef>
#include <utility>

#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/error.hpp"

namespace tandem::backend::cuda {

// cudaMemcpyAsync to or from pageable memory may wait for the stream (a download always does);
// through page-locked memory it stays asynchronous. Portable: any GPU of the process may use it.
class PinnedBuffer {
public:
  PinnedBuffer() = default;
  PinnedBuffer(std::size_t bytes, const Site &site) : size_(bytes) {
    if (!bytes) return;
    const cudaError_t status = cudaHostAlloc(&data_, bytes, cudaHostAllocPortable);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      detail::fail("out of pinned host memory: cudaHostAlloc of ", bytes, " bytes for ", site,
                   " failed: ", cudaGetErrorName(status));
    }
  }
  PinnedBuffer(PinnedBuffer &&o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PinnedBuffer &operator=(PinnedBuffer &&o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() { release(); }

  std::byte *data() const { return static_cast<std::byte *>(data_); }
  std::size_t size() const { return size_; }

private:
  // The owner makes sure that no issued copy still uses the memory.
  void release() noexcept {
    if (data_) (void)cudaFreeHost(data_);
    data_ = nullptr;
    size_ = 0;
  }
  void *data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace tandem::backend::cuda
