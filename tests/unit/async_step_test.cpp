// SPDX-License-Identifier: Apache-2.0
// train_step_async and PendingLoss: the same numbers as train_step, the loss on request, at most
// one step in flight, and errors that reach get() with nothing changed.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<6, 14>, ReLU>, Stage<Device<1>, Linear<14, 10>, Tanh>,
                     Stage<Device<2>, Linear<10, 3>>>;
constexpr std::size_t batch = 21;

std::vector<float> batch_x(std::uint64_t k) { return test::uniform<float>(batch * Net::in_features, 500 + k); }
std::vector<std::int32_t> batch_y(std::uint64_t k) { return test::labels(batch, Net::out_features, 600 + k); }

// Losses of 4 steps and the parameters after them, each step's loss read the way `read` says.
template <class Step> std::vector<std::vector<float>> train(HostExecution where, Step &&step) {
  Context ctx({.devices = "host", .host_execution = where});
  Net net(ctx, 8);
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  std::vector<float> losses = step(net, opt, ce);
  auto values = test::snapshot(net);
  values.push_back(losses);
  return values;
}
} // namespace

TEST_CASE("train_step_async gives train_step's losses and parameters, bit for bit") {
  for (const auto where : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(where));
    const auto sync = train(where, [](Net &net, optim::SGD &opt, loss::CrossEntropy &ce) {
      std::vector<float> losses;
      for (std::uint64_t k = 0; k < 4; ++k)
        losses.push_back(net.train_step(batch_x(k), batch_y(k), ce, opt, schedule::GPipe{.micro_batches = 3}));
      return losses;
    });
    // Issued back to back, the losses read only at the end: each call completes the step before.
    const auto async = train(where, [](Net &net, optim::SGD &opt, loss::CrossEntropy &ce) {
      std::vector<PendingLoss<float>> pending;
      for (std::uint64_t k = 0; k < 4; ++k) {
        pending.push_back(net.train_step_async(batch_x(k), batch_y(k), ce, opt, schedule::GPipe{.micro_batches = 3}));
        if (k > 0) CHECK(pending[k - 1].ready()); // completed by this call, before it issued
      }
      std::vector<float> losses;
      for (const auto &p : pending) losses.push_back(p.get());
      CHECK(pending.back().get() == losses.back()); // get() may be asked again
      return losses;
    });
    CHECK(async == sync);
  }
}

TEST_CASE("host data may change as soon as train_step_async returns") {
  const auto run = [](bool scribble) {
    Context ctx({.devices = "host", .host_execution = HostExecution::workers});
    Net net(ctx, 2);
    optim::SGD opt(net, {.lr = 0.1f});
    loss::CrossEntropy ce;
    std::vector<float> losses;
    for (std::uint64_t k = 0; k < 3; ++k) {
      auto x = batch_x(k);
      auto y = batch_y(k);
      const auto pending = net.train_step_async(x, y, ce, opt);
      if (scribble) { // the caller reuses its buffers for the next batch at once
        std::fill(x.begin(), x.end(), std::numeric_limits<float>::quiet_NaN());
        std::fill(y.begin(), y.end(), 99);
      }
      losses.push_back(pending.get());
    }
    auto values = test::snapshot(net);
    values.push_back(losses);
    return values;
  };
  const auto clean = run(false);
  CHECK(std::isfinite(clean.back().front()));
  CHECK(run(true) == clean);
}

TEST_CASE("a bad label found on the device reaches get(), and the step changes nothing") {
  Context ctx({.devices = "host"});
  Net net(ctx, 3);
  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const Tensor<float> x(ctx, 0, batch, Net::in_features, batch_x(0));
  const Tensor<std::int32_t> good(ctx, 2, batch, 1, batch_y(0));
  auto y = batch_y(1);
  y[4] = 3;
  const Tensor<std::int32_t> bad(ctx, 2, batch, 1, y);
  REQUIRE(std::isfinite(net.train_step_async(x, good, ce, opt).get()));
  const auto before = test::snapshot(net);

  // Completed by get().
  const auto first = net.train_step_async(x, bad, ce, opt);
  CHECK_THROWS_WITH_AS(first.get(), doctest::Contains("label 4 is 3, outside [0, 3)"), Error);
  CHECK_THROWS_AS(first.get(), Error); // each time it is asked
  CHECK(opt.steps(0) == 1);
  CHECK(test::snapshot(net) == before);

  // Completed by the next step, whose update then starts from the same state as the first good one.
  const auto second = net.train_step_async(x, bad, ce, opt);
  const auto after = net.train_step_async(x, good, ce, opt);
  CHECK(second.ready());
  CHECK_THROWS_AS(second.get(), Error);
  CHECK(std::isfinite(after.get()));
  CHECK(opt.steps(0) == 2);
}

