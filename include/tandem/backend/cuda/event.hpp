// SPDX-License-Identifier: Apache-2.0
// cuda::Event: the CUDA backend's event, a cudaEvent_t on one GPU.
#pragma once

#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/event.hpp"

namespace tandem::backend::cuda {

// Timing stays enabled (no cudaEventDisableTiming): Executor::elapsed_us reads the time between
// two events with cudaEventElapsedTime, for the timeline.
class Event final : public backend::Event {
public:
  explicit Event(const Site &site) : site_(site) {
    DeviceGuard guard(site.device, site);
    check(cudaEventCreate(&event_), "cudaEventCreate", site);
  }
  Event(const Event &) = delete;
  Event &operator=(const Event &) = delete;
  ~Event() override { (void)cudaEventDestroy(event_); }

  cudaEvent_t get() const { return event_; }
  const Site &site() const { return site_; }
  bool recorded() const { return recorded_; }

  // cudaEventRecord needs the stream on the event's device; the caller makes sure of that.
  void record(cudaStream_t stream) {
    check(cudaEventRecord(event_, stream), "cudaEventRecord", site_);
    recorded_ = true;
  }

  // Makes `stream` (of any device: cudaStreamWaitEvent may cross devices) wait for the latest
  // record. An event never recorded is no wait at all, as on the host backend.
  void wait_on(cudaStream_t stream, const Site &waiter) const {
    if (recorded_) check(cudaStreamWaitEvent(stream, event_, 0), "cudaStreamWaitEvent", waiter);
  }

private:
  Site site_;
  cudaEvent_t event_ = nullptr;
  bool recorded_ = false; // touched by the issuing thread only
};

} // namespace tandem::backend::cuda
