// SPDX-License-Identifier: Apache-2.0
// cuda::Link: a boundary copy between two GPUs (or two logical devices on one), on its own stream.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>

#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/event.hpp"
#include "tandem/backend/cuda/pinned.hpp"
#include "tandem/backend/event.hpp"
#include "tandem/backend/link.hpp"
#include "tandem/error.hpp"

namespace tandem::backend::cuda {

// How a link moves bytes: chosen once, when the pipeline is built.
enum class CopyPath {
  same_device, // two logical devices on one GPU, copies forced: a device-to-device copy
  peer,        // peer access enabled both ways: cudaMemcpyPeerAsync, GPU to GPU
  staged,      // no peer access: through page-locked host memory, in two ordered halves
};

inline const char *to_string(CopyPath p) {
  switch (p) {
  case CopyPath::same_device: return "same-device";
  case CopyPath::peer: return "peer";
  case CopyPath::staged: return "staged through pinned host memory";
  }
  return "?";
}

// The copy stream lives on the DESTINATION device (torchgpipe's choice too). The pipeline hands
// copy() its `done` (and `begin`) as events of the destination executor, and cudaEventRecord
// needs the stream and the event on one device; waiting is free of that rule, so the copy stream
// can wait for the source's `ready` across devices. cudaMemcpyPeerAsync may run on a stream of
// either device. Only the staged path needs a second stream, on the source, for the
// device-to-host half; its own events order the two halves.
class Link final : public backend::Link {
public:
  Link(const Site &src, const Site &dst)
      : Link(src, dst,
             src.device == dst.device       ? CopyPath::same_device
             : enable_peer_access(src, dst) ? CopyPath::peer
                                            : CopyPath::staged) {}
  // A chosen path: tests run the peer and staged paths between two streams of one GPU with it.
  Link(const Site &src, const Site &dst, CopyPath path) : src_(src), dst_(dst), path_(path) {
    {
      DeviceGuard guard(dst.device, dst);
      check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", dst);
    }
    if (path_ == CopyPath::staged) {
      try {
        DeviceGuard guard(src.device, src);
        check(cudaStreamCreateWithFlags(&src_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", src);
        staged_ = std::make_unique<Event>(src);
        consumed_ = std::make_unique<Event>(dst);
      } catch (...) {
        release();
        throw;
      }
    }
  }
  Link(const Link &) = delete;
  Link &operator=(const Link &) = delete;
  ~Link() override { release(); }

  CopyPath path() const { return path_; }

  void copy(const void *src, void *dst, std::size_t bytes, backend::Event &ready, backend::Event &done,
            backend::Event *begin = nullptr) override {
    auto &ready_event = static_cast<Event &>(ready);
    auto &done_event = destination_event(done, "done");
    Event *begin_event = begin ? &destination_event(*begin, "begin") : nullptr;
    DeviceGuard guard(dst_.device, dst_);
    ready_event.wait_on(stream_, dst_);
    if (begin_event) begin_event->record(stream_);
    if (bytes) {
      switch (path_) {
      case CopyPath::same_device:
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync (boundary)", dst_);
        break;
      case CopyPath::peer:
        check(cudaMemcpyPeerAsync(dst, dst_.device, src, src_.device, bytes, stream_), "cudaMemcpyPeerAsync", dst_);
        break;
      case CopyPath::staged: copy_staged(src, dst, bytes, ready_event); break;
      }
    }
    done_event.record(stream_);
  }

private:
  // Peer access is a property of the pair of devices, enabled once per direction for the
  // process; a second link over the same pair finds it enabled, which is no error.
  static bool enable_peer_access(const Site &a, const Site &b) {
    int ab = 0, ba = 0;
    check(cudaDeviceCanAccessPeer(&ab, a.device, b.device), "cudaDeviceCanAccessPeer", a);
    check(cudaDeviceCanAccessPeer(&ba, b.device, a.device), "cudaDeviceCanAccessPeer", b);
    return ab && ba && enable_one_way(a, b) && enable_one_way(b, a);
  }
  static bool enable_one_way(const Site &from, const Site &to) {
    DeviceGuard guard(from.device, from);
    const cudaError_t status = cudaDeviceEnablePeerAccess(to.device, 0);
    (void)cudaGetLastError(); // a refusal falls back to staging: clear it
    return status == cudaSuccess || status == cudaErrorPeerAccessAlreadyEnabled;
  }

  Event &destination_event(backend::Event &event, const char *which) const {
    auto &e = static_cast<Event &>(event);
    if (e.site().device != dst_.device)
      detail::fail("Link::copy from ", src_, " to ", dst_, ": the `", which, "` event belongs to ", e.site(),
                   "; it must be an event of the destination executor");
    return e;
  }

  // Device to pinned host memory on the source's stream, then host to device on ours. One
  // staging buffer serves every copy of this link: a copy's first half waits until the previous
  // copy's second half has read it (`consumed_`).
  void copy_staged(const void *src, void *dst, std::size_t bytes, Event &ready) {
    if (bytes > pinned_.size()) {
      // Issued copies may still use the old buffer. Growth happens only when a larger shape
      // first appears, never in a steady-state step.
      check(cudaStreamSynchronize(src_stream_), "cudaStreamSynchronize (staging)", src_);
      check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (staging)", dst_);
      pinned_ = PinnedBuffer(bytes, src_);
    }
    {
      DeviceGuard guard(src_.device, src_);
      ready.wait_on(src_stream_, src_);
      consumed_->wait_on(src_stream_, src_);
      check(cudaMemcpyAsync(pinned_.data(), src, bytes, cudaMemcpyDeviceToHost, src_stream_),
            "cudaMemcpyAsync (boundary, to pinned host memory)", src_);
      staged_->record(src_stream_);
    }
    staged_->wait_on(stream_, dst_);
    check(cudaMemcpyAsync(dst, pinned_.data(), bytes, cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync (boundary, from pinned host memory)", dst_);
    consumed_->record(stream_);
  }

  // Waits for the copies in flight: the staging buffer and the caller's buffers outlive them.
  void release() noexcept {
    for (cudaStream_t *s : {&src_stream_, &stream_})
      if (*s) {
        (void)cudaStreamSynchronize(*s);
        (void)cudaStreamDestroy(*s);
        *s = nullptr;
      }
  }

  Site src_, dst_;
  CopyPath path_ = CopyPath::same_device;
  cudaStream_t stream_ = nullptr;     // on the destination device
  cudaStream_t src_stream_ = nullptr; // staged only: on the source device
  std::unique_ptr<Event> staged_;     // staged only: the first half is done (source device)
  std::unique_ptr<Event> consumed_;   // staged only: the second half has read the buffer (destination)
  PinnedBuffer pinned_;
};

} // namespace tandem::backend::cuda
