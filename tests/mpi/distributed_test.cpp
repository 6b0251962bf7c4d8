// SPDX-License-Identifier: Apache-2.0
// Stages across processes: run under mpiexec on 1..4 ranks (ctest label mpi). Every rank builds the
// distributed network and, on a plain host Context, the single-process one, runs the same calls on
// both and compares bit for bit: losses and outputs on every rank, parameters on the rank that
// holds them.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <tandem/distributed.hpp>
#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

namespace {

using namespace tandem;

distributed::Environment *environment = nullptr;
distributed::Environment &env() { return *environment; }
// After a test in which a rank skips a call: the others are still waiting out their timeout.
void wait_for_every_rank() { MPI_Barrier(env().communicator()); }

// Four stages of unequal widths: on 2 ranks each holds two (0 and 2, 1 and 3), on 3 ranks rank 0
// holds the first and the last, on 4 ranks one each.
using Net = Pipeline<Stage<Device<0>, Linear<5, 8>, Tanh>, Stage<Device<1>, Linear<8, 8>, ReLU>,
                     Stage<Device<2>, Linear<8, 6>, GELU>, Stage<Device<3>, Linear<6, 3>>>;
// The same widths with one layer more: another type.
using Other = Pipeline<Stage<Device<0>, Linear<5, 8>, Tanh>, Stage<Device<1>, Linear<8, 8>, ReLU, Identity>,
                       Stage<Device<2>, Linear<8, 6>, GELU>, Stage<Device<3>, Linear<6, 3>>>;

constexpr std::size_t batch = 11; // divided unevenly by 3 and 4 micro-batches

struct Data {
  std::vector<float> x = test::uniform<float>(batch * Net::in_features, 7);
  std::vector<std::int32_t> y = test::labels(batch, Net::out_features, 8);
  std::vector<float> x2 = test::uniform<float>(batch * Net::in_features, 9);
  std::vector<std::int32_t> y2 = test::labels(batch, Net::out_features, 10);
};

// What a rank passes: the input only where it runs the first stage, the targets only where it runs
// the last (the batch comes from the first stage's rank).
template <class U> std::span<const U> if_local(const Net &net, std::size_t stage, const std::vector<U> &v) {
  const auto &p = net.parameter("stage" + std::to_string(stage) + ".0.weight");
  return p.is_local() ? std::span<const U>(v) : std::span<const U>();
}

// Every parameter this rank holds equals the reference's, bit for bit; the others throw.
template <class A, class B> void check_parameters(const A &net, const B &ref) {
  for (const auto &p : net.parameters()) {
    CAPTURE(p.name());
    if (p.is_local()) {
      CHECK(p.rank() == env().rank());
      CHECK(p.to_host() == ref.parameter(p.name()).to_host());
    } else {
      CHECK(p.rank() != env().rank());
      CHECK_THROWS_WITH_AS(p.to_host(), doctest::Contains(("rank " + std::to_string(p.rank())).c_str()), Error);
      CHECK_THROWS_AS(p.copy_from(ref.parameter(p.name()).to_host()), Error);
    }
  }
}

template <class Opt, class Sched>
void compare_training(ContextOptions options, typename Opt::Options opt_options, const Sched &sched) {
  const Data d;
  Context ctx(env(), options);
  Context single({.devices = "host"});
  Net net(ctx, 42), ref(single, 42);
  check_parameters(net, ref); // the same initial parameters
  Opt opt(net, opt_options), ref_opt(ref, opt_options);
  loss::CrossEntropy ce;
  for (int step = 0; step < 3; ++step) {
    const auto &x = step % 2 ? d.x2 : d.x;
    const auto &y = step % 2 ? d.y2 : d.y;
    const float loss = net.train_step(if_local(net, 0, x), if_local(net, 3, y), ce, opt, sched);
    const float expected =
        ref.train_step(std::span<const float>(x), std::span<const std::int32_t>(y), ce, ref_opt, sched);
    CHECK(loss == expected);
  }
  // A smaller last batch, split unevenly too.
  const std::vector<float> x7(d.x.begin(), d.x.begin() + 7 * Net::in_features);
  const std::vector<std::int32_t> y7(d.y.begin(), d.y.begin() + 7);
  CHECK(net.train_step(if_local(net, 0, x7), if_local(net, 3, y7), ce, opt, sched) ==
        ref.train_step(std::span<const float>(x7), std::span<const std::int32_t>(y7), ce, ref_opt, sched));
  check_parameters(net, ref);
  const auto out = net.forward(if_local(net, 0, d.x2), schedule::GPipe{.micro_batches = 3});
  CHECK(out.size() == batch * Net::out_features);
  CHECK(out == ref.forward(std::span<const float>(d.x2), schedule::GPipe{.micro_batches = 3}));
}

} // namespace