TEST_CASE("an optimizer or a network that goes first completes the step in flight") {
  Context ctx({.devices = "host", .host_execution = HostExecution::workers});
  const auto x = batch_x(0);
  const auto y = batch_y(0);
  loss::CrossEntropy ce;
  PendingLoss<float> from_optimizer, from_network;
  auto net = std::make_unique<Net>(ctx, 4);
  {
    optim::Adam opt(*net, {.lr = 1e-2f});
    from_optimizer = net->train_step_async(x, y, ce, opt);
  } // Adam's moments are freed here: the step had to finish first
  CHECK(from_optimizer.ready());
  optim::SGD opt(*net, {.lr = 0.1f});
  from_network = net->train_step_async(x, y, ce, opt);
  net.reset();
  CHECK(from_network.ready());
  CHECK(std::isfinite(from_optimizer.get()));
  CHECK(std::isfinite(from_network.get()));
  CHECK_THROWS_WITH_AS(PendingLoss<float>{}.get(), doctest::Contains("refers to no step"), Error);
}

TEST_CASE("with check_finite the step completes before train_step_async returns") {
  Context ctx({.devices = "host", .host_execution = HostExecution::workers, .check_finite = true});
  Net net(ctx, 5);
  optim::SGD opt(net, {.lr = 0.1f});
  loss::CrossEntropy ce;
  const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, opt);
  CHECK(pending.ready());
  CHECK(opt.steps(0) == 1);
}

TEST_CASE("ready() becomes true once the devices are done, so a loop may poll it") {
  for (const auto where : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(where));
    Context ctx({.devices = "host", .host_execution = where});
    Net net(ctx, 6), twin(ctx, 6);
    optim::SGD opt(net, {.lr = 0.1f}), twin_opt(twin, {.lr = 0.1f});
    loss::CrossEntropy ce;
    const float want = twin.train_step(batch_x(0), batch_y(0), ce, twin_opt, schedule::GPipe{.micro_batches = 3});
    const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, opt, schedule::GPipe{.micro_batches = 3});
    // Nothing else touches the network: only the step finishing can make ready() true.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool ready = false;
    while (!(ready = pending.ready()) && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    REQUIRE(ready);
    CHECK(pending.get() == want);
    CHECK(test::snapshot(net) == test::snapshot(twin));

    // A bad label: ready() too, and get() throws with the update undone.
    auto y = batch_y(1);
    y[2] = -1;
    const Tensor<std::int32_t> bad(ctx, 2, batch, 1, y);
    const Tensor<float> x(ctx, 0, batch, Net::in_features, batch_x(1));
    const auto failing = net.train_step_async(x, bad, ce, opt);
    while (!failing.ready() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    REQUIRE(failing.ready());
    CHECK_THROWS_AS(failing.get(), Error);
    CHECK(opt.steps(0) == 1);
    CHECK(test::snapshot(net) == test::snapshot(twin));
  }
}

TEST_CASE("moving an optimizer completes the step in flight, whose bad label then undoes the right count") {
  Context ctx({.devices = "host", .host_execution = HostExecution::workers});
  Net net(ctx, 7);
  loss::CrossEntropy ce;
  const Tensor<float> x(ctx, 0, batch, Net::in_features, batch_x(0));
  auto y = batch_y(0);
  y[0] = 7;
  const Tensor<std::int32_t> bad(ctx, 2, batch, 1, y);
  const auto before = test::snapshot(net);

  optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
  const auto pending = net.train_step_async(x, bad, ce, opt);
  optim::SGD moved(std::move(opt)); // completes the step first: its count is undone on `opt`, then moved
  CHECK_THROWS_AS(pending.get(), Error);
  CHECK(moved.steps(0) == 0); // undone on the optimizer that holds the state now
  CHECK(test::snapshot(net) == before);
  // What was moved from trains nothing; it says so rather than reaching for state it gave away.
  CHECK_THROWS_WITH_AS(net.train_step(batch_x(0), batch_y(0), ce, opt), doctest::Contains("another network"), Error);

  optim::Adam adam(net, {.lr = 1e-2f});
  const auto second = net.train_step_async(x, bad, ce, adam);
  optim::Adam assigned(net, {.lr = 1e-3f});
  assigned = std::move(adam);
  CHECK_THROWS_AS(second.get(), Error);
  CHECK(assigned.steps(0) == 0);
  CHECK(assigned.options().lr == 1e-2f);
  CHECK(test::snapshot(net) == before);
  // The moved state trains on: its first step seeds nothing stale.
  CHECK(std::isfinite(net.train_step(batch_x(1), batch_y(1), ce, assigned)));
  CHECK(assigned.steps(0) == 1);
}

