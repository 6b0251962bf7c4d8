// SPDX-License-Identifier: Apache-2.0
// Schedules change speed and memory, never the result: GPipe, 1F1B, ZB-H1 and Interleaved1F1B
// against Naive.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {

// Two stages on two workers; Tanh and a width-keeping tail exercise more than Linear + ReLU.
using Net2 = Pipeline<Stage<Device<0>, Linear<6, 16>, Tanh>, Stage<Device<1>, Linear<16, 12>, ReLU, Linear<12, 3>>>;
// Three stages, the middle one starting with a width-keeping layer.
using Net3 = Pipeline<Stage<Device<0>, Linear<5, 8>, ReLU>, Stage<Device<1>, Sigmoid, Linear<8, 7>, GELU>,
                      Stage<Device<2>, Linear<7, 4>>>;

// Deterministic inputs in [-1, 1): the same on every platform.
std::vector<float> inputs(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n);
  std::uint32_t s = seed * 2654435761u + 1;
  for (auto &x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  }
  return v;
}
std::vector<std::int32_t> labels(std::size_t n, std::int32_t classes, std::uint32_t seed) {
  std::vector<std::int32_t> v(n);
  std::uint32_t s = seed + 17;
  for (auto &y : v) {
    s = s * 1664525u + 1013904223u;
    y = static_cast<std::int32_t>((s >> 16) % static_cast<std::uint32_t>(classes));
  }
  return v;
}

// Largest difference relative to the reference's largest magnitude: summing micro-batch
// gradients rounds differently from one whole-batch product, so an entry near zero may differ
// by more than 1e-5 of itself while the tensor agrees to 1e-5 of its scale.
using test::relative_error;

template <class Net> std::vector<std::vector<float>> gradients(const Net &net) {
  std::vector<std::vector<float>> g;
  for (const auto &p : net.parameters()) g.push_back(p.grad_to_host());
  return g;
}
template <class Net> std::vector<std::vector<float>> values(const Net &net) {
  std::vector<std::vector<float>> v;
  for (const auto &p : net.parameters()) v.push_back(p.to_host());
  return v;
}

// Loss, gradients and (scheduled) forward of `sched` against Naive on one network.
template <class Net, class Loss, class Targets, class Sched>
void check_transparent(Net &net, const Loss &loss, std::size_t batch, const Targets &y, const Sched &sched) {
  const auto x = inputs(batch * Net::in_features, std::uint32_t(batch));
  const std::span<const float> xs(x);
  const std::span<const typename Targets::value_type> ys(y);
  const float want_loss = net.forward_backward(xs, ys, loss);
  const auto want_grads = gradients(net);
  const float got_loss = net.forward_backward(xs, ys, loss, sched);
  const auto got_grads = gradients(net);
  CHECK(relative_error(got_loss, want_loss) <= 1e-5);
  for (std::size_t i = 0; i < want_grads.size(); ++i) {
    INFO("gradient of ", std::string(net.parameters()[i].name()));
    CHECK(relative_error(got_grads[i], want_grads[i]) <= 1e-5);
  }
  CHECK(relative_error(net.forward(xs, sched), net.forward(xs)) <= 1e-5);
}

template <class Sched> void check_all_sizes(const char *name) {
  for (std::size_t batch : {1, 5, 8, 13}) {
    for (std::size_t m : {1, 2, 3, 4, 8}) {
      if (m > batch) continue;
      INFO(name, ": batch ", batch, ", micro_batches ", m);
      Context ctx;
      {
        Net2 net(ctx, 11);
        check_transparent(net, loss::CrossEntropy{}, batch, labels(batch, 3, std::uint32_t(batch)),
                          Sched{.micro_batches = m});
      }
      {
        Net3 net(ctx, 12);
        check_transparent(net, loss::MSE{}, batch, inputs(batch * Net3::out_features, 99), Sched{.micro_batches = m});
      }
    }
  }
}