TEST_CASE("every schedule and optimizer gives the single-process results bit for bit") {
  compare_training<optim::Adam>({}, {.lr = 1e-2f}, schedule::Naive{});
  compare_training<optim::Adam>({}, {.lr = 1e-2f}, schedule::GPipe{.micro_batches = 3});
  compare_training<optim::Adam>({}, {.lr = 1e-2f}, schedule::OneFOneB{.micro_batches = 4});
  compare_training<optim::SGD>({}, {.lr = 0.1f, .momentum = 0.9f}, schedule::OneFOneB{.micro_batches = 3});
  compare_training<optim::AdamW>({}, {.lr = 1e-2f, .weight_decay = 0.1f}, schedule::GPipe{.micro_batches = 4});
  // split backwards: backward_input sends the boundary's gradient, backward_weights sends nothing
  compare_training<optim::SGD>({}, {.lr = 0.1f, .momentum = 0.9f}, schedule::ZeroBubbleH1{.micro_batches = 4});
  // one list per device (four devices, one stage each)
  compare_training<optim::Adam>({}, {.lr = 1e-2f}, schedule::Interleaved1F1B{.micro_batches = 4});
}

TEST_CASE("a transformer across ranks gives the single-process results bit for bit, Dropout included") {
  constexpr std::size_t V = 11, T = 4, D = 8;
  using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, 2, T>>;
  using Mlp = Residual<LayerNorm<D>, Linear<D, 2 * D>, GELU, Dropout<20>, Linear<2 * D, D>>;
  using Gpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn>,
                       Stage<Device<1>, Mlp, LayerNorm<D>, Linear<D, V>>>;
  Context ctx(env());
  Context single({.devices = "host"});
  Gpt net(ctx, 9), ref(single, 9);
  optim::AdamW opt(net, {.lr = 1e-2f}), ref_opt(ref, {.lr = 1e-2f});
  const bool first = net.parameter("stage0.0.weight").is_local(), last = net.parameter("stage1.2.weight").is_local();
  const auto x = test::labels(5 * T, V, 1), y = test::labels(5 * T, V, 2);
  const std::vector<std::int32_t> none;
  for (int step = 0; step < 2; ++step) {
    const float loss = net.train_step(first ? x : none, last ? y : none, loss::CrossEntropy{}, opt,
                                      schedule::GPipe{.micro_batches = 3});
    CHECK(loss == ref.train_step(x, y, loss::CrossEntropy{}, ref_opt, schedule::GPipe{.micro_batches = 3}));
  }
  for (const auto &p : net.parameters())
    if (p.is_local()) CHECK(p.to_host() == ref.parameter(p.name()).to_host());
  CHECK(net.forward(first ? x : none) == ref.forward(x));
}

TEST_CASE("stages on worker threads send and wait there, with the same results") {
  compare_training<optim::Adam>({.host_execution = HostExecution::workers}, {.lr = 1e-2f},
                                schedule::GPipe{.micro_batches = 4});
  compare_training<optim::SGD>({.host_execution = HostExecution::workers}, {.lr = 0.1f},
                               schedule::OneFOneB{.micro_batches = 3});
  compare_training<optim::AdamW>({.host_execution = HostExecution::workers}, {.lr = 1e-2f},
                                 schedule::ZeroBubbleH1{.micro_batches = 3});
}

TEST_CASE("explicit placement: neighbours on one rank share a link, ranks may hold no stage") {
  // Stages 0 and 1 on rank 0, stages 2 and 3 on rank 1 (or 0 where there is one rank); ranks 2
  // and 3, where they exist, hold nothing and still return the loss and output.
  const std::string second = env().size() > 1 ? "1" : "0";
  const std::string placement = "0:host,0:host," + second + ":host," + second + ":host";
  compare_training<optim::Adam>({.devices = placement}, {.lr = 1e-2f}, schedule::GPipe{.micro_batches = 3});
  Context ctx(env(), {.devices = placement});
  Net net(ctx, 1);
  const std::string text = ctx.describe();
  CHECK(text.find("Device<2> -> rank " + second) != std::string::npos);
  CHECK(text.find("Device<0> -> rank 0") != std::string::npos);
  CHECK(ctx.rank_of(3) == std::stoi(second));
  CHECK_THROWS_WITH_AS(Context(env(), {.devices = "0:host,9:host"}), doctest::Contains("rank 9"), Error);
  CHECK_THROWS_WITH_AS(Context(env(), {.devices = "0:host,1"}), doctest::Contains("'rank:host'"), Error);
}

