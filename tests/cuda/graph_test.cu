// SPDX-License-Identifier: Apache-2.0
// Captured training steps (ContextOptions::graphs) against issued ones: the same kernels with the
// same arguments, so the same bits; inputs that change between steps; bad labels found on the
// device; and fused against plain Linear epilogues, both checked against the host backend.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/context.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/layers/relu.hpp"
#include "tandem/layers/tanh.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/optim/adam.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/pending_loss.hpp"
#include "tandem/pipeline.hpp"
#include "tandem/schedule/gpipe.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/tensor.hpp"

namespace {

using namespace tandem;

using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

std::vector<std::int32_t> labels_of(const std::vector<float> &x, std::size_t batch) {
  std::vector<std::int32_t> y(batch);
  for (std::size_t i = 0; i < batch; ++i) y[i] = x[i * Net::in_features] + x[i * Net::in_features + 1] > 0;
  return y;
}

struct Run {
  std::vector<float> losses;
  std::vector<std::vector<float>> parameters;
  std::size_t replayed = 0, transferred = 0;
  std::string graph_error;
};

// `steps` SGD steps (momentum, so the first differs from the rest) on fresh data each step: from
// host memory, or written into the same device tensors each time; with `async`, every step issued
// by train_step_async and the losses read at the end.
// `new_lr`, where not 0: set_lr(new_lr) before the fourth step (an LR schedule).
template <class Sched>
Run train(Context::Options options, Sched sched, bool tensors, int steps = 8, bool async = false, float new_lr = 0) {
  Context ctx(options);
  REQUIRE(ctx.backend() == backend::Kind::cuda);
  Net net(ctx, 21);
  optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
  loss::CrossEntropy loss;
  constexpr std::size_t batch = 64;
  Tensor<float> x(ctx, 0, batch, Net::in_features);
  Tensor<std::int32_t> y(ctx, 1, batch, 1);
  Run r;
  std::vector<PendingLoss<float>> pending;
  for (int i = 0; i < steps; ++i) {
    if (i == 3 && new_lr != 0) opt.set_lr(new_lr);
    const auto xs = test::uniform<float>(batch * Net::in_features, 300 + static_cast<std::uint32_t>(i));
    const auto ys = labels_of(xs, batch);
    if (tensors) {
      x.copy_from(xs); // ordered after the step in flight, which reads x, on the same stream
      y.copy_from(ys);
      if (async) pending.push_back(net.train_step_async(x, y, loss, opt, sched));
      else r.losses.push_back(net.train_step(x, y, loss, opt, sched));
    } else if (async) {
      pending.push_back(net.train_step_async(xs, ys, loss, opt, sched));
    } else {
      r.losses.push_back(net.train_step(xs, ys, loss, opt, sched));
    }
  }
  for (const auto &p : pending) r.losses.push_back(p.get());
  for (const auto &p : net.parameters()) r.parameters.push_back(p.to_host());
  r.replayed = net.replayed_steps();
  r.transferred = net.transferred_bytes();
  r.graph_error = net.graph_error();
  return r;
}

template <class Sched> void captured_equals_issued(Context::Options options, Sched sched, bool tensors) {
  options.graphs = false;
  const Run issued = train(options, sched, tensors);
  options.graphs = true;
  const Run captured = train(options, sched, tensors);
  INFO("devices '", options.devices, "', force_copies ", options.force_copies, ", tensors ", tensors);
  CHECK(captured.graph_error == "");
  // Step 1 seeds momentum (issued), step 2 is seen once (issued), step 3 is captured and run,
  // steps 4 to 8 are replays: 6 steps ran as a graph.
  CHECK(captured.replayed == 6);
  CHECK(issued.replayed == 0);
  CHECK(captured.losses == issued.losses);
  CHECK(captured.parameters == issued.parameters);
  CHECK(captured.transferred == issued.transferred);
}

} // namespace