// Several optimizer steps, with momentum so that any difference would compound, and a last
// batch smaller than the others as at the end of an epoch.
template <class Sched> void check_training(std::size_t m) {
  Context ctx;
  Net3 naive(ctx, 5), piped(ctx, 5);
  const optim::SGD::Options options{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f};
  optim::SGD naive_opt(naive, options), piped_opt(piped, options);
  const loss::MSE loss;
  std::uint32_t seed = 1;
  for (std::size_t batch : {12, 12, 12, 7}) {
    const auto x = inputs(batch * Net3::in_features, seed);
    const auto y = inputs(batch * Net3::out_features, seed + 1000);
    ++seed;
    const float want = naive.train_step(std::span<const float>(x), std::span<const float>(y), loss, naive_opt);
    const float got = piped.train_step(std::span<const float>(x), std::span<const float>(y), loss, piped_opt,
                                       Sched{.micro_batches = m});
    CHECK(relative_error(got, want) <= 1e-5);
  }
  const auto want = values(naive), got = values(piped);
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("parameter ", std::string(naive.parameters()[i].name()));
    CHECK(relative_error(got[i], want[i]) <= 1e-5);
  }
}

// Four stages cycling through two devices (two each), with Dropout: every schedule runs on it,
// Interleaved1F1B too.
using Cycle = Pipeline<Stage<Device<0>, Linear<6, 12>, Tanh>, Stage<Device<1>, Linear<12, 10>, Dropout<20>, ReLU>,
                       Stage<Device<0>, Linear<10, 8>, ReLU, Linear<8, 8>>, Stage<Device<1>, Linear<8, 3>>>;

// Three steps of `sched` with a fresh optimizer of `options`: the losses, then the parameters.
template <class Opt, class Sched>
std::vector<std::vector<float>> trained(HostExecution where, const typename Opt::Options &options, const Sched &sched) {
  Context ctx({.devices = "host", .host_execution = where});
  Cycle net(ctx, 7);
  Opt opt(net, options);
  std::vector<float> losses;
  for (std::uint32_t step = 0; step < 3; ++step) {
    const std::size_t batch = step < 2 ? 12 : 8; // (the last smaller, as at an epoch's end)
    const auto x = inputs(batch * Cycle::in_features, step + 1);
    const auto y = labels(batch, 3, step + 1);
    losses.push_back(
        net.train_step(std::span<const float>(x), std::span<const std::int32_t>(y), loss::CrossEntropy{}, opt, sched));
  }
  auto v = values(net);
  v.insert(v.begin(), losses);
  return v;
}

// Every schedule against Naive, within `tolerance` of each tensor's scale (micro-batches sum
// their gradients in another order than one product).
template <class Opt> void trains_as_naive(const typename Opt::Options &options, double tolerance) {
  for (const HostExecution where : {HostExecution::workers, HostExecution::calling_thread}) {
    INFO("host_execution ", std::string(where == HostExecution::workers ? "workers" : "calling_thread"));
    const auto naive = trained<Opt>(where, options, schedule::Naive{});
    const auto one_f_one_b = trained<Opt>(where, options, schedule::OneFOneB{.micro_batches = 4});
    const auto zb = trained<Opt>(where, options, schedule::ZeroBubbleH1{.micro_batches = 4});
    const std::vector<std::vector<std::vector<float>>> others{
        trained<Opt>(where, options, schedule::GPipe{.micro_batches = 4}), one_f_one_b, zb,
        trained<Opt>(where, options, schedule::Interleaved1F1B{.micro_batches = 4})};
    for (std::size_t o = 0; o < others.size(); ++o)
      for (std::size_t i = 0; i < naive.size(); ++i) {
        INFO("schedule ", o, " (GPipe, 1F1B, ZB-H1, Interleaved1F1B), ", i == 0 ? "losses" : "parameter ", i);
        CHECK(relative_error(others[o][i], naive[i]) <= tolerance);
      }
    // ZB-H1 adds the weight gradients in 1F1B's micro-batch order; only the host's bias sums
    // differ (op::ColumnSum adds row by row into the gradient, LinearBackward adds the sum of its
    // rows), in the last bit.
    for (std::size_t i = 0; i < zb.size(); ++i) CHECK(relative_error(zb[i], one_f_one_b[i]) <= 1e-7);
  }
}

} // namespace