TEST_CASE("ranks that disagree throw on every rank, naming what differs, and change nothing") {
  if (env().size() < 2) return;
  const int rank = env().rank();
  const Data d;
  Context ctx(env());
  loss::CrossEntropy ce;
  CHECK_THROWS_WITH_AS(Net(ctx, 42 + static_cast<std::uint64_t>(rank == 1)), doctest::Contains("the seed"), Error);
  if (rank == 1) CHECK_THROWS_WITH_AS(Other(ctx, 42), doctest::Contains("pipeline type"), Error);
  else CHECK_THROWS_WITH_AS(Net(ctx, 42), doctest::Contains("pipeline type"), Error);

  Context single({.devices = "host"});
  Net net(ctx, 42), ref(single, 42);
  optim::Adam opt(net, {.lr = 1e-2f}), ref_opt(ref, {.lr = 1e-2f});
  const std::span<const float> x(d.x);
  const std::span<const std::int32_t> y(d.y);
  // The batch: rank 1 reads 10 rows where the others read 11.
  const auto x10 = x.first(rank == 1 ? 10 * Net::in_features : x.size());
  const auto y10 = y.first(rank == 1 ? 10 : y.size());
  CHECK_THROWS_WITH_AS(net.train_step(x10, y10, ce, opt, schedule::GPipe{.micro_batches = 2}),
                       doctest::Contains("disagree on the batch"), Error);
  CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = rank == 1 ? 3u : 2u}),
                       doctest::Contains("micro-batch count"), Error);
  if (rank == 1)
    CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt, schedule::OneFOneB{.micro_batches = 3}),
                         doctest::Contains("disagree on the schedule"), Error);
  else
    CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 3}),
                         doctest::Contains("disagree on the schedule"), Error);
  CHECK_THROWS_WITH_AS(rank == 1 ? (void)net.forward(x) : (void)net.train_step(x, y, ce, opt),
                       doctest::Contains("different calls"), Error);
  // A label out of range on the last stage's rank only.
  std::vector<std::int32_t> bad = d.y;
  bad[5] = 3;
  const int last = net.parameter("stage3.0.weight").rank();
  if (rank == last) CHECK_THROWS_AS(net.train_step(x, std::span<const std::int32_t>(bad), ce, opt), Error);
  else
    CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt),
                         doctest::Contains(("rank " + std::to_string(last) + " failed").c_str()), Error);
  // Nothing changed: the next step is the reference's first.
  CHECK(net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 3}) ==
        ref.train_step(x, y, ce, ref_opt, schedule::GPipe{.micro_batches = 3}));
  check_parameters(net, ref);
}

TEST_CASE("a rank that stops calling makes the others throw after the timeout") {
  if (env().size() < 2) return;
  const Data d;
  Context ctx(env(), {.peer_timeout = std::chrono::milliseconds(1000)});
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.1f});
  loss::CrossEntropy ce;
  const int last = net.parameter("stage3.0.weight").rank();
  if (env().rank() == last) return wait_for_every_rank(); // this rank skips the step
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(net.train_step(std::span<const float>(d.x), std::span<const std::int32_t>(d.y), ce, opt,
                                      schedule::GPipe{.micro_batches = 2}),
                       doctest::Contains(("rank " + std::to_string(last)).c_str()), Error);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(waited >= 0.9);
  CHECK(waited < 10);
  // The ranks have lost step with each other: the network says so at once.
  CHECK_THROWS_WITH_AS(net.forward(std::span<const float>(d.x)), doctest::Contains("lost step"), Error);
  wait_for_every_rank();
}

TEST_CASE("a boundary that never arrives is named: rank, boundary, micro-batch and direction") {
  if (env().size() != 2) return;
  // Rank 1 (stages 1 and 3) is stuck for 2.2 s on its Device<1> worker, behind which stage 1's
  // work queues: rank 0's stage 2 waits in vain for stage 1's activations of micro-batch 0 across
  // boundary 1 (1.5 s; on the calling thread, so that this is rank 0's first wait). Rank 1, which
  // waits longer, then learns of rank 0's failure as the step completes.
  const Data d;
  const bool stuck = env().rank() == 1;
  Context ctx(env(), {.host_execution = stuck ? HostExecution::workers : HostExecution::calling_thread,
                      .peer_timeout = std::chrono::milliseconds(stuck ? 6000 : 1500)});
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.1f});
  loss::CrossEntropy ce;
  const std::span<const float> x(d.x);
  const std::span<const std::int32_t> y(d.y);
  net.train_step(x, y, ce, opt); // buffers made: the next step's checks wait for no device
  if (stuck) ctx.executor(1).submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(2200)); });
  const std::string expected = env().rank() == 0
                                   ? "the forward activations of micro-batch 0 across boundary 1 (stage 1 "
                                     "-> stage 2) from rank 1 never arrived"
                                   : "rank 0 failed";
  CHECK_THROWS_WITH_AS(net.train_step(x, y, ce, opt), doctest::Contains(expected.c_str()), Error);
  // Messages of that step may still be in flight: the network refuses to go on, on both ranks.
  CHECK_THROWS_WITH_AS(net.forward(x), doctest::Contains("lost step"), Error);
  wait_for_every_rank();
}

