// SPDX-License-Identifier: Apache-2.0
// backend::Executor: what the layers above need from a device. The host and CUDA backends
// implement it with the same file set (backend/host/, backend/cuda/).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>

#include "tandem/backend/allocation_limit.hpp"
#include "tandem/backend/event.hpp"
#include "tandem/backend/graph.hpp"
#include "tandem/backend/link.hpp"
#include "tandem/backend/ops.hpp"
#include "tandem/backend/step_in_flight.hpp"
#include "tandem/error.hpp"

// nvcc compiles the CUDA backend in, unless TANDEM_HOST_ONLY asks for the host backend alone.
#if defined(__CUDACC__) && !defined(TANDEM_HOST_ONLY)
#define TANDEM_CUDA_BACKEND 1
#endif

namespace tandem::backend {

enum class Kind { host, cuda };

#ifdef TANDEM_CUDA_BACKEND
inline constexpr bool cuda_backend = true;
#else
inline constexpr bool cuda_backend = false;
#endif

// Executor::run's dispatch to the backends compiled in (backend/run.hpp defines it).
template <bool Cuda> struct Dispatch;

// One logical device: its memory, one ordered stream of work, and the operations of ops.hpp.
//
// Threading contract. Ordering calls (submit, record, wait, upload, download, synchronize) are
// made from one issuing thread. Operations (run) are made inside a submitted task: the host
// backend runs a task on the device's worker thread, where run() computes at once; the CUDA
// backend runs a task on the issuing thread, where run() enqueues kernels on the device's stream.
// Either way a task's operations execute in issue order after everything issued before it.
//
// Issuing threads take turns through issue_mutex(), one recursive mutex for every executor of a
// Context: whoever issues, waits or completes steps in flight holds it (networks, tensors,
// parameters, optimizers, PendingLoss; see docs/threads.md). Executors are owned by shared_ptr
// (the Context's), and whatever frees memory on one or issues to it later keeps it alive.
class Executor : public std::enable_shared_from_this<Executor> {
public:
  virtual ~Executor() = default;

  virtual Kind kind() const = 0;
  // "host:1", "cuda:0": the physical place, for messages and describe().
  virtual std::string name() const = 0;

  // The mutex issuing threads take turns on: the Context's, shared by all its executors.
  std::recursive_mutex &issue_mutex() const { return *issue_mutex_; }
  const std::shared_ptr<std::recursive_mutex> &shared_issue_mutex() const { return issue_mutex_; }
  void share_issue_mutex(std::shared_ptr<std::recursive_mutex> m) { issue_mutex_ = std::move(m); }

  // Memory of this device. allocate() throws Error naming the bytes and the device (also where
  // backend::set_allocation_limit says so).
  virtual void *allocate(std::size_t bytes) = 0;
  virtual void deallocate(void *ptr) noexcept = 0;

  // The logical device's budget (ContextOptions::device_memory): the bytes that the library's
  // buffers (networks, optimizers, tensors) hold here, and the most they may hold (0: no limit).
  // A GPU executor's own fixed workspaces (cuBLAS's) are not counted. Buffers charge before they
  // allocate and refund when they free, under issue_mutex(); charge() throws Error, changing
  // nothing, where the bytes would exceed the capacity.
  void set_capacity(std::size_t logical, std::size_t bytes) {
    logical_ = logical;
    capacity_ = bytes;
  }
  std::size_t capacity() const { return capacity_; }
  std::size_t bytes_in_use() const { return in_use_; }
  void charge(std::size_t bytes) {
    if (capacity_ && (bytes > capacity_ || in_use_ > capacity_ - bytes))
      detail::fail("out of memory: allocating ", bytes, " bytes on Device<", logical_, "> (", name(),
                   ") would exceed its capacity of ", capacity_, " bytes (ContextOptions::device_memory), ", in_use_,
                   " bytes being in use there");
    in_use_ += bytes;
  }
  void refund(std::size_t bytes) noexcept { in_use_ -= bytes; }
  // Ordered host <-> device copies. upload() has read `src` when it returns; download()'s `dst`
  // must stay valid until synchronize().
  virtual void upload(void *dst, const void *src, std::size_t bytes) = 0;
  virtual void download(void *dst, const void *src, std::size_t bytes) = 0;