namespace {
// A Tanh whose forward fails while `fail` is set, as a device fault would: the task throws on its
// executor, and the step's completion reports it.
struct FailingTanh : Tanh {
  static inline bool fail = false;
  template <class T> static void forward(backend::Executor &ex, const LayerForward<T> &f) {
    if (fail) throw Error("FailingTanh: failed on purpose");
    Tanh::forward(ex, f);
  }
};
} // namespace

TEST_CASE("reading a parameter completes the step in flight, whose failure stays with its PendingLoss") {
  using Failing = Pipeline<Stage<Device<0>, Linear<6, 14>, FailingTanh>, Stage<Device<1>, Linear<14, 3>>>;
  for (const auto where : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(where));
    Context ctx({.devices = "host", .host_execution = where});
    Failing net(ctx, 9);
    optim::SGD opt(net, {.lr = 0.1f});
    loss::CrossEntropy ce;
    FailingTanh::fail = true;
    const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, opt);
    CHECK_NOTHROW(net.parameters()[0].to_host()); // not this call's failure
    FailingTanh::fail = false;
    CHECK(pending.ready());
    CHECK_THROWS_WITH_AS(pending.get(), doctest::Contains("failed on purpose"), Error);
    CHECK_NOTHROW(net.train_step(batch_x(1), batch_y(1), ce, opt)); // no failure left over
  }
}

TEST_CASE("whatever else waits on a device completes the step in flight there, whose failure stays with its "
          "PendingLoss") {
  // Bystanders on the failing network's devices: a Tensor read and write, another network's
  // step, inference and construction, and that network's optimizer stepped by hand. Each would
  // otherwise take the failure waiting on the device and throw it as its own.
  using Failing = Pipeline<Stage<Device<0>, Linear<6, 14>, FailingTanh>, Stage<Device<1>, Linear<14, 3>>>;
  using Other = Pipeline<Stage<Device<0>, Linear<6, 3>>>; // where the failure waits
  for (const auto where : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(where));
    Context ctx({.devices = "host", .host_execution = where});
    Failing net(ctx, 9);
    optim::SGD opt(net, {.lr = 0.1f});
    Other other(ctx, 10);
    optim::SGD other_opt(other, {.lr = 0.1f});
    loss::CrossEntropy ce;
    const std::vector<float> values = test::uniform<float>(6, 11);
    Tensor<float> tensor(ctx, Device<0>{}, 1, 6, values);
    const std::vector<std::pair<std::string, std::function<void()>>> bystanders = {
        {"Tensor::to_host", [&] { CHECK(tensor.to_host() == values); }},
        {"Tensor::copy_from", [&] { tensor.copy_from(values); }},
        {"another network's train_step",
         [&] { CHECK(std::isfinite(other.train_step(batch_x(2), batch_y(2), ce, other_opt))); }},
        {"another network's forward", [&] { CHECK(other.forward(batch_x(3)).size() == batch * 3); }},
        {"another network's optimizer by hand", [&] { other_opt.step(); }},
        {"a new network", [&] { Other built(ctx, 12); }},
    };
    for (const auto &[what, bystander] : bystanders) {
      CAPTURE(what);
      FailingTanh::fail = true;
      const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, opt);
      CHECK_NOTHROW(bystander());
      FailingTanh::fail = false;
      CHECK(pending.ready());
      CHECK_THROWS_WITH_AS(pending.get(), doctest::Contains("failed on purpose"), Error);
    }
    { // and another network destroyed, which waits on the device before it frees its memory
      auto doomed = std::make_unique<Other>(ctx, 13);
      FailingTanh::fail = true;
      const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, opt);
      CHECK_NOTHROW(doomed.reset());
      FailingTanh::fail = false;
      CHECK_THROWS_WITH_AS(pending.get(), doctest::Contains("failed on purpose"), Error);
    }
    CHECK_NOTHROW(net.train_step(batch_x(1), batch_y(1), ce, opt)); // no failure left over
  }
}

TEST_CASE("an optimizer without device state may outlive its network and the Context") {
  // Plain SGD keeps nothing on the devices; destroying it afterwards touches none of them.
  std::optional<optim::SGD> opt;
  {
    Context ctx({.devices = "host"});
    Net net(ctx, 5);
    opt.emplace(net, optim::SGD::Options{.lr = 0.1f});
    loss::CrossEntropy ce;
    const auto pending = net.train_step_async(batch_x(0), batch_y(0), ce, *opt);
    CHECK(std::isfinite(pending.get()));
  }
  CHECK(opt->steps(0) == 1);
  opt.reset();
}
