// SPDX-License-Identifier: Apache-2.0
// Where host work runs (ContextOptions::host_execution): on worker threads or on the calling
// thread, with the same results and the same failure semantics either way.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"
#include "../support/scoped_env.hpp"

using namespace tandem;

namespace {
// The suite also runs as a whole with TANDEM_HOST_EXECUTION=workers (ctest's unit.workers), so
// tests of the option itself clear it first.
struct ScopedHostExecution : test::ScopedEnv {
  explicit ScopedHostExecution(const char *value) : ScopedEnv("TANDEM_HOST_EXECUTION", value) {}
};

using Net = Pipeline<Stage<Device<0>, Linear<7, 12>, Tanh>, Stage<Device<1>, Linear<12, 9>, ReLU, Linear<9, 4>>>;

// The thread that runs work submitted to logical device 0 now.
std::thread::id runner_of(Context &ctx) {
  auto &ex = ctx.executor(0);
  std::thread::id id;
  ex.submit([&] { id = std::this_thread::get_id(); });
  ex.synchronize();
  return id;
}

template <class Sched> std::vector<std::vector<float>> train(HostExecution where, const Sched &sched) {
  Context ctx({.devices = "host", .host_execution = where});
  Net net(ctx, 5);
  optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
  loss::CrossEntropy loss;
  for (std::uint64_t i = 0; i < 3; ++i) {
    const std::size_t batch = 29 - 6 * i; // a batch that changes, uneven micro-batches
    const auto x = test::uniform<float>(batch * Net::in_features, 100 + i);
    const auto y = test::labels(batch, Net::out_features, 200 + i);
    net.train_step(x, y, loss, opt, sched);
  }
  auto values = test::snapshot(net);
  values.push_back(net.forward(test::uniform<float>(11 * Net::in_features, 300)));
  return values;
}
} // namespace

TEST_CASE("work on the calling thread runs at submit, keeps the first failure and still runs what follows") {
  backend::host::Executor ex(0);
  ex.run_on_issuing_thread(true);
  std::vector<int> ran;
  ex.submit([&] { ran.push_back(1); });
  CHECK(ran == std::vector{1}); // no synchronize needed: it already ran
  ex.submit([] { throw std::runtime_error("first"); });
  ex.submit([] { throw std::runtime_error("second"); });
  ex.submit([&] { ran.push_back(2); });
  CHECK(ran == std::vector{1, 2});
  CHECK_THROWS_WITH_AS(ex.synchronize(), "first", std::runtime_error);
  CHECK_NOTHROW(ex.synchronize()); // reported once
}

TEST_CASE("switching to the calling thread first lets the worker finish what it was given, in order") {
  backend::host::Executor ex(0);
  std::vector<int> ran;
  ex.submit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ran.push_back(1);
  });
  ex.run_on_issuing_thread(true);
  ex.submit([&] { ran.push_back(2); });
  CHECK(ran == std::vector{1, 2});
  ex.run_on_issuing_thread(false);
  ex.submit([&] { ran.push_back(3); });
  ex.synchronize();
  CHECK(ran == std::vector{1, 2, 3});
}

TEST_CASE("events between a device on the calling thread and one on a worker order their work") {
  backend::host::Executor caller(0), worker(1);
  caller.run_on_issuing_thread(true);
  auto ready = worker.make_event();
  std::vector<int> ran;
  worker.submit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ran.push_back(1);
  });
  worker.record(*ready);
  caller.wait(*ready); // blocks the calling thread until the worker reaches the record
  caller.submit([&] { ran.push_back(2); });
  CHECK(ran == std::vector{1, 2});
  worker.synchronize();
}

TEST_CASE("training on the calling thread and on worker threads gives bit-identical results") {
  ScopedHostExecution env(nullptr);
  for (const bool gpipe : {false, true}) {
    CAPTURE(gpipe);
    const auto run = [&](HostExecution where) {
      return gpipe ? train(where, schedule::GPipe{.micro_batches = 4}) : train(where, schedule::Naive{});
    };
    const auto on_workers = run(HostExecution::workers);
    CHECK(run(HostExecution::calling_thread) == on_workers);
    CHECK(run(HostExecution::automatic) == on_workers);
  }
}

TEST_CASE("host_execution picks the thread that runs a step's work") {
  ScopedHostExecution env(nullptr);
  const auto x = test::uniform<float>(8 * Net::in_features, 1);
  for (const auto where : {HostExecution::workers, HostExecution::calling_thread, HostExecution::automatic}) {
    Context ctx({.devices = "host", .host_execution = where});
    Net net(ctx, 1);
    net.forward(x); // each step sets where its devices run; the last step's choice stays
    // automatic: a step this small (and a whole batch at that) runs on the calling thread.
    CHECK((runner_of(ctx) == std::this_thread::get_id()) == (where != HostExecution::workers));
  }
}

TEST_CASE("automatic uses workers only for micro-batches big enough to repay a hand-off, with cores for them") {
  CHECK(host_step_on_calling_thread(1, 1e12));                  // a whole batch: nothing to overlap
  CHECK(host_step_on_calling_thread(4, host_inline_flops / 2)); // too small to hand off
  CHECK(host_step_on_calling_thread(4, host_inline_flops * 2) == (std::thread::hardware_concurrency() < 2));
}

TEST_CASE("TANDEM_HOST_EXECUTION wins over the option, and a bad value names itself") {
  {
    ScopedHostExecution env("workers");
    Context ctx({.devices = "host", .host_execution = HostExecution::calling_thread});
    CHECK(ctx.options().host_execution == HostExecution::workers);
    Net net(ctx, 1);
    net.forward(test::uniform<float>(4 * Net::in_features, 2));
    CHECK(runner_of(ctx) != std::this_thread::get_id());
  }
  ScopedHostExecution env("sideways");
  CHECK_THROWS_WITH_AS(Context({.devices = "host"}),
                       doctest::Contains("TANDEM_HOST_EXECUTION is 'sideways', but must be one of automatic"), Error);
}
