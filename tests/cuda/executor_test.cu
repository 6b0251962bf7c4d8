// SPDX-License-Identifier: Apache-2.0
// The CUDA executor's own contract: errors that name the call, bytes and device; events; links
// over each copy path.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/backend/cuda/executor.hpp"
#include "tandem/backend/cuda/link.hpp"
#include "tandem/backend/cuda/pinned.hpp"
#include "tandem/error.hpp"

namespace {

using namespace tandem;
using backend::cuda::CopyPath;
using backend::cuda::Executor;

std::string message_of(auto &&f) {
  try {
    f();
  } catch (const Error &e) {
    return e.what();
  }
  return "(no tandem::Error thrown)";
}

// Keeps its stream busy for about `cycles` clock cycles.
__global__ void busy(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

// Moves 3 chunks through `link` one after another, as micro-batches cross a boundary, and checks
// what arrives. The source is overwritten only after a chunk's `done`, as the pipeline does.
void check_link(Executor &src, Executor &dst, backend::Link &link) {
  const std::size_t n = 4099; // not a multiple of anything
  for (int chunk = 0; chunk < 3; ++chunk) {
    std::vector<float> values(n);
    std::iota(values.begin(), values.end(), float(chunk * 10000));
    test::DeviceArray<float> from(src, values), to(dst, std::vector<float>(n, -1.0f));
    // The link's stream is ordered after `ready` only: the destination's own upload of `to`
    // must be finished before the copy lands there (the pipeline never writes a copy's target).
    dst.synchronize();
    auto ready = src.make_event();
    auto done = dst.make_event();
    auto begin = dst.make_event();
    src.record(*ready);
    link.copy(from.get(), to.get(), n * sizeof(float), *ready, *done, begin.get());
    dst.wait(*done);
    CHECK(to.to_host() == values);
    CHECK(dst.elapsed_us(*begin, *done) >= 0);
  }
}

} // namespace

TEST_SUITE("gpu") {
  TEST_CASE("executor: out of memory names the bytes and the device") {
    TANDEM_SKIP_WITHOUT_GPU();
    Executor ex(0, 3, Precision::fp32);
    const std::size_t absurd = std::size_t(1) << 52; // 4 PiB
    const std::string msg = message_of([&] { ex.allocate(absurd); });
    CHECK_MESSAGE(msg.find("out of memory") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(std::to_string(absurd) + " bytes") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("cuda:0 (Device<3>)") != std::string::npos, msg);
    // The failure is not sticky: the device still works.
    void *p = ex.allocate(1024);
    CHECK(p != nullptr);
    ex.deallocate(p);
  }

  TEST_CASE("executor: a cuBLAS failure names the call and the device and is raised by synchronize") {
    TANDEM_SKIP_WITHOUT_GPU();
    Executor ex(0, 1, Precision::fp32);
    test::DeviceArray<float> a(ex, std::vector<float>(64, 1.0f));
    // lda smaller than a row: cuBLAS rejects the arguments.
    const backend::op::Gemm<float> bad{
        .m = 4, .n = 4, .k = 4, .a = a.get(), .lda = 1, .b = a.get(), .ldb = 4, .c = a.get() + 32, .ldc = 4};
    ex.submit([&] { ex.run(bad); });
    const std::string msg = message_of([&] { ex.synchronize(); });
    CHECK_MESSAGE(msg.find("cublasSgemm") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("cuda:0 (Device<1>)") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("CUBLAS_STATUS_INVALID_VALUE") != std::string::npos, msg);
    CHECK_NOTHROW(ex.synchronize()); // reported once
  }

  TEST_CASE("executor: events order streams and waiting on one never recorded is no wait") {
    TANDEM_SKIP_WITHOUT_GPU();
    Executor a(0, 0, Precision::fp32), b(0, 1, Precision::fp32);
    auto never = a.make_event();
    b.wait(*never);
    CHECK_NOTHROW(b.synchronize());

    // b reads what a wrote, ordered only by the event.
    const std::size_t n = 1 << 20;
    test::DeviceArray<float> x(a, std::vector<float>(n, 0.0f));
    a.submit([&] { a.run(backend::op::Fill<float>{.n = n, .value = 2.5f, .dst = x.get()}); });
    auto written = a.make_event(), start = b.make_event(), stop = b.make_event();
    a.record(*written);
    b.wait(*written);
    b.record(*start);
    std::vector<float> host(n);
    b.download(host.data(), x.get(), n * sizeof(float));
    b.record(*stop);
    b.synchronize();
    CHECK(host == std::vector<float>(n, 2.5f));
    CHECK(b.elapsed_us(*start, *stop) >= 0);
  }

  TEST_CASE("executor: upload and download round-trip small and beyond the staging area") {
    TANDEM_SKIP_WITHOUT_GPU();
    Executor ex(0, 0, Precision::fp32);
    for (std::size_t n : {std::size_t(1), std::size_t(1000), std::size_t(5) << 20}) {
      const auto values = test::uniform<float>(n, 5);
      test::DeviceArray<float> d(ex, values);
      CHECK(d.to_host() == values);
    }
  }

  TEST_CASE("executor: an upload beyond the staging area from page-locked memory has read it on return") {
    TANDEM_SKIP_WITHOUT_GPU();
    // From page-locked memory the runtime copies while the caller goes on; the contract says the
    // caller may refill its buffer as soon as upload() returns, so upload() waits for that copy.
    // The copy is queued behind a kernel that keeps the stream busy for about 0.1 s: without the
    // wait, the refill below would land before the copy starts.
    Executor ex(0, 0, Precision::fp32);
    const std::size_t n = std::size_t(6) << 20; // 24 MiB, beyond the 16 MiB staging area
    const auto values = test::uniform<float>(n, 8);
    backend::cuda::PinnedBuffer pinned(n * sizeof(float), backend::cuda::Site{0, 0});
    auto *host = reinterpret_cast<float *>(pinned.data());
    std::copy(values.begin(), values.end(), host);
    test::DeviceArray<float> d(ex, std::vector<float>(n, 0.0f));
    ex.synchronize();
    busy<<<1, 1, 0, ex.stream()>>>(200'000'000);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    ex.upload(d.get(), host, n * sizeof(float));
    std::fill(host, host + n, -1.0f); // at once, as a data loader refilling its batch
    CHECK(d.to_host() == values);
  }

  TEST_CASE("link: every copy path delivers the bytes between streams of one GPU") {
    TANDEM_SKIP_WITHOUT_GPU();
    Executor src(0, 0, Precision::fp32), dst(0, 1, Precision::fp32);
    auto made = src.make_link(dst);
    CHECK(static_cast<backend::cuda::Link &>(*made).path() == CopyPath::same_device);
    check_link(src, dst, *made);
    for (CopyPath path : {CopyPath::peer, CopyPath::staged}) {
      CAPTURE(backend::cuda::to_string(path));
      backend::cuda::Link link({0, 0}, {0, 1}, path);
      check_link(src, dst, link);
    }
  }

  TEST_CASE("link: between two GPUs the copy is peer-to-peer or staged and delivers the bytes") {
    TANDEM_SKIP_WITHOUT_GPU();
    if (backend::cuda::device_count() < 2) {
      MESSAGE("skipped: needs two GPUs");
      return;
    }
    Executor g0(0, 0, Precision::fp32), g1(1, 1, Precision::fp32);
    for (auto [from, to] : {std::pair{&g0, &g1}, std::pair{&g1, &g0}}) {
      auto link = from->make_link(*to);
      MESSAGE("copy path ", backend::cuda::to_string(static_cast<backend::cuda::Link &>(*link).path()));
      check_link(*from, *to, *link);
    }
  }

  TEST_CASE("link: `done` must be an event of the destination") {
    TANDEM_SKIP_WITHOUT_GPU();
    if (backend::cuda::device_count() < 2) {
      MESSAGE("skipped: needs two GPUs");
      return;
    }
    Executor g0(0, 0, Precision::fp32), g1(1, 1, Precision::fp32);
    auto link = g0.make_link(g1);
    auto ready = g0.make_event(), wrong = g0.make_event();
    const std::string msg = message_of([&] { link->copy(nullptr, nullptr, 0, *ready, *wrong); });
    CHECK_MESSAGE(msg.find("destination") != std::string::npos, msg);
  }
}
