// SPDX-License-Identifier: Apache-2.0
// The seed model trained on CUDA and on the host from the same weights and data: the same
// losses, outputs and parameters (float32, TF32 off: relative error <= 1e-4), with boundary
// copies forced and not, and with both logical devices on one GPU; and a small transformer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/context.hpp"
#include "tandem/layers/causal_self_attention.hpp"
#include "tandem/layers/dropout.hpp"
#include "tandem/layers/embedding.hpp"
#include "tandem/layers/gelu.hpp"
#include "tandem/layers/layer_norm.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/layers/positional_embedding.hpp"
#include "tandem/layers/recompute.hpp"
#include "tandem/layers/relu.hpp"
#include "tandem/layers/residual.hpp"
#include "tandem/layers/sequential.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/pipeline.hpp"
#include "tandem/schedule/gpipe.hpp"
#include "tandem/schedule/interleaved_1f1b.hpp"
#include "tandem/schedule/naive.hpp"
#include "tandem/schedule/zero_bubble_h1.hpp"
#include "tandem/tensor.hpp"

namespace {

using namespace tandem;
using test::check_close;

using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>,                 // stage 0: 10 -> 20
                     Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>; // stage 1: 20 -> 2

struct Data {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};

Data make_data(std::size_t batch, std::uint32_t seed) {
  Data d{test::uniform<float>(batch * Net::in_features, seed), std::vector<std::int32_t>(batch)};
  for (std::size_t i = 0; i < batch; ++i) d.y[i] = d.x[i * Net::in_features] + d.x[i * Net::in_features + 1] > 0;
  return d;
}

// What a short training run leaves behind, to compare between backends.
struct Trace {
  std::vector<float> losses, outputs;
  std::vector<std::vector<float>> parameters;
  std::size_t transferred = 0;
};

// Starting weights: the host network's initialisation, handed to every run through copy_from so
// the comparison does not rest on both backends initialising alike.
std::vector<std::vector<float>> initial_weights() {
  Context host({.devices = "host"});
  Net net(host, 7);
  std::vector<std::vector<float>> w;
  for (const auto &p : net.parameters()) w.push_back(p.to_host());
  return w;
}

template <class Sched> Trace train(Context &ctx, const std::vector<Data> &batches, Sched sched) {
  static const auto weights = initial_weights();
  Net net(ctx, 42);
  for (std::size_t i = 0; i < weights.size(); ++i) net.parameters()[i].copy_from(weights[i]);
  optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
  loss::CrossEntropy loss;
  Trace t;
  for (const auto &b : batches) t.losses.push_back(net.train_step(b.x, b.y, loss, opt, sched));
  t.transferred = net.transferred_bytes();
  t.outputs = net.forward(batches.front().x);
  for (const auto &p : net.parameters()) t.parameters.push_back(p.to_host());
  return t;
}

// Five steps of 64 samples, then a smaller last batch (the end of an epoch).
std::vector<Data> batches() {
  std::vector<Data> b;
  for (std::uint32_t s = 0; s < 5; ++s) b.push_back(make_data(64, 100 + s));
  b.push_back(make_data(37, 200));
  return b;
}

std::size_t expected_bytes(const std::vector<Data> &b) {
  std::size_t bytes = 0;
  for (const auto &d : b) bytes += Net::boundary_bytes(d.y.size());
  return bytes;
}

template <class Sched> void compare_with_host(Context::Options options, Sched sched, bool copies) {
  Context gpu(options);
  REQUIRE(gpu.backend() == backend::Kind::cuda);
  Context host({.devices = "host"});
  const auto data = batches();
  const Trace want = train(host, data, sched);
  const Trace got = train(gpu, data, sched);
  const std::string where = "devices '" + options.devices + "', force_copies " + std::to_string(options.force_copies);
  INFO(gpu.describe());
  check_close(got.losses, want.losses, 1e-4, where + ": losses");
  check_close(got.outputs, want.outputs, 1e-4, where + ": outputs");
  REQUIRE(got.parameters.size() == want.parameters.size());
  for (std::size_t i = 0; i < got.parameters.size(); ++i)
    check_close(got.parameters[i], want.parameters[i], 1e-4, where + ": parameter " + std::to_string(i));
  // Bytes across the boundary: the seed's C = sum s_i * b * 2 per step where a copy is made.
  CHECK(got.transferred == (copies ? expected_bytes(data) : 0));
}

bool two_gpus() { return backend::cuda::device_count() >= 2; }

// A small GPT over two stages: every transformer operation's CUDA body inside a pipeline.
constexpr std::size_t V = 13, T = 4, D = 8;
using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, 2, T>>;
using Mlp = Residual<LayerNorm<D>, Linear<D, 2 * D>, GELU, Dropout<20>, Linear<2 * D, D>>;
using Gpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn>,
                     Stage<Device<1>, Mlp, LayerNorm<D>, Linear<D, V>>>;

// The GPT with its blocks recomputed in the backward, and its twin that keeps their activations.
template <template <class...> class Chain>
using ChainGpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Chain<Attn>>,
                          Stage<Device<1>, Chain<Mlp, Attn>, LayerNorm<D>, Linear<D, V>>>;

template <class Net = Gpt> Trace train_gpt(Context &ctx) {
  Context host({.devices = "host"});
  Net init(host, 3), net(ctx, 3);
  for (std::size_t i = 0; i < init.parameters().size(); ++i)
    net.parameters()[i].copy_from(init.parameters()[i].to_host());
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
  Trace t;
  const auto x = test::labels(6 * T, V, 1), y = test::labels(6 * T, V, 2);
  for (int step = 0; step < 3; ++step)
    t.losses.push_back(net.train_step(x, y, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 3}));
  t.outputs = net.forward(x);
  for (const auto &p : net.parameters()) t.parameters.push_back(p.to_host());
  return t;
}

} // namespace