TEST_SUITE("schedule") {
  TEST_CASE("ZB-H1 gives Naive's loss, gradients and outputs") { check_all_sizes<schedule::ZeroBubbleH1>("ZB-H1"); }

  TEST_CASE("ZB-H1 where small stages would be fused: split stages run layer by layer, with Naive's result") {
    // (Naive runs the whole network as one operation here; ZB-H1 fuses nothing)
    Context ctx({.devices = "host", .fuse_small_stages = StageFusion::always});
    Net2 net(ctx, 11);
    check_transparent(net, loss::CrossEntropy{}, 13, labels(13, 3, 13), schedule::ZeroBubbleH1{.micro_batches = 4});
  }

  TEST_CASE("every schedule trains to Naive's parameters with SGD, Adam and AdamW, on workers and not") {
    trains_as_naive<optim::SGD>({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f}, 1e-6);
    trains_as_naive<optim::Adam>({.lr = 1e-2f}, 1e-6);
    trains_as_naive<optim::AdamW>({.lr = 1e-2f}, 1e-6);
  }

  TEST_CASE("ZB-H1: 1F1B with split backwards, weight gradients deferred, min(stages, m) micro-batches held") {
    using schedule::Task;
    const schedule::ZeroBubbleH1 s{.micro_batches = 4};
    // Stage 1 of 3: one warm-up forward; then forward, backward_input, and from the second
    // backward_input on (one waits) the oldest weight gradient; the one left at the end.
    const std::vector<Task> want{{Task::forward, 0},        {Task::forward, 1},          {Task::backward_input, 0},
                                 {Task::forward, 2},        {Task::backward_input, 1},   {Task::backward_weights, 0},
                                 {Task::forward, 3},        {Task::backward_input, 2},   {Task::backward_weights, 1},
                                 {Task::backward_input, 3}, {Task::backward_weights, 2}, {Task::backward_weights, 3}};
    CHECK(s.order(1, 3, 4) == want);
    Context ctx;
    Net3 net(ctx, 1);
    const std::size_t batch = 16;
    const auto x = inputs(batch * Net3::in_features, 1);
    const auto y = inputs(batch * Net3::out_features, 2);
    ctx.timeline().enable();
    for (std::size_t m : {1, 2, 4, 8}) {
      INFO("micro_batches ", m);
      ctx.timeline().clear();
      net.forward_backward(std::span<const float>(x), std::span<const float>(y), loss::MSE{},
                           schedule::ZeroBubbleH1{.micro_batches = m});
      for (std::size_t st = 0; st < Net3::num_stages; ++st) {
        CHECK(net.peak_live_micro_batches(st) == std::min(Net3::num_stages, m));
        // the timeline records each half with its own kind
        std::size_t b = 0, w = 0, whole = 0;
        for (const auto &span : ctx.timeline().spans()) {
          if (span.stage != st) continue;
          b += span.kind == TaskKind::backward_input;
          w += span.kind == TaskKind::backward_weights;
          whole += span.kind == TaskKind::backward;
        }
        CHECK(b == m);
        CHECK(w == m);
        CHECK(whole == 0);
      }
    }
  }

  TEST_CASE("Interleaved1F1B refuses a network whose stages do not cycle, and m not a multiple of the devices") {
    Context ctx;
    {
      Cycle net(ctx, 2);
      optim::SGD opt(net, {.lr = 0.5f});
      const auto x = inputs(6 * Cycle::in_features, 3);
      const auto y = labels(6, 3, 3);
      const auto before = values(net);
      CHECK_THROWS_WITH_AS(net.train_step(std::span<const float>(x), std::span<const std::int32_t>(y),
                                          loss::CrossEntropy{}, opt, schedule::Interleaved1F1B{.micro_batches = 3}),
                           doctest::Contains("micro_batches = 3 is not a multiple of the 2 devices"), Error);
      CHECK(values(net) == before);
      CHECK(opt.steps(0) == 0);
    }
    {
      using Uneven =
          Pipeline<Stage<Device<0>, Linear<4, 6>>, Stage<Device<1>, Linear<6, 6>>, Stage<Device<1>, Linear<6, 2>>>;
      Uneven net(ctx, 2);
      const auto x = inputs(4 * 4, 3);
      const auto y = labels(4, 2, 3);
      CHECK_THROWS_WITH_AS(net.forward_backward(std::span<const float>(x), std::span<const std::int32_t>(y),
                                                loss::CrossEntropy{}, schedule::Interleaved1F1B{.micro_batches = 2}),
                           doctest::Contains("the stages' devices are (0, 1, 1)"), Error);
    }
  }

  TEST_CASE("GPipe gives Naive's loss, gradients and outputs") { check_all_sizes<schedule::GPipe>("GPipe"); }
  TEST_CASE("1F1B gives Naive's loss, gradients and outputs") { check_all_sizes<schedule::OneFOneB>("1F1B"); }

  TEST_CASE("GPipe and 1F1B train to Naive's parameters") {
    for (std::size_t m : {2, 3, 7}) {
      INFO("micro_batches ", m);
      check_training<schedule::GPipe>(m);
      check_training<schedule::OneFOneB>(m);
    }
  }

  TEST_CASE("stages that share a logical device pipeline without deadlock") {
    using Shared = Pipeline<Stage<Device<0>, Linear<4, 6>, ReLU>, Stage<Device<0>, Linear<6, 2>>>;
    Context ctx;
    Shared net(ctx, 3);
    check_transparent(net, loss::CrossEntropy{}, 9, labels(9, 2, 4), schedule::OneFOneB{.micro_batches = 4});
    check_transparent(net, loss::CrossEntropy{}, 9, labels(9, 2, 4), schedule::GPipe{.micro_batches = 4});
  }

  TEST_CASE("1F1B order: warm-up, one forward one backward, cool-down") {
    using schedule::Task;
    const schedule::OneFOneB s{.micro_batches = 5};
    CHECK(s.count(100) == 5);
    // Stage 1 of 4: two warm-up forwards, then alternate, then two cool-down backwards.
    const std::vector<Task> want{{Task::forward, 0},  {Task::forward, 1},  {Task::forward, 2}, {Task::backward, 0},
                                 {Task::forward, 3},  {Task::backward, 1}, {Task::forward, 4}, {Task::backward, 2},
                                 {Task::backward, 3}, {Task::backward, 4}};
    CHECK(s.order(1, 4, 5) == want);
    // The last stage alternates from the start.
    CHECK(s.order(3, 4, 2) ==
          std::vector<Task>{{Task::forward, 0}, {Task::backward, 0}, {Task::forward, 1}, {Task::backward, 1}});
    // Fewer micro-batches than the warm-up wants: all forwards, then all backwards.
    CHECK(s.order(0, 4, 2) ==
          std::vector<Task>{{Task::forward, 0}, {Task::forward, 1}, {Task::backward, 0}, {Task::backward, 1}});
  }

  TEST_CASE("GPipe keeps m micro-batches alive, 1F1B at most stages - stage") {
    Context ctx;
    Net3 net(ctx, 1);
    const std::size_t batch = 16;
    const auto x = inputs(batch * Net3::in_features, 1);
    const auto y = inputs(batch * Net3::out_features, 2);
    const std::span<const float> xs(x), ys(y);
    for (std::size_t m : {1, 2, 3, 4, 8, 16}) {
      INFO("micro_batches ", m);
      net.forward_backward(xs, ys, loss::MSE{}, schedule::GPipe{.micro_batches = m});
      for (std::size_t s = 0; s < Net3::num_stages; ++s) CHECK(net.peak_live_micro_batches(s) == m);
      net.forward_backward(xs, ys, loss::MSE{}, schedule::OneFOneB{.micro_batches = m});
      for (std::size_t s = 0; s < Net3::num_stages; ++s) {
        INFO("stage ", s);
        CHECK(net.peak_live_micro_batches(s) == std::min(Net3::num_stages - s, m));
      }
    }
    net.forward_backward(xs, ys, loss::MSE{});
    for (std::size_t s = 0; s < Net3::num_stages; ++s) CHECK(net.peak_live_micro_batches(s) == 1);
  }

  TEST_CASE("micro-batch counts outside 1..batch are errors that change nothing") {
    Context ctx;
    Net2 net(ctx, 2);
    optim::SGD opt(net, {.lr = 0.5f});
    const std::size_t batch = 4;
    const auto x = inputs(batch * Net2::in_features, 3);
    const auto y = labels(batch, 3, 3);
    const std::span<const float> xs(x);
    const std::span<const std::int32_t> ys(y);
    const auto before = values(net);
    CHECK_THROWS_WITH_AS(net.train_step(xs, ys, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 5}),
                         doctest::Contains("a batch of 4 samples into 5 micro-batches"), Error);
    CHECK_THROWS_WITH_AS(net.train_step(xs, ys, loss::CrossEntropy{}, opt, schedule::OneFOneB{.micro_batches = 0}),
                         doctest::Contains("1 <= micro_batches <= batch"), Error);
    CHECK_THROWS_WITH_AS(net.forward(xs, schedule::GPipe{.micro_batches = 9}), doctest::Contains("forward"), Error);
    CHECK(values(net) == before);
    CHECK(opt.steps(0) == 0);
    // The network still works afterwards, with a count that fits.
    net.train_step(xs, ys, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 4});
    CHECK(values(net) != before);
  }
}