// Outside the unnamed namespace: nvcc would warn that the double `forward`, which only the
// Layer concept names, is never referenced in a type of internal linkage.
namespace graph_test {
// A Tanh that allocates device memory in its forward. cudaMalloc is not allowed while a stream
// captures: refusing it invalidates the capture, so the work every stage issues after it fails
// too, and each executor keeps a failure.
struct AllocatingTanh : Tanh {
  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    ex.deallocate(ex.allocate(64));
    Tanh::forward(ex, f);
  }
};
using Allocating =
    Pipeline<Stage<Device<0>, Linear<10, 20>, AllocatingTanh>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
} // namespace graph_test
using graph_test::Allocating;

TEST_SUITE("gpu") {
  TEST_CASE("graphs: a step that cannot be captured is issued instead, and no failure of the capture is left over") {
    TANDEM_SKIP_WITHOUT_GPU();
    const auto run = [](bool graphs, std::string &graph_error) {
      Context ctx({.devices = "0,0", .fuse_small_stages = StageFusion::never, .graphs = graphs});
      Allocating net(ctx, 5);
      optim::SGD opt(net, {.lr = 0.05f});
      loss::CrossEntropy loss;
      std::vector<float> losses;
      for (std::uint32_t i = 0; i < 5; ++i) {
        const auto xs = test::uniform<float>(64 * Net::in_features, 700 + i);
        losses.push_back(net.train_step(xs, labels_of(xs, 64), loss, opt)); // must not throw
      }
      graph_error = net.graph_error();
      CHECK(net.replayed_steps() == 0);
      // Every step counted once: the failed capture had counted none, so it undid none.
      CHECK(opt.steps(0) == 5);
      CHECK(opt.steps(1) == 5);
      return std::pair{losses, test::snapshot(net)};
    };
    std::string captured_error, issued_error;
    const auto issued = run(false, issued_error);
    const auto tried = run(true, captured_error);
    CHECK(issued_error.empty());
    CHECK_MESSAGE(captured_error.find("cudaMalloc") != std::string::npos, captured_error); // the cause
    CHECK(tried == issued);
  }

  TEST_CASE("graphs: captured steps give the bits of issued steps, inputs changing every step") {
    TANDEM_SKIP_WITHOUT_GPU();
    captured_equals_issued({.devices = "0,0"}, schedule::Naive{}, false);
    captured_equals_issued({.devices = "0,0"}, schedule::Naive{}, true);
    // Copies on link streams, four micro-batches: every stream of the step is in the graph.
    captured_equals_issued({.devices = "0,0", .force_copies = true}, schedule::GPipe{.micro_batches = 4}, false);
    captured_equals_issued({.devices = "0,0", .force_copies = true}, schedule::GPipe{.micro_batches = 4}, true);
  }

  TEST_CASE("train_step_async: the bits of train_step, captured or issued, from host data or tensors") {
    TANDEM_SKIP_WITHOUT_GPU();
    for (const bool graphs : {true, false})
      for (const bool tensors : {false, true}) {
        CAPTURE(graphs);
        CAPTURE(tensors);
        const Context::Options options{.devices = "0,0", .force_copies = true, .graphs = graphs};
        const Run sync = train(options, schedule::GPipe{.micro_batches = 2}, tensors);
        const Run async = train(options, schedule::GPipe{.micro_batches = 2}, tensors, 8, true);
        CHECK(async.losses == sync.losses);
        CHECK(async.parameters == sync.parameters);
        CHECK(async.replayed == sync.replayed);
      }
  }

  TEST_CASE("graphs: a new learning rate is captured anew, and the steps keep the issued steps' bits") {
    TANDEM_SKIP_WITHOUT_GPU();
    const Context::Options options{.devices = "0,0"};
    Context::Options off = options;
    off.graphs = false;
    const Run issued = train(off, schedule::Naive{}, false, 8, false, 0.01f);
    const Run captured = train(options, schedule::Naive{}, false, 8, false, 0.01f);
    // Step 1 seeds momentum, step 2 is seen once, step 3 is captured and run; step 4 has the new
    // rate (issued: seen once), step 5 is captured again, 6 to 8 replay: 5 steps ran as graphs.
    CHECK(captured.replayed == 5);
    CHECK(captured.graph_error == "");
    CHECK(captured.losses == issued.losses);
    CHECK(captured.parameters == issued.parameters);
    const Run unchanged = train(off, schedule::Naive{}, false, 8, false, 0);
    CHECK(unchanged.parameters != issued.parameters); // the rate did change the training
  }

  TEST_CASE("graphs: a new batch size, schedule or optimizer without replay is issued, not replayed") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context ctx({.devices = "0,0"});
    Net net(ctx, 5);
    optim::SGD sgd(net, {.lr = 0.01f});
    loss::CrossEntropy loss;
    const auto x = test::uniform<float>(64 * Net::in_features, 17);
    const auto y = labels_of(x, 64);
    for (int i = 0; i < 4; ++i) net.train_step(x, y, loss, sgd); // no momentum: replayable at once
    CHECK(net.replayed_steps() == 3);
    const std::span<const float> half(x.data(), 32 * Net::in_features);
    net.train_step(half, std::span<const std::int32_t>(y.data(), 32), loss, sgd);
    CHECK(net.replayed_steps() == 3);
    net.train_step(x, y, loss, sgd); // a smaller batch fits the buffers: the first shape is still captured
    CHECK(net.replayed_steps() == 4);
    // Two micro-batches need more buffers: the graph pointed into the old ones and is dropped.
    net.train_step(x, y, loss, sgd, schedule::GPipe{.micro_batches = 2});
    CHECK(net.replayed_steps() == 4);
    net.train_step(x, y, loss, sgd);
    CHECK(net.replayed_steps() == 4);
    net.train_step(x, y, loss, sgd); // seen twice in a row again: captured
    CHECK(net.replayed_steps() == 5);
    // Adam keeps its step number on the device: its steps replay too (the first is issued, the
    // second captured and run).
    optim::Adam adam(net, {.lr = 1e-3f});
    for (int i = 0; i < 3; ++i) net.train_step(x, y, loss, adam);
    CHECK(net.replayed_steps() == 7);
    CHECK(net.graph_error() == "");
  }

  TEST_CASE("graphs: Adam's captured steps give the bits of its issued steps") {
    TANDEM_SKIP_WITHOUT_GPU();
    const auto run = [](bool graphs) {
      Context ctx({.devices = "0,0", .graphs = graphs});
      Net net(ctx, 13);
      optim::Adam opt(net, {.lr = 1e-2f, .betas = {0.8f, 0.99f}, .amsgrad = true});
      loss::CrossEntropy loss;
      Run r;
      for (int i = 0; i < 6; ++i) {
        const auto xs = test::uniform<float>(64 * Net::in_features, 700 + static_cast<std::uint32_t>(i));
        r.losses.push_back(net.train_step(xs, labels_of(xs, 64), loss, opt));
      }
      r.parameters = test::snapshot(net);
      r.replayed = net.replayed_steps();
      return r;
    };
    const Run issued = run(false), captured = run(true);
    CHECK(captured.replayed == 5); // step 1 issued, step 2 captured and run, 3 to 6 replayed
    CHECK(captured.losses == issued.losses);
    CHECK(captured.parameters == issued.parameters);
  }

  TEST_CASE("graphs: a bad label in a replayed step throws and changes nothing") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context ctx({.devices = "0,0"});
    Net net(ctx, 8), twin(ctx, 8);
    optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f}), twin_opt(twin, {.lr = 0.05f, .momentum = 0.9f});
    loss::CrossEntropy loss;
    const auto xs = test::uniform<float>(64 * Net::in_features, 23);
    auto ys = labels_of(xs, 64);
    const Tensor<float> x(ctx, 0, 64, Net::in_features, xs);
    Tensor<std::int32_t> y(ctx, 1, 64, 1, ys);
    for (int i = 0; i < 4; ++i) CHECK(net.train_step(x, y, loss, opt) == twin.train_step(xs, ys, loss, twin_opt));
    REQUIRE(net.replayed_steps() == 2);
    const auto before = test::snapshot(net);
    auto bad = ys;
    bad[41] = 2;
    y.copy_from(bad);
    CHECK_THROWS_WITH_AS(net.train_step(x, y, loss, opt), doctest::Contains("label 41 is 2, outside [0, 2)"), Error);
    CHECK(net.replayed_steps() == 3); // it was a replay
    CHECK(test::snapshot(net) == before);
    CHECK(opt.steps(0) == 4);
    y.copy_from(ys);
    for (int i = 0; i < 2; ++i) CHECK(net.train_step(x, y, loss, opt) == twin.train_step(xs, ys, loss, twin_opt));
    CHECK(test::snapshot(net) == test::snapshot(twin));
  }

  TEST_CASE("graphs: weight gradients beside input gradients (a second stream) change nothing, captured or not") {
    TANDEM_SKIP_WITHOUT_GPU();
    // Small stages off, so each Linear's backward is a LinearBackward with its two products; the
    // seed's are far below a wave of tiles, so they fork to the side stream.
    Context::Options options{.devices = "0,0", .fuse_small_stages = StageFusion::never};
    {
      Context probe(options);
      REQUIRE(dynamic_cast<backend::cuda::Executor &>(probe.executor(0)).overlaps_gradients());
    }
    captured_equals_issued(options, schedule::Naive{}, false); // the fork and join inside a capture
    captured_equals_issued(options, schedule::GPipe{.micro_batches = 3}, true);
    const Run beside = train(options, schedule::GPipe{.micro_batches = 3}, false);
    options.overlap_gradients = false;
    {
      Context probe(options);
      REQUIRE(!dynamic_cast<backend::cuda::Executor &>(probe.executor(0)).overlaps_gradients());
    }
    const Run serial = train(options, schedule::GPipe{.micro_batches = 3}, false);
    // The same products on two cuBLAS handles with the same settings; a missing join would show as
    // stale gradients, far beyond this tolerance.
    test::check_close(beside.losses, serial.losses, 1e-6, "losses");
    for (std::size_t i = 0; i < serial.parameters.size(); ++i)
      test::check_close(beside.parameters[i], serial.parameters[i], 1e-6, "parameter " + std::to_string(i));
  }

  TEST_CASE("graphs: fused, tuned and plain Linear epilogues all match the host backend") {
    TANDEM_SKIP_WITHOUT_GPU();
    struct Config {
      bool fused, tuned;
    };
    for (const auto [fused, tuned] : {Config{true, false}, Config{true, true}, Config{false, false}}) {
      // Small stages off: a fused stage (or network) has no Linear products for an epilogue.
      Context host({.devices = "host"}), gpu({.devices = "0,0",
                                              .fuse_epilogues = fused,
                                              .tune_products = tuned,
                                              .fuse_small_stages = StageFusion::never});
      Net on_host(host, 31), on_gpu(gpu, 31);
      for (std::size_t i = 0; i < on_host.parameters().size(); ++i)
        on_gpu.parameters()[i].copy_from(on_host.parameters()[i].to_host());
      optim::SGD a(on_host, {.lr = 0.05f, .momentum = 0.9f}), b(on_gpu, {.lr = 0.05f, .momentum = 0.9f});
      loss::CrossEntropy loss;
      std::vector<float> want, got;
      for (std::uint32_t i = 0; i < 6; ++i) {
        const auto xs = test::uniform<float>(50 * Net::in_features, 500 + i);
        const auto ys = labels_of(xs, 50);
        want.push_back(on_host.train_step(xs, ys, loss, a));
        got.push_back(on_gpu.train_step(xs, ys, loss, b));
      }
      const std::string what = tuned ? "tuned products" : fused ? "fused epilogues" : "plain epilogues";
      test::check_close(got, want, 1e-4, what + ": losses");
      for (std::size_t i = 0; i < on_host.parameters().size(); ++i)
        test::check_close(on_gpu.parameters()[i].to_host(), on_host.parameters()[i].to_host(), 1e-4,
                          what + ": parameter " + std::to_string(i));
      const auto xs = test::uniform<float>(50 * Net::in_features, 600);
      test::check_close(on_gpu.forward(xs), on_host.forward(xs), 1e-4, what + ": outputs");
    }
  }
}
