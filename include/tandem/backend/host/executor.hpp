// SPDX-License-Identifier: Apache-2.0
// host::Executor: a logical device on the host, one worker thread with its own queue (or, for
// small steps, the issuing thread itself).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/host/blas.hpp"
#include "tandem/backend/host/event.hpp"
#include "tandem/backend/host/kernel.hpp"
#include "tandem/backend/host/kernels.hpp"
#include "tandem/backend/host/link.hpp"
#include "tandem/backend/host/worker.hpp"
#include "tandem/detail/compiled.hpp"
#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"
#include "tandem/precision.hpp"

namespace tandem::backend::host {

class Executor final : public backend::Executor {
public:
  explicit Executor(std::size_t index, Precision precision = Precision::fp32)
      : index_(index), reduced_(precision), precision_(precision) {
    use_blas_threads();
  }

  Kind kind() const override { return Kind::host; }
  std::string name() const override { return "host:" + std::to_string(index_); }

  TANDEM_INLINE void *allocate(std::size_t bytes) override;
  void deallocate(void *ptr) noexcept override { std::free(ptr); }
  TANDEM_INLINE void upload(void *dst, const void *src, std::size_t bytes) override;
  void download(void *dst, const void *src, std::size_t bytes) override {
    submit([=] { std::memcpy(dst, src, bytes); });
  }

  TANDEM_INLINE void submit(std::function<void()> task) override;
  std::unique_ptr<backend::Event> make_event() override { return std::make_unique<Event>(); }
  TANDEM_INLINE void record(backend::Event &event) override;
  TANDEM_INLINE void wait(backend::Event &event) override;
  double elapsed_us(backend::Event &from, backend::Event &to) override {
    const auto d = static_cast<Event &>(to).when() - static_cast<Event &>(from).when();
    return std::chrono::duration<double, std::micro>(d).count();
  }
  TANDEM_INLINE void synchronize() override;
  bool idle() override { return worker_.idle(); } // (inline tasks have run when submit returns)
  // Work issued before the switch finishes on the worker first, so issue order still holds.
  void run_on_issuing_thread(bool yes) override {
    if (yes && !inline_) worker_.wait_idle();
    inline_ = yes;
  }
  std::unique_ptr<backend::Link> make_link(backend::Executor &dst) override { return std::make_unique<Link>(dst); }
  // Every host executor's memory is the process's own.
  bool shares_memory_with(std::span<backend::Executor *const> others) const override {
    for (const auto *e : others)
      if (e->kind() != Kind::host) return false;
    return true;
  }

  // Operations (backend/run.hpp). Float products of reduced precision go through reduced_.
  template <class Op> void run(const Op &op) {
    if constexpr (HasKernel<Op>) {
      Kernel<Op>::run(op); // an operation of its own file (host/kernel.hpp)
    } else {
      if constexpr (kernels::ReducedProducts::takes<Op>)
        if (precision_ != Precision::fp32) return reduced_.run(op);
      kernels::run(op);
    }
  }
  void copy(void *dst, const void *src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }

private:
  std::size_t index_;
  kernels::ReducedProducts reduced_; // used where precision_ is not fp32
  Precision precision_;
  bool inline_ = false;               // run_on_issuing_thread
  std::exception_ptr inline_error_{}; // the first failure of a task run inline
  Worker worker_;
};

// Defined here in a header-only program; in one linked with tandem::compiled, in src/compiled.cpp.
#if TANDEM_INLINE_DEFINITIONS
TANDEM_INLINE void *Executor::allocate(std::size_t bytes) {
  // 64-byte alignment: whole cache lines, and what Eigen's vectorised kernels like best.
  tandem::detail::check_allocation(bytes, name());
  const std::size_t rounded = bytes > SIZE_MAX - 63 ? 0 : (bytes + 63) / 64 * 64;
  if (bytes && !rounded) detail::fail("out of memory: allocating ", bytes, " bytes on ", name());
  void *p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (rounded && !p) detail::fail("out of memory: allocating ", bytes, " bytes on ", name());
  return p;
}

TANDEM_INLINE void Executor::upload(void *dst, const void *src, std::size_t bytes) {
  if (inline_) return submit([=] { std::memcpy(dst, src, bytes); });
  // Read now, written when the worker gets there: the caller may change `src` at once (a step in
  // flight must not see the next batch being filled in).
  const auto *from = static_cast<const std::byte *>(src);
  auto data = tandem::detail::allocating(bytes, "a copy of uploaded data",
                                         [&] { return std::vector<std::byte>(from, from + bytes); });
  submit([dst, data = std::move(data)] { std::memcpy(dst, data.data(), data.size()); });
}

TANDEM_INLINE void Executor::submit(std::function<void()> task) {
  if (!inline_) return worker_.push(std::move(task));
  // The worker's semantics on this thread: a failure is kept for synchronize(), and the tasks
  // after it still run (they may record events that other devices wait for).
  try {
    task();
  } catch (...) {
    if (!inline_error_) inline_error_ = std::current_exception();
  }
}

TANDEM_INLINE void Executor::record(backend::Event &event) {
  auto &e = static_cast<Event &>(event);
  submit([&e, ticket = e.issue()] { e.complete(ticket); });
}

TANDEM_INLINE void Executor::wait(backend::Event &event) {
  // Inline, a wait returns at once where the record came from an inline device too: issue order
  // ran it first. A worker's record is waited for here, on the issuing thread.
  auto &e = static_cast<Event &>(event);
  if (const auto ticket = e.latest()) submit([&e, ticket] { e.wait_for(ticket); });
}

TANDEM_INLINE void Executor::synchronize() {
  worker_.drain();
  if (inline_error_) std::rethrow_exception(std::exchange(inline_error_, nullptr));
}
#endif

} // namespace tandem::backend::host

// Executor::run dispatches wherever an executor can be made: the dispatch needs this class complete,
// so it comes last (run.hpp includes this header too; #pragma once makes that include a no-op).
#include "tandem/backend/run.hpp"
