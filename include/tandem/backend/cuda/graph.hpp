// SPDX-License-Identifier: Apache-2.0
// cuda::Graph: an instantiated CUDA graph and the streams it was captured from.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/graph.hpp"

namespace tandem::backend::cuda {

// A plain event for ordering only: no timing, so recording it is cheaper.
class OrderEvent {
public:
  explicit OrderEvent(const Site &site) : site_(site) {
    check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags", site);
  }
  OrderEvent(const OrderEvent &) = delete;
  OrderEvent &operator=(const OrderEvent &) = delete;
  OrderEvent(OrderEvent &&other) noexcept : site_(other.site_), event_(std::exchange(other.event_, nullptr)) {}
  ~OrderEvent() {
    if (event_) (void)cudaEventDestroy(event_);
  }
  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream) const { check(cudaEventRecord(event_, stream), "cudaEventRecord", site_); }
  void wait(cudaStream_t stream) const { check(cudaStreamWaitEvent(stream, event_, 0), "cudaStreamWaitEvent", site_); }

private:
  Site site_;
  cudaEvent_t event_ = nullptr;
};

// Launched on the stream the capture began on (the origin). The other captured streams are
// joined around each launch, so that the graph starts after all work issued on any of them and
// anything issued on them later starts after the graph: the same order an issued step has.
class Graph final : public backend::Graph {
public:
  Graph(cudaGraphExec_t exec, const Site &site, cudaStream_t origin, std::vector<cudaStream_t> others)
      : exec_(exec), site_(site), origin_(origin), others_(std::move(others)), done_(site) {
    for (std::size_t i = 0; i < others_.size(); ++i) before_.emplace_back(site);
  }
  Graph(const Graph &) = delete;
  Graph &operator=(const Graph &) = delete;
  ~Graph() override {
    if (!exec_) return;
    // The graph may still run: destroying it waits for nothing, so wait here.
    DeviceGuard guard(site_.device, site_);
    (void)cudaStreamSynchronize(origin_);
    (void)cudaGraphExecDestroy(exec_);
  }

  void launch() override {
    DeviceGuard guard(site_.device, site_);
    for (std::size_t i = 0; i < others_.size(); ++i) {
      before_[i].record(others_[i]);
      before_[i].wait(origin_);
    }
    check(cudaGraphLaunch(exec_, origin_), "cudaGraphLaunch", site_);
    if (others_.empty()) return;
    done_.record(origin_);
    for (const cudaStream_t other : others_) done_.wait(other);
  }

private:
  cudaGraphExec_t exec_ = nullptr;
  Site site_;
  cudaStream_t origin_ = nullptr;
  std::vector<cudaStream_t> others_;
  std::vector<OrderEvent> before_;
  OrderEvent done_;
};

} // namespace tandem::backend::cuda