  virtual void submit(std::function<void()> task) = 0;
  virtual std::unique_ptr<Event> make_event() = 0;
  virtual void record(Event &event) = 0;
  virtual void wait(Event &event) = 0;
  // Microseconds between two completed events of this executor (both recorded, both reached):
  // the timeline's clock, host time on the host backend, cudaEventElapsedTime on GPUs.
  virtual double elapsed_us(Event &from, Event &to) = 0;
  // Blocks the issuing thread until all issued work is done; rethrows a failure of that work.
  virtual void synchronize() = 0;
  // Whether all issued work is done, without waiting: synchronize() would then return at once
  // (a failure still waits there to be rethrown).
  virtual bool idle() = 0;
  // A link that moves bytes from this device to `dst` on a stream of its own.
  virtual std::unique_ptr<Link> make_link(Executor &dst) = 0;
  // Whether kernels of this device can read and write memory allocated by each of `others`
  // (the host backend: always; GPUs: the same physical device).
  virtual bool shares_memory_with(std::span<Executor *const> others) const = 0;

  // Graphs (CUDA graphs on GPUs; the host backend has none). can_capture says whether work
  // issued on `executors` (this one first) can be captured as one graph. capture() calls
  // `issue_work`, which issues on those executors as usual; nothing runs, and the returned graph
  // runs it all at each launch(). If the work cannot be captured, capture() throws Error and
  // leaves every executor as it was, with nothing issued, so the caller can issue it normally.
  virtual bool can_capture(std::span<Executor *const> /*executors*/) const { return false; }
  // Whether op::SmallForward / SmallBackward (and SmallNetwork) beat one operation per layer here
  // (GPUs: one launch instead of many; the host: no, its per-layer products are faster).
  virtual bool prefers_small_stages() const { return false; }
  // The bytes of the ReLU mask a LinearForward of `rows` x `width` outputs may leave in its
  // relu_mask for the next Linear's backward (op::LinearForward), in this backend's layout; 0
  // where it keeps none and reads the activations instead (the host).
  virtual std::size_t relu_mask_bytes(std::size_t /*rows*/, std::size_t /*width*/) const { return 0; }
  // Whether this device's work runs on the issuing thread, at once and in issue order, instead of
  // on a thread of its own: the host backend's choice for steps too small to repay a hand-off
  // between threads (ContextOptions::host_execution). Switched between steps, never inside one.
  // GPUs ignore it: their work is already issued from the calling thread onto streams.
  virtual void run_on_issuing_thread(bool /*yes*/) {}
  virtual std::unique_ptr<Graph> capture(std::span<Executor *const> executors, const std::function<void()> &issue_work);

  // Runs an operation of ops.hpp (float, or double for finite-difference checks) on this
  // device. Not virtual: backend/run.hpp dispatches on kind() to the backend's own run, so the
  // kernels of an operation are compiled only where some code runs that operation in that type,
  // instead of every kernel in every translation unit through a virtual table. The dispatch is
  // complete wherever an executor class is (host/executor.hpp and cuda/executor.hpp end by
  // including run.hpp); non-template code that calls run includes backend/run.hpp itself.
  // `Cuda` is not for callers: it differs between translation units compiled with and without
  // the CUDA backend, so their dispatches (one knows cuda::Executor, the other does not) are
  // different functions to the linker, not one inline function with two bodies.
  template <class Op, bool Cuda = cuda_backend> void run(const Op &op) { Dispatch<Cuda>::run(*this, op); }
  // Same-device copy.
  virtual void copy(void *dst, const void *src, std::size_t bytes) = 0;

  // The networks' steps that may still be in flight here (train_step_async registers its step on
  // each of its devices). Whatever waits on this device for its own reasons - a Tensor's or a
  // Parameter's copy, an optimizer, another network's step - completes them first, so that a
  // step's failure reaches its own PendingLoss and not that bystander.
  void add_step_in_flight(const std::shared_ptr<StepInFlight> &step) { in_flight_.add(step); }
  void complete_steps_in_flight() noexcept { in_flight_.complete(); }

private:
  std::size_t logical_ = 0, capacity_ = 0, in_use_ = 0;
  StepInFlight::List in_flight_;
  std::shared_ptr<std::recursive_mutex> issue_mutex_ = std::make_shared<std::recursive_mutex>();
};

inline std::unique_ptr<Graph> Executor::capture(std::span<Executor *const> /*executors*/,
                                                const std::function<void()> & /*issue_work*/) {
  detail::fail("capture: ", name(), " cannot capture work in a graph");
}

} // namespace tandem::backend
