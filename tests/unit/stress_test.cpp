// SPDX-License-Identifier: Apache-2.0
// Reliability under misuse and faults (label stress; scripts/sanitize.sh runs it under
// AddressSanitizer, UBSan and ThreadSanitizer): any order of destruction, threads training their
// own networks on shared and separate Contexts, out of memory on demand, shapes and size overflow.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<6, 12>, ReLU>, Stage<Device<1>, Linear<12, 3>>>;
// The other way round over the same two devices: networks of both kinds share both executors.
using Reversed = Pipeline<Stage<Device<1>, Linear<6, 10>, Tanh>, Stage<Device<0>, Linear<10, 3>>>;
constexpr std::size_t batch = 16;

std::vector<float> batch_x(std::uint64_t k) { return test::uniform<float>(batch * Net::in_features, 900 + k); }
std::vector<std::int32_t> batch_y(std::uint64_t k) { return test::labels(batch, Net::out_features, 950 + k); }

bool message_has(const Error &e, const std::string &part) {
  return std::string(e.what()).find(part) != std::string::npos;
}
} // namespace

TEST_SUITE("stress") {

  // Every order of destroying the context, a network, its two optimizers (SGD with momentum and Adam,
  // both with state on the devices), device tensors and a copied parameter handle, with a step still
  // in flight; after each destruction the survivors are used: what can still work works, what lost
  // its memory throws Error. AddressSanitizer (scripts/sanitize.sh) sees any freed memory touched.
  TEST_CASE("any order of destruction leaves nothing touching freed memory") {
    enum Object { context, network, sgd, adam, tensors, parameter, count };
    std::array<int, count> order{context, network, sgd, adam, tensors, parameter};
    const auto xs = batch_x(0);
    const auto ys = batch_y(0);
    loss::CrossEntropy ce;
    std::size_t orders = 0;
    do {
      auto ctx = std::make_unique<Context>(ContextOptions{.devices = "host"});
      auto net = std::make_unique<Net>(*ctx, 3);
      auto momentum = std::make_unique<optim::SGD>(*net, optim::SGDOptions{.lr = 0.1f, .momentum = 0.9f});
      auto adaptive = std::make_unique<optim::Adam>(*net, optim::AdamOptions{.lr = 0.01f});
      auto x = std::make_unique<Tensor<float>>(*ctx, Device<0>{}, batch, Net::in_features, xs);
      auto y = std::make_unique<Tensor<std::int32_t>>(*ctx, Device<1>{}, batch, 1, ys);
      auto weight = std::make_unique<Parameter<float>>(net->parameters()[0]);
      CHECK(std::isfinite(net->train_step(*x, *y, ce, *momentum)));
      const PendingLoss<float> in_flight = net->train_step_async(*x, *y, ce, *adaptive);
      for (const int o : order) {
        switch (o) {
        case context: ctx.reset(); break;
        case network: net.reset(); break;
        case sgd: momentum.reset(); break;
        case adam: adaptive.reset(); break;
        case tensors: x.reset(), y.reset(); break;
        case parameter: weight.reset(); break;
        }
        if (weight) {
          if (net) CHECK(weight->to_host().size() == 12 * 6);
          else CHECK_THROWS_AS(weight->to_host(), Error);
        }
        if (x) CHECK(x->to_host() == xs);
        if (y) CHECK(y->to_host() == ys);
        if (momentum && !net) CHECK_THROWS_AS(momentum->step(), Error);
        if (adaptive && !net) CHECK_THROWS_AS(adaptive->step(), Error);
        if (net) { // also after its Context is gone
          if (momentum) CHECK(std::isfinite(net->train_step(xs, ys, ce, *momentum)));
          CHECK(std::isfinite(net->forward(std::span<const float>(xs))[0]));
        }
      }
      CHECK(std::isfinite(in_flight.get())); // completed by whatever went first
      ++orders;
    } while (std::next_permutation(order.begin(), order.end()));
    CHECK(orders == 720);
  }

  namespace {
  // One network's training, as one thread does it: host data and device tensors, train_step and
  // train_step_async, SGD and Adam; returns its losses, then every parameter.
  template <class N> std::vector<std::vector<float>> train_alone(Context &ctx, std::uint64_t seed, std::size_t steps) {
    N net(ctx, seed);
    optim::SGD sgd(net, {.lr = 0.05f, .momentum = 0.9f});
    optim::Adam adam(net, {.lr = 0.01f});
    loss::CrossEntropy ce;
    const auto tx = test::uniform<float>(batch * N::in_features, seed);
    const auto ty = test::labels(batch, N::out_features, seed + 1);
    const Tensor<float> x(ctx, N::template stage<0>::device_index, batch, N::in_features, tx);
    const Tensor<std::int32_t> y(ctx, N::template stage<N::num_stages - 1>::device_index, batch, 1, ty);
    std::vector<float> losses;
    for (std::size_t k = 0; k < steps; ++k) {
      const auto hx = test::uniform<float>(batch * N::in_features, seed * 1000 + k);
      const auto hy = test::labels(batch, N::out_features, seed * 1000 + k + 7);
      switch (k % 3) {
      case 0: losses.push_back(net.train_step(hx, hy, ce, sgd, schedule::GPipe{.micro_batches = 2})); break;
      case 1: losses.push_back(net.train_step_async(x, y, ce, adam).get()); break;
      case 2: {
        auto pending = net.train_step_async(hx, hy, ce, sgd, schedule::OneFOneB{.micro_batches = 4});
        losses.push_back(pending.get());
        break;
      }
      }
    }
    auto values = test::snapshot(net);
    values.push_back(losses);
    return values;
  }

  // Runs `threads` trainings at once (each its own network: even ones Net, odd ones Reversed) on one
  // shared Context or on a Context each, and checks them against the same trainings run one after
  // another, bit for bit.
  void train_in_threads(std::size_t threads, bool shared, HostExecution where) {
    constexpr std::size_t steps = 24;
    const ContextOptions options{.devices = "host", .host_execution = where};
    auto one = [&](Context &ctx, std::size_t t) {
      return t % 2 ? train_alone<Reversed>(ctx, 40 + t, steps) : train_alone<Net>(ctx, 40 + t, steps);
    };
    std::vector<std::vector<std::vector<float>>> expected, got(threads);
    for (std::size_t t = 0; t < threads; ++t) {
      Context ctx(options);
      expected.push_back(one(ctx, t));
    }
    std::optional<Context> common;
    if (shared) common.emplace(options);
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        if (shared) {
          got[t] = one(*common, t);
        } else {
          Context own(options);
          got[t] = one(own, t);
        }
      });
    for (auto &th : pool) th.join();
    for (std::size_t t = 0; t < threads; ++t) {
      CAPTURE(t);
      CHECK(got[t] == expected[t]);
    }
  }
  } // namespace

  TEST_CASE("threads train their own networks on shared and separate Contexts, as they would one by one") {
    for (const auto where : {HostExecution::automatic, HostExecution::workers, HostExecution::calling_thread})
      for (const std::size_t threads : {2, 4})
        for (const bool shared : {true, false}) {
          CAPTURE(static_cast<int>(where));
          CAPTURE(threads);
          CAPTURE(shared);
          train_in_threads(threads, shared, where);
        }
  }

  TEST_CASE("threads share a network's reads and its tensors' copies with another's steps") {
    // One thread steps, another reads parameters and copies tensors of the same Context meanwhile:
    // every read sees the parameters of a whole number of steps.
    Context ctx({.devices = "host"});
    Net net(ctx, 5);
    optim::SGD opt(net, {.lr = 0.1f});
    loss::CrossEntropy ce;
    const auto xs = batch_x(1);
    const auto ys = batch_y(1);
    Tensor<float> scratch(ctx, Device<1>{}, 4, 4);
    const auto values = test::uniform<float>(16, 77);
    std::thread reader([&] {
      for (int i = 0; i < 50; ++i) {
        CHECK(net.parameters()[2].to_host().size() == 3 * 12);
        scratch.copy_from(values);
        CHECK(scratch.to_host() == values);
      }
    });
    for (int k = 0; k < 50; ++k) net.train_step_async(xs, ys, ce, opt);
    reader.join();
    CHECK(std::isfinite(net.train_step(xs, ys, ce, opt)));
  }

  TEST_CASE("a step that runs out of memory fails with Error, and the next one trains as if it had not been") {
    const auto xs = batch_x(2);
    const auto ys = batch_y(2);
    loss::CrossEntropy ce;
    Context ctx({.devices = "host"});
    Net net(ctx, 9);
    optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
    const auto before = test::snapshot(net);
    {
      // A micro-batch's buffers are batch x 12 floats on the first stage: more than the limit.
      const backend::ScopedAllocationLimit limit(batch * 12 * sizeof(float) - 1);
      try {
        net.train_step(xs, ys, ce, opt);
        FAIL("the step should have run out of memory");
      } catch (const Error &e) {
        CHECK(message_has(e, "out of memory"));
        CHECK(message_has(e, "allocation limit"));
      }
    }
    CHECK(test::snapshot(net) == before); // nothing changed
    CHECK(opt.steps(0) == 0);
    const float loss = net.train_step(xs, ys, ce, opt);
    // The same step on a network that never ran out of memory.
    Context ref_ctx({.devices = "host"});
    Net ref(ref_ctx, 9);
    optim::SGD ref_opt(ref, {.lr = 0.1f, .momentum = 0.9f});
    CHECK(loss == ref.train_step(xs, ys, ce, ref_opt));
    CHECK(test::snapshot(net) == test::snapshot(ref));
  }

  TEST_CASE("every allocation of making a network and reading it back fails as Error, never std::bad_alloc") {
    Context ctx({.devices = "host"});
    // Making a network: fail its 1st, 2nd, ... allocation (device buffers, the host copy of the
    // initial parameters, upload copies) until one attempt makes none fail.
    std::size_t failures = 0;
    for (std::size_t n = 1;; ++n) {
      backend::fail_allocation_after(n);
      try {
        Net net(ctx, 1);
        backend::fail_allocation_after(0);
        break;
      } catch (const Error &e) {
        CHECK(message_has(e, "out of memory"));
        ++failures;
      }
      REQUIRE(n < 100);
    }
    CHECK(failures >= 3); // at least parameters, gradients, and the host copy of the initial values
    Net net(ctx, 1);
    const auto xs = batch_x(3);
    Tensor<float> x(ctx, Device<0>{}, batch, Net::in_features, xs);
    backend::fail_allocation_after(1);
    CHECK_THROWS_AS(net.parameters()[0].to_host(), Error);
    backend::fail_allocation_after(1);
    CHECK_THROWS_AS(x.to_host(), Error);
    backend::fail_allocation_after(1);
    CHECK_THROWS_AS(net.forward(std::span<const float>(xs)), Error);
    backend::fail_allocation_after(0);
    CHECK(x.to_host() == xs); // and all still works
    // A network far too large for any machine: Error naming the bytes, not std::bad_alloc.
    try {
      Pipeline<Stage<Device<0>, Linear<(std::size_t{1} << 29), (std::size_t{1} << 30)>>> huge(ctx, 1);
      FAIL("a network of 2^59 parameters was made");
    } catch (const Error &e) {
      CHECK(message_has(e, "out of memory"));
    }
  }

  TEST_CASE("device tensors are checked by shape, not by count, and sizes that overflow are refused") {
    Context ctx({.devices = "host"});
    Net net(ctx, 2);
    optim::SGD opt(net, {.lr = 0.1f});
    loss::CrossEntropy ce;
    const auto xs = batch_x(4);
    const auto ys = batch_y(4);
    const auto before = test::snapshot(net);
    // (8, 12) holds as many values as (16, 6), the right input.
    const Tensor<float> wrong_x(ctx, Device<0>{}, batch / 2, 2 * Net::in_features, xs);
    const Tensor<float> x(ctx, Device<0>{}, batch, Net::in_features, xs);
    const Tensor<std::int32_t> row_labels(ctx, Device<1>{}, 1, batch, ys); // (1, 16): no 16 labels
    const Tensor<std::int32_t> y(ctx, Device<1>{}, batch, 1, ys);
    try {
      net.train_step(wrong_x, y, ce, opt);
      FAIL("a (8, 12) input was taken for (16, 6)");
    } catch (const Error &e) {
      CHECK(message_has(e, "8 x 12"));
    }
    CHECK_THROWS_AS(net.train_step(x, row_labels, ce, opt), Error);
    CHECK_THROWS_AS(net.forward_backward(x, row_labels, ce), Error);
    Tensor<float> out(ctx, Device<1>{}, batch, Net::out_features);
    CHECK_THROWS_AS(net.forward(wrong_x, out), Error);
    CHECK(test::snapshot(net) == before);
    // MSE's targets are (batch, out_features), not any array of as many values.
    const auto targets = test::uniform<float>(batch * Net::out_features, 5);
    const Tensor<float> flat(ctx, Device<1>{}, batch * Net::out_features, 1, targets);
    const Tensor<float> good(ctx, Device<1>{}, batch, Net::out_features, targets);
    CHECK_THROWS_AS(net.train_step(x, flat, loss::MSE{}, opt), Error);
    CHECK(test::snapshot(net) == before);
    CHECK(std::isfinite(net.train_step(x, good, loss::MSE{}, opt)));
    CHECK(std::isfinite(net.train_step(x, y, ce, opt)));
    // rows * cols (and its bytes) must not wrap: 2^63 + 64 rows of 10 would be 640 values.
    const std::size_t huge = (std::size_t{1} << 63) + 64;
    CHECK_THROWS_AS(Tensor<float>(ctx, Device<0>{}, huge, 10), Error);
    CHECK_THROWS_AS(Tensor<float>(ctx, Device<0>{}, std::size_t{1} << 62, 1), Error); // 2^64 bytes
    CHECK_THROWS_AS(Net::boundary_bytes(std::numeric_limits<std::size_t>::max() / 8), Error);
    CHECK(Net::boundary_bytes(batch) == 12 * batch * 2 * sizeof(float));
  }

} // TEST_SUITE("stress")
