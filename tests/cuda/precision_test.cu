// SPDX-License-Identifier: Apache-2.0
// Reduced-precision products on the GPU (Precision::tf32, bf16) against the host backend's
// emulation of them, op by op and through a whole pipeline.
#include <cmath>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <tandem/tandem.hpp>

#include "support.hpp"

using namespace tandem;
namespace op = tandem::backend::op;
using test::DeviceArray;
using test::uniform;

namespace {
using test::relative_error;

struct Results {
  std::vector<float> y, dx, dw, db;
};

// One Linear forward (with ReLU) and backward on `ex`, whose memory is the device's or the host's.
Results linear(backend::Executor &ex, std::size_t batch, std::size_t in, std::size_t out) {
  DeviceArray<float> x(ex, uniform<float>(batch * in, 61)), w(ex, uniform<float>(out * in, 62)),
      b(ex, uniform<float>(out, 63)), dy(ex, uniform<float>(batch * out, 64)), y(ex, std::vector<float>(batch * out)),
      dx(ex, std::vector<float>(batch * in)), dw(ex, std::vector<float>(out * in)), db(ex, std::vector<float>(out));
  test::run_on(ex, op::LinearForward<float>{.batch = batch,
                                            .in = in,
                                            .out = out,
                                            .x = x.get(),
                                            .weight = w.get(),
                                            .bias = b.get(),
                                            .y = y.get(),
                                            .activation = backend::Activation::relu});
  test::run_on(ex, op::LinearBackward<float>{.batch = batch,
                                             .in = in,
                                             .out = out,
                                             .x = x.get(),
                                             .weight = w.get(),
                                             .dy = dy.get(),
                                             .dx = dx.get(),
                                             .dweight = dw.get(),
                                             .dbias = db.get(),
                                             .accumulate = false});
  return {y.to_host(), dx.to_host(), dw.to_host(), db.to_host()};
}
} // namespace

TEST_SUITE("gpu") {
  // cuBLAS's FAST_TF32 / FAST_16BF compute types allow (rather than force) the rounding, and its
  // conversion may truncate where the emulation rounds to nearest: the tolerance is a few units of
  // the reduced format's last place, and whether the GPU rounded at all is reported.
  TEST_CASE("reduced-precision Linear products agree with the host's emulation of them") {
    TANDEM_SKIP_WITHOUT_GPU();
    const std::size_t batch = 512, in = 256, out = 128;
    backend::host::Executor host32(0, Precision::fp32);
    const Results fp32 = linear(host32, batch, in, out);
    for (const Precision p : {Precision::tf32, Precision::bf16})
      for (const bool lt : {true, false}) {
        const std::string what = std::string(name(p)) + (lt ? ", cuBLASLt epilogue" : ", cuBLAS and kernels");
        CAPTURE(what);
        backend::host::Executor host(0, p);
        backend::cuda::Executor gpu(0, 0, p, {.fuse_epilogues = lt});
        const Results want = linear(host, batch, in, out), got = linear(gpu, batch, in, out);
        const double tolerance = p == Precision::bf16 ? 4 * 0x1p-8 : 4 * 0x1p-11;
        CHECK(relative_error(got.y, want.y) <= tolerance);
        CHECK(relative_error(got.dx, want.dx) <= tolerance);
        CHECK(relative_error(got.dw, want.dw) <= tolerance);
        CHECK(relative_error(got.db, want.db) <= 1e-5); // a float32 sum either way
        MESSAGE(what << ": forward off float32 by " << relative_error(got.y, fp32.y)
                     << " (emulated: " << relative_error(want.y, fp32.y) << ")");
      }
  }

  TEST_CASE("a pipeline trained in bf16 on the GPU matches the host backend's bf16 training") {
    TANDEM_SKIP_WITHOUT_GPU();
    using Net = Pipeline<Stage<Device<0>, Linear<32, 64>, ReLU>, Stage<Device<1>, Linear<64, 64>, GELU, Linear<64, 8>>>;
    const std::size_t batch = 96;
    const auto x = uniform<float>(batch * Net::in_features, 71);
    const auto y = test::labels(batch, Net::out_features, 72);
    const auto train = [&](const char *devices) {
      Context ctx({.devices = devices, .precision = Precision::bf16});
      Net net(ctx, 9);
      optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
      loss::CrossEntropy loss;
      std::vector<float> losses;
      for (int i = 0; i < 4; ++i)
        losses.push_back(net.train_step(x, y, loss, opt, schedule::GPipe{.micro_batches = 3}));
      auto values = test::snapshot(net);
      values.push_back(losses);
      return values;
    };
    const auto host = train("host"), gpu = train("0,0");
    REQUIRE(host.size() == gpu.size());
    for (std::size_t i = 0; i < host.size(); ++i) {
      CAPTURE(i);
      CHECK(relative_error(gpu[i], host[i]) <= 3e-2);
    }
  }
}