TEST_CASE("one Chrome trace of every rank's tasks, a process row per rank") {
  const Data d;
  Context ctx(env(), {.timeline = true});
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.1f});
  loss::CrossEntropy ce;
  net.train_step(if_local(net, 0, d.x), if_local(net, 3, d.y), ce, opt, schedule::GPipe{.micro_batches = 2});
  const std::string path = "tandem_mpi_trace_" + std::to_string(env().size()) + ".json";
  distributed::write_chrome_trace(env(), ctx.timeline(), path);
  if (env().rank() != 0) return;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string trace = text.str();
  const auto count = [&](const std::string &what) {
    std::size_t n = 0;
    for (auto at = trace.find(what); at != std::string::npos; at = trace.find(what, at + 1)) ++n;
    return n;
  };
  for (int r = 0; r < env().size(); ++r) {
    CAPTURE(r);
    CHECK(count("{\"name\":\"rank " + std::to_string(r) + " on ") == 1);
    CHECK(count("\"pid\":" + std::to_string(r + 1) + ",") > 2);
  }
  // Every stage's forward and backward of both micro-batches, each from the rank that ran it.
  CHECK(count("\"name\":\"forward ") == 2 * Net::num_stages);
  CHECK(count("\"name\":\"backward ") == 2 * Net::num_stages);
  // Per micro-batch and direction, a boundary between ranks shows a send and a receive (the wait
  // for the message), one within a rank a copy.
  std::size_t copies = 0, crossings = 0;
  for (std::size_t s = 0; s + 1 < Net::num_stages; ++s)
    (ctx.rank_of(s) != ctx.rank_of(s + 1) ? crossings : copies) += 2 * 2;
  CHECK(count("\"name\":\"copy ") == copies);
  CHECK(count("\"name\":\"send ") == crossings);
  CHECK(count("\"name\":\"receive ") == crossings);
  std::remove(path.c_str());
}

TEST_CASE("TANDEM_MPI_PROGRESS_US sets the progress thread's interval; 0 turns it off") {
  const char *before = std::getenv("TANDEM_MPI_PROGRESS_US");
  const std::string saved = before ? before : "";
  ::unsetenv("TANDEM_MPI_PROGRESS_US");
  CHECK(distributed::MpiTransport::progress_interval() == std::chrono::microseconds(200));
  ::setenv("TANDEM_MPI_PROGRESS_US", "0", 1);
  CHECK(distributed::MpiTransport::progress_interval() == std::chrono::microseconds(0));
  ::setenv("TANDEM_MPI_PROGRESS_US", "50", 1);
  CHECK(distributed::MpiTransport::progress_interval() == std::chrono::microseconds(50));
  ::setenv("TANDEM_MPI_PROGRESS_US", "fast", 1);
  CHECK_THROWS_WITH_AS(distributed::MpiTransport::progress_interval(), doctest::Contains("microseconds"), Error);
  if (before) ::setenv("TANDEM_MPI_PROGRESS_US", saved.c_str(), 1);
  else ::unsetenv("TANDEM_MPI_PROGRESS_US");
}

int main(int argc, char **argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  // --alone: a process of an mpiexec job that makes no Environment, only a Context: it warns once.
  if (mode == "--alone") {
    Context a, b;
    return 0;
  }
  // Two Environments, the first destroyed first: MPI outlives it, and every test below runs under
  // the second.
  auto first = std::make_unique<distributed::Environment>(argc, argv);
  distributed::Environment e;
  first.reset();
  environment = &e;
  // --uncaught: an Error escapes main: its message once per rank, and the job ends.
  if (mode == "--uncaught") throw Error("tandem: thrown out of main on rank " + std::to_string(e.rank()));
  doctest::Context context(argc, argv);
  const int failures = context.run();
  environment = nullptr;
  return failures;
}
