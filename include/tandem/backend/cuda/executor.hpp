// SPDX-License-Identifier: Apache-2.0
// cuda::Executor: a logical device on a GPU, one compute stream with its cuBLAS handle.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tandem/backend/cuda/check.hpp"
#include "tandem/backend/cuda/event.hpp"
#include "tandem/backend/cuda/graph.hpp"
#include "tandem/backend/cuda/kernel.hpp"
#include "tandem/backend/cuda/kernels.cuh"
#include "tandem/backend/cuda/link.hpp"
#include "tandem/backend/cuda/pinned.hpp"
#include "tandem/backend/executor.hpp"
#include "tandem/error.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::cuda {

// GPUs this process can use; 0 when there is no driver, no GPU, or any other failure, so a
// program built by nvcc still runs (on the host backend) on a machine without one.
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

// What an executor adds to plain cuBLAS and kernels (ContextOptions has the same three).
struct Features {
  bool fuse_epilogues = true;    // cuBLASLt epilogues: bias and ReLU in the forward, BGRADB (Lt)
  bool overlap_gradients = true; // weight gradients on a second stream (kernels::Side)
  bool tune_products = false;    // time cuBLASLt's candidate algorithms (Lt); needs fuse_epilogues
};

// Logical devices that share a GPU share its memory but each has its own stream, so their
// stages can overlap there too. Ordering calls come from one issuing thread; a submitted task
// runs at once on that thread and its operations enqueue on the stream (no worker thread: the
// stream is the queue). With overlap_gradients, a second stream (kernels::Side) runs weight
// gradients beside input gradients; it forks from the stream and joins it within each
// operation, so every ordering call still speaks of the one stream.
class Executor final : public backend::Executor {
public:
  Executor(int device, std::size_t logical, Precision precision, Features features = {})
      : site_{device, logical}, precision_(precision), features_(features) {
    DeviceGuard guard(device, site_);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", site_);
    try {
      check(cublasCreate(&blas_), "cublasCreate", site_);
      check(cublasSetStream(blas_, stream_), "cublasSetStream", site_);
      // fp32: plain float products as PyTorch's default matmul. tf32: cuBLAS may round inputs to
      // TF32 on tensor cores (faster, about 1e-3 relative error). bf16 picks its compute type per
      // call (kernels::gemm), so the handle stays at the default.
      check(cublasSetMathMode(blas_, precision == Precision::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
            "cublasSetMathMode", site_);
      // A workspace of our own (after cublasSetStream, which resets it): products captured in a
      // graph then use memory that outlives the graph, and cuBLAS allocates nothing per capture.
      blas_workspace_ = allocate(blas_workspace_bytes);
      check(cublasSetWorkspace(blas_, blas_workspace_, blas_workspace_bytes), "cublasSetWorkspace", site_);
      if (features.fuse_epilogues) lt_ = std::make_unique<Lt>(site_, precision, features.tune_products);
      partials_ = static_cast<double *>(allocate(kernels::max_blocks * sizeof(double)));
      if (features.overlap_gradients) make_side();
    } catch (...) {
      release();
      throw;
    }
  }
  Executor(const Executor &) = delete;
  Executor &operator=(const Executor &) = delete;
  ~Executor() override { release(); }

  Kind kind() const override { return Kind::cuda; }
  std::string name() const override { return "cuda:" + std::to_string(site_.device); }
  int device() const { return site_.device; }
  std::size_t logical() const { return site_.logical; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  // Device and page-locked allocations made so far: tests check that a steady-state step adds none.
  std::size_t allocations() const {
    return allocations_ + (lt_ ? lt_->allocations() : 0) + (side_lt_ ? side_lt_->allocations() : 0);
  }
  const Features &features() const { return features_; }
  // Whether weight gradients may run on a second stream beside input gradients.
  bool overlaps_gradients() const { return side_.stream != nullptr; }
  // cuBLASLt's plans by epilogue (Lt::summary), on the stream and on the side stream.
  std::string lt_summary() const {
    if (!lt_) return "fused epilogues off";
    return lt_->summary() + (side_lt_ ? "; side stream: " + side_lt_->summary() : "");
  }
  // Products whose algorithm a timing chose (Features::tune_products), on either stream.
  std::size_t tuned_products() const { return (lt_ ? lt_->tuned() : 0) + (side_lt_ ? side_lt_->tuned() : 0); }

  void *allocate(std::size_t bytes) override {
    if (!bytes) return nullptr;
    tandem::detail::check_allocation(bytes, name());
    DeviceGuard guard(site_.device, site_);
    void *p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      std::size_t free = 0, total = 0;
      (void)cudaMemGetInfo(&free, &total);
      (void)cudaGetLastError();
      detail::fail("out of memory: allocating ", bytes, " bytes on ", site_, " failed (cudaMalloc: ", free, " of ",
                   total, " bytes free)");
    }
    check(status, "cudaMalloc", site_);
    ++allocations_;
    return p;
  }
  // cudaFree waits for the whole device; the pipeline frees only when a shape grows, never in a
  // steady-state step.
  void deallocate(void *ptr) noexcept override {
    if (!ptr) return;
    // The Lts know a ReLU mask by its address only: none they saw may outlive the memory, where
    // a later allocation could take it for one. (Freeing is rare; a mask is rewritten each step.)
    for (Lt *lt : {lt_.get(), side_lt_.get()})
      if (lt) lt->forget_masks();
    int previous = 0;
    (void)cudaGetDevice(&previous);
    (void)cudaSetDevice(site_.device);
    (void)cudaFree(ptr);
    (void)cudaSetDevice(previous);
  }

  // Both directions go through a page-locked staging area, so neither waits for the stream: a
  // download into pageable memory would block the issuing thread until the stream got there,
  // and with it the issue of every other stage. The staged bytes of a download reach `dst` in
  // synchronize(), which the contract asks for before the host side is read.
  void upload(void *dst, const void *src, std::size_t bytes) override {
    if (!bytes) return;
    refuse_in_capture("upload");
    DeviceGuard guard(site_.device, site_);
    if (bytes > max_staged) {
      // From pageable memory the runtime has read `src` when the call returns; from page-locked
      // (or managed) memory it reads it later, so wait for the copy then: the caller may refill
      // `src` at once.
      cudaPointerAttributes attributes{};
      check(cudaPointerGetAttributes(&attributes, src), "cudaPointerGetAttributes (upload)", site_);
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (upload)", site_);
      if (attributes.type != cudaMemoryTypeUnregistered)
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (upload from page-locked memory)", site_);
      return;
    }
    std::byte *staged = stage(bytes);
    std::memcpy(staged, src, bytes);
    check(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (upload)", site_);
  }
  void download(void *dst, const void *src, std::size_t bytes) override {
    if (!bytes) return;
    refuse_in_capture("download");
    DeviceGuard guard(site_.device, site_);
    if (bytes > max_staged) { // large and rare: let the runtime wait
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (download)", site_);
      return;
    }
    std::byte *staged = stage(bytes);
    check(cudaMemcpyAsync(staged, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (download)", site_);
    downloads_.push_back({dst, staged, bytes});
  }

  // As on the host backend, a failing task does not stop the issue of later work (other stages
  // may wait for events it records); the first failure is rethrown by synchronize().
  void submit(std::function<void()> task) override {
    try {
      DeviceGuard guard(site_.device, site_);
      task();
    } catch (...) {
      if (!error_) error_ = std::current_exception();
    }
  }
  std::unique_ptr<backend::Event> make_event() override { return std::make_unique<Event>(site_); }
  void record(backend::Event &event) override {
    auto &e = static_cast<Event &>(event);
    if (e.site().device != site_.device)
      detail::fail("record on ", site_, ": the event belongs to ", e.site(), " (record an executor's own events)");
    DeviceGuard guard(site_.device, site_);
    e.record(stream_);
  }
  void wait(backend::Event &event) override { static_cast<Event &>(event).wait_on(stream_, site_); }
  double elapsed_us(backend::Event &from, backend::Event &to) override {
    auto &a = static_cast<Event &>(from);
    auto &b = static_cast<Event &>(to);
    check(cudaEventSynchronize(b.get()), "cudaEventSynchronize", site_);
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a.get(), b.get()), "cudaEventElapsedTime", site_);
    return static_cast<double>(ms) * 1000.0;
  }
  // Waits for this stream only (never the whole device), then hands out the staged downloads.
  void synchronize() override {
    std::exception_ptr first = std::exchange(error_, nullptr);
    try {
      check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", site_);
      for (const auto &d : downloads_) std::memcpy(d.dst, d.staged, d.bytes);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
    downloads_.clear();
    staged_bytes_ = 0;
    retired_.clear(); // nothing issued uses them any more
    if (first) std::rethrow_exception(first);
  }
  // The side stream and the links' streams are joined to this one by the work that used them.
  bool idle() override {
    DeviceGuard guard(site_.device, site_);
    const cudaError_t status = cudaStreamQuery(stream_);
    if (status != cudaErrorNotReady) return true; // done, or failed: synchronize() says which
    (void)cudaGetLastError();                     // "not ready" is an answer, not a failure to keep
    return false;
  }
  bool shares_memory_with(std::span<backend::Executor *const> others) const override {
    for (const auto *e : others) {
      const auto *c = dynamic_cast<const Executor *>(e);
      if (!c || c->site_.device != site_.device) return false;
    }
    return true;
  }
  bool prefers_small_stages() const override { return true; }
  // cuBLASLt's layout (lt_epilogue.hpp). Qualified: unqualified, the name finds this member.
  std::size_t relu_mask_bytes(std::size_t rows, std::size_t width) const override {
    return cuda::relu_mask_bytes(rows, width);
  }
  // One GPU only: a graph can hold work of several GPUs, but nothing here has run one.
  bool can_capture(std::span<backend::Executor *const> executors) const override {
    return !executors.empty() && executors.front() == this && shares_memory_with(executors);
  }
  // Captures on this executor's stream (the origin); the other executors' streams fork from it
  // and join it again before the capture ends. ThreadLocal mode: a call of this thread that
  // cannot be captured (a synchronisation, a cudaMalloc) fails the capture instead of
  // running, and the caller issues the work normally.
  std::unique_ptr<backend::Graph> capture(std::span<backend::Executor *const> executors,
                                          const std::function<void()> &issue_work) override {
    if (!can_capture(executors)) detail::fail("capture: the executors of a graph must share ", site_, "'s GPU");
    DeviceGuard guard(site_.device, site_);
    std::vector<Executor *> all;
    std::vector<cudaStream_t> others;
    for (auto *e : executors) {
      auto *c = static_cast<Executor *>(e);
      if (std::find(all.begin(), all.end(), c) != all.end()) continue;
      all.push_back(c);
      if (c != this) others.push_back(c->stream_);
    }
    OrderEvent fork(site_);
    std::vector<OrderEvent> joins;
    for (std::size_t i = 0; i < others.size(); ++i) joins.emplace_back(site_);
    for (auto *c : all) c->capturing_ = true;
    // A task's failure waits for synchronize() on an issued step; in a capture it ends it. Every
    // executor's is taken, so that none is left for the issued step that follows a failed
    // capture to throw; the first is the cause (later ones follow from the invalidated capture).
    const auto take_failures = [&all] {
      std::exception_ptr first;
      for (auto *c : all)
        if (auto failure = std::exchange(c->error_, nullptr); failure && !first) first = failure;
      return first;
    };
    bool open = false;
    cudaGraph_t graph = nullptr;
    try {
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture", site_);
      open = true;
      fork.record(stream_);
      for (const cudaStream_t other : others) fork.wait(other);
      issue_work();
      if (auto failure = take_failures()) std::rethrow_exception(failure);
      for (std::size_t i = 0; i < others.size(); ++i) {
        joins[i].record(others[i]);
        joins[i].wait(stream_);
      }
      open = false;
      check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture", site_);
    } catch (...) {
      for (auto *c : all) c->capturing_ = false;
      if (open) { // end it, joined or not, so every stream leaves capture mode
        for (std::size_t i = 0; i < others.size(); ++i) {
          (void)cudaEventRecord(joins[i].get(), others[i]);
          (void)cudaStreamWaitEvent(stream_, joins[i].get(), 0);
        }
        cudaGraph_t partial = nullptr;
        (void)cudaStreamEndCapture(stream_, &partial);
        if (partial) (void)cudaGraphDestroy(partial);
      }
      (void)cudaGetLastError();
      // A task's stored failure came before the call that threw here (which found the capture
      // already invalidated): report the cause.
      if (auto failure = take_failures()) std::rethrow_exception(failure);
      throw;
    }
    for (auto *c : all) c->capturing_ = false;
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    check(status, "cudaGraphInstantiate", site_);
    return std::make_unique<Graph>(exec, site_, stream_, std::move(others));
  }

  std::unique_ptr<backend::Link> make_link(backend::Executor &dst) override {
    auto *to = dynamic_cast<Executor *>(&dst);
    if (!to)
      detail::fail("make_link from ", site_, " to ", dst.name(),
                   ": both ends of a stage boundary must be on the CUDA backend");
    return std::make_unique<Link>(site_, to->site_);
  }

  // Operations (backend/run.hpp): enqueued on the stream.
  template <class Op> void run(const Op &op) {
    if constexpr (HasKernel<Op>) Kernel<Op>::run(op, launch()); // an operation of its own file
    else kernels::run(op, launch());
  }
  void copy(void *dst, const void *src, std::size_t bytes) override {
    if (!bytes) return;
    DeviceGuard guard(site_.device, site_);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync (copy)", site_);
  }

private:
  // Transfers above this size skip the staging area, so that a one-off upload of a large data
  // set does not keep as much page-locked memory for the rest of the run.
  static constexpr std::size_t max_staged = std::size_t(16) << 20;
  // cuBLAS's own choice for Hopper; older GPUs need less.
  static constexpr std::size_t blas_workspace_bytes = std::size_t(32) << 20;

  // A host transfer in a graph would copy the staging area as it is at each launch, not the
  // caller's data: refused, which ends the capture.
  void refuse_in_capture(const char *what) const {
    if (capturing_)
      detail::fail(what, " on ", site_, " while a graph is captured (host transfers stay outside graphs)");
  }

  struct Download {
    void *dst;
    const std::byte *staged;
    std::size_t bytes;
  };

  // A slice of the staging area, valid until synchronize(). The area grows until one
  // synchronize() interval's transfers fit, then stays: no page-locked allocation in a steady
  // state. A full area is retired (issued copies may still use it) and freed at synchronize().
  std::byte *stage(std::size_t bytes) {
    const std::size_t at = (staged_bytes_ + 255) / 256 * 256;
    if (at + bytes > staging_.size()) {
      const std::size_t size = std::max({staging_.size() * 2, staged_bytes_ + bytes, std::size_t(1) << 16});
      if (staging_.size()) retired_.push_back(std::move(staging_));
      staging_ = PinnedBuffer(size, site_);
      ++allocations_;
      staged_bytes_ = bytes;
      return staging_.data();
    }
    staged_bytes_ = at + bytes;
    return staging_.data() + at;
  }

  kernels::Launch launch() const {
    // run() is called inside submit(), which has made the device current; an operation called
    // directly (tests do) gets it made current here.
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != site_.device)
      check(cudaSetDevice(site_.device), "cudaSetDevice", site_);
    return {stream_, blas_, site_, partials_, lt_.get(), precision_, side_.stream ? &side_ : nullptr};
  }

  // The side stream and what it needs, made here rather than on first use: creating a stream or
  // a handle, or allocating, is not allowed while a graph is captured.
  void make_side() {
    int sms = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, site_.device), "cudaDeviceGetAttribute", site_);
    side_.sms = static_cast<unsigned>(sms);
    check(cudaStreamCreateWithFlags(&side_.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (side)", site_);
    check(cudaEventCreateWithFlags(&side_.fork, cudaEventDisableTiming), "cudaEventCreateWithFlags", site_);
    check(cudaEventCreateWithFlags(&side_.join, cudaEventDisableTiming), "cudaEventCreateWithFlags", site_);
    check(cublasCreate(&side_.blas), "cublasCreate (side)", site_);
    check(cublasSetStream(side_.blas, side_.stream), "cublasSetStream (side)", site_);
    check(
        cublasSetMathMode(side_.blas, precision_ == Precision::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
        "cublasSetMathMode (side)", site_);
    side_workspace_ = allocate(blas_workspace_bytes);
    check(cublasSetWorkspace(side_.blas, side_workspace_, blas_workspace_bytes), "cublasSetWorkspace (side)", site_);
    if (features_.fuse_epilogues) side_lt_ = std::make_unique<Lt>(site_, precision_, features_.tune_products);
    side_.lt = side_lt_.get();
  }

  void release() noexcept {
    int previous = 0;
    (void)cudaGetDevice(&previous);
    (void)cudaSetDevice(site_.device);
    if (side_.stream) (void)cudaStreamSynchronize(side_.stream);
    if (stream_) (void)cudaStreamSynchronize(stream_);
    side_lt_.reset();
    side_.lt = nullptr;
    if (side_.blas) (void)cublasDestroy(side_.blas);
    if (side_workspace_) (void)cudaFree(side_workspace_);
    if (side_.join) (void)cudaEventDestroy(side_.join);
    if (side_.fork) (void)cudaEventDestroy(side_.fork);
    if (side_.stream) (void)cudaStreamDestroy(side_.stream);
    side_ = {};
    side_workspace_ = nullptr;
    lt_.reset(); // before the stream its calls ran on
    if (partials_) (void)cudaFree(partials_);
    if (blas_workspace_) (void)cudaFree(blas_workspace_);
    if (blas_) (void)cublasDestroy(blas_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    partials_ = nullptr;
    blas_workspace_ = nullptr;
    blas_ = nullptr;
    stream_ = nullptr;
    (void)cudaSetDevice(previous);
  }

  Site site_;
  Precision precision_ = Precision::fp32; // of float products
  Features features_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  double *partials_ = nullptr; // kernels::max_blocks block partials of a loss reduction
  void *blas_workspace_ = nullptr;
  std::unique_ptr<Lt> lt_;
  kernels::Side side_;             // no stream: overlap_gradients off
  std::unique_ptr<Lt> side_lt_;    // the side stream's fused epilogues
  void *side_workspace_ = nullptr; // its cuBLAS handle's
  bool capturing_ = false;
  std::exception_ptr error_;
  PinnedBuffer staging_;
  std::size_t staged_bytes_ = 0;
  std::vector<PinnedBuffer> retired_;
  std::vector<Download> downloads_;
  std::size_t allocations_ = 0;
};

} // namespace tandem::backend::cuda

// Executor::run dispatches wherever an executor can be made: the dispatch needs this class complete,
// so it comes last (run.hpp includes this header too; #pragma once makes that include a no-op).
#include "tandem/backend/run.hpp"