TEST_SUITE("gpu") {
  // TANDEM_DEVICES, when set, wins over the options below: these cases then all run its mapping.
  TEST_CASE("pipeline: both logical devices on GPU 0 without copies match the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    compare_with_host({.devices = "0,0"}, schedule::Naive{}, false);
  }

  TEST_CASE("pipeline: both logical devices on GPU 0 with forced copies match the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    compare_with_host({.devices = "0,0", .force_copies = true}, schedule::Naive{}, true);
  }

  TEST_CASE("pipeline: GPipe micro-batches on one GPU match the host with and without copies") {
    TANDEM_SKIP_WITHOUT_GPU();
    // 4 micro-batches do not divide the last batch of 37 evenly.
    compare_with_host({.devices = "0,0", .force_copies = true}, schedule::GPipe{.micro_batches = 4}, true);
    compare_with_host({.devices = "0,0"}, schedule::GPipe{.micro_batches = 4}, false);
  }

  TEST_CASE("pipeline: split backwards (ZB-H1) and per-device orders on one GPU match the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    // (stage 1's Linear, ReLU, Linear runs layer by layer when split: no ReLU hand-off)
    compare_with_host({.devices = "0,0", .force_copies = true}, schedule::ZeroBubbleH1{.micro_batches = 4}, true);
    compare_with_host({.devices = "0,0"}, schedule::ZeroBubbleH1{.micro_batches = 4}, false);
    compare_with_host({.devices = "0,0"}, schedule::Interleaved1F1B{.micro_batches = 4}, false);
  }

  TEST_CASE("pipeline: the default mapping matches the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    // One GPU: both stages share it and nothing is copied; two: a peer (or staged) copy.
    compare_with_host(Context::Options{}, schedule::Naive{}, two_gpus());
    compare_with_host(Context::Options{}, schedule::GPipe{.micro_batches = 3}, two_gpus());
  }

  TEST_CASE("pipeline: a transformer with Dropout trains on the GPU as on the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context gpu({.devices = "0,0", .force_copies = true}), host({.devices = "host"});
    const Trace want = train_gpt(host), got = train_gpt(gpu);
    check_close(got.losses, want.losses, 1e-4, "transformer: losses");
    check_close(got.outputs, want.outputs, 1e-4, "transformer: outputs");
    for (std::size_t i = 0; i < got.parameters.size(); ++i)
      check_close(got.parameters[i], want.parameters[i], 1e-4, "transformer: parameter " + std::to_string(i));
  }

  TEST_CASE("pipeline: the memory plan is what a GPU step allocates, and one byte less fails") {
    TANDEM_SKIP_WITHOUT_GPU();
    const auto sched = schedule::GPipe{.micro_batches = 3};
    const optim::SGDOptions options{.lr = 0.1f, .momentum = 0.9f};
    constexpr auto plan =
        Gpt::memory_plan(6 * T, schedule::GPipe{.micro_batches = 3}, optim::SGDOptions{.lr = 0.1f, .momentum = 0.9f});
    const auto x = test::labels(6 * T, V, 1), y = test::labels(6 * T, V, 2);
    for (const std::size_t shortfall : {0, 1}) {
      Context ctx({.devices = "0,0",
                   .force_copies = true,
                   .device_memory = {plan.device_bytes(0), plan.device_bytes(1) - shortfall}});
      Gpt net(ctx, 3);
      optim::SGD opt(net, options);
      if (shortfall) {
        CHECK_THROWS_AS((void)net.train_step(x, y, loss::CrossEntropy{}, opt, sched), Error);
        continue;
      }
      (void)net.train_step(x, y, loss::CrossEntropy{}, opt, sched);
      CHECK(ctx.bytes_in_use(0) == plan.device_bytes(0));
      CHECK(ctx.bytes_in_use(1) == plan.device_bytes(1));
    }
  }

  TEST_CASE("pipeline: Recompute trains on the GPU bit for bit as Sequential") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context gpu({.devices = "0,0", .force_copies = true});
    const Trace kept = train_gpt<ChainGpt<Sequential>>(gpu), recomputed = train_gpt<ChainGpt<Recompute>>(gpu);
    CHECK(recomputed.losses == kept.losses);
    CHECK(recomputed.outputs == kept.outputs);
    CHECK(recomputed.parameters == kept.parameters);
  }

  TEST_CASE("pipeline: describe() tells the mapping") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context ctx({.devices = "0,0"});
    Net net(ctx, 1);
    CHECK(ctx.describe() == "Device<0> -> cuda:0\nDevice<1> -> cuda:0 (shared with Device<0>)\n");
  }

  TEST_CASE("pipeline: a steady-state step allocates nothing and gives the same loss every time") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context ctx({.devices = "0,0", .force_copies = true});
    Net net(ctx, 3);
    optim::SGD opt(net, {.lr = 0.0f}); // lr 0: the weights stay, so the loss must repeat exactly
    loss::CrossEntropy loss;
    const auto d = make_data(64, 9);
    const auto sched = schedule::GPipe{.micro_batches = 4};
    const float first = net.train_step(d.x, d.y, loss, opt, sched);
    auto allocations = [&] {
      std::size_t n = 0;
      for (std::size_t logical : {0, 1})
        n += dynamic_cast<backend::cuda::Executor &>(ctx.executor(logical)).allocations();
      return n;
    };
    const std::size_t before = allocations();
    for (int i = 0; i < 3; ++i) CHECK(net.train_step(d.x, d.y, loss, opt, sched) == first);
    CHECK(allocations() == before);
  }

  TEST_CASE("pipeline: small stages past the rows a fused backward takes match the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    // 1100 rows: each stage's forward is one fused operation, its backward one operation per
    // layer (op::small_rows is 1024). Stage 1's last Linear then takes the ReLU's backward with no
    // mask, since the fused forward kept none. Another network ran on the executors first, whose
    // forward did keep masks, in buffers since freed: no address may be taken for a mask of now.
    Context host({.devices = "host"}), gpu({.devices = "0,0"});
    using Wide =
        Pipeline<Stage<Device<0>, Linear<10, 80>, ReLU>, Stage<Device<1>, Linear<80, 10>, ReLU, Linear<10, 2>>>;
    {
      Wide wide(gpu, 2); // 80 wide: not a small stage, so its forward keeps the ReLU's mask
      optim::SGD opt(wide, {.lr = 0.05f});
      const auto d = make_data(1100, 12);
      wide.train_step(d.x, d.y, loss::CrossEntropy{}, opt);
    }
    Net on_host(host, 13), on_gpu(gpu, 13);
    for (std::size_t i = 0; i < on_host.parameters().size(); ++i)
      on_gpu.parameters()[i].copy_from(on_host.parameters()[i].to_host());
    optim::SGD a(on_host, {.lr = 0.05f}), b(on_gpu, {.lr = 0.05f});
    loss::CrossEntropy loss;
    for (std::uint32_t i = 0; i < 3; ++i) {
      const auto d = make_data(1100, 20 + i);
      const float want = on_host.train_step(d.x, d.y, loss, a);
      check_close(std::vector<float>{on_gpu.train_step(d.x, d.y, loss, b)}, std::vector<float>{want}, 1e-4, "loss");
    }
    for (std::size_t i = 0; i < on_host.parameters().size(); ++i)
      check_close(on_gpu.parameters()[i].to_host(), on_host.parameters()[i].to_host(), 1e-4,
                  "parameter " + std::to_string(i));
  }

  TEST_CASE("pipeline: training from device tensors equals training from host data") {
    TANDEM_SKIP_WITHOUT_GPU();
    Context ctx({.devices = "0,0", .force_copies = true});
    Net from_host(ctx, 5), from_tensors(ctx, 5);
    optim::SGD a(from_host, {.lr = 0.05f}), b(from_tensors, {.lr = 0.05f});
    loss::CrossEntropy loss;
    const auto d = make_data(48, 11);
    const Tensor<float> x(ctx, 0, 48, Net::in_features, d.x);
    const Tensor<std::int32_t> y(ctx, 1, 48, 1, d.y);
    for (int i = 0; i < 3; ++i) {
      // Same kernels on the same data: equal, not just close.
      CHECK(from_host.train_step(d.x, d.y, loss, a) == from_tensors.train_step(x, y, loss, b));
      CHECK(from_host.train_step(d.x, d.y, loss, a, schedule::GPipe{.micro_batches = 5}) ==
            from_tensors.train_step(x, y, loss, b, schedule::GPipe{.micro_batches = 5}));
    }
    Tensor<float> out(ctx, 1, 48, Net::out_features);
    from_tensors.forward(x, out);
    CHECK(out.to_host() == from_host.forward(d.x));
  }
}
