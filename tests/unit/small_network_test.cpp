// SPDX-License-Identifier: Apache-2.0
// op::SmallNetwork (a whole training step of a network of small stages in one operation, the body
// the CUDA backend runs as one block) against the per-layer and loss operations in float64, and a
// pipeline taking whole-network steps against the same pipeline issuing stage by stage.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "../support/random_data.hpp"
#include "tandem/tandem.hpp"

namespace {

using namespace tandem;
using backend::Activation;
namespace op = backend::op;

// Two "stages" of layers, Linear 13 -> 40, Tanh, Linear 40 -> 64 | GELU, Linear 64 -> 9, ReLU,
// Linear 9 -> 5: every kind of step the body has, and 64 wide, so float takes 32 rows a pass.
struct Shape {
  bool linear;
  Activation kind;
  std::size_t in, out;
};
constexpr Shape shapes[] = {{true, Activation::identity, 13, 40}, {false, Activation::tanh, 40, 40},
                            {true, Activation::identity, 40, 64}, {false, Activation::gelu, 64, 64},
                            {true, Activation::identity, 64, 9},  {false, Activation::relu, 9, 9},
                            {true, Activation::identity, 9, 5}};
constexpr std::size_t count = std::size(shapes);
constexpr std::size_t classes = shapes[count - 1].out;

// The parameters, gradients and activations of every layer, in T.
template <class T> struct Net { std::vector<std::vector<T>> w, b, dw, db, y; };
template <class T, class U> std::vector<T> cast(const std::vector<U> &v) { return std::vector<T>(v.begin(), v.end()); }
template <class T> Net<T> cast_net(const Net<double> &n) {
  Net<T> out;
  for (std::size_t j = 0; j < count; ++j) {
    out.w.push_back(cast<T>(n.w[j]));
    out.b.push_back(cast<T>(n.b[j]));
    out.dw.push_back(cast<T>(n.dw[j]));
    out.db.push_back(cast<T>(n.db[j]));
    out.y.push_back(std::vector<T>(n.y[j].size(), T(-7))); // poison: every value must be written
  }
  return out;
}

Net<double> random_net(std::size_t rows) {
  Net<double> n;
  for (std::size_t j = 0; j < count; ++j) {
    const auto &s = shapes[j];
    n.w.push_back(s.linear ? test::uniform<double>(s.out * s.in, 10 + j, -0.4, 0.4) : std::vector<double>{});
    n.b.push_back(s.linear ? test::uniform<double>(s.out, 20 + j) : std::vector<double>{});
    // Gradients start from random values: a later micro-batch adds to them, a first sets them.
    n.dw.push_back(s.linear ? test::uniform<double>(s.out * s.in, 30 + j) : std::vector<double>{});
    n.db.push_back(s.linear ? test::uniform<double>(s.out, 40 + j) : std::vector<double>{});
    n.y.push_back(std::vector<double>(rows * s.out));
  }
  return n;
}

// What the pipeline issues without fusion, in float64: each layer forward, the loss operation,
// each layer backward (adding to the gradients, or setting them where `first`).
void reference_step(backend::Executor &ex, Net<double> &n, const std::vector<double> &x,
                    const op::SmallLoss<double> &loss, std::size_t rows, bool first) {
  if (first)
    for (std::size_t j = 0; j < count; ++j) {
      std::fill(n.dw[j].begin(), n.dw[j].end(), 0.0);
      std::fill(n.db[j].begin(), n.db[j].end(), 0.0);
    }
  ex.submit([&] {
    for (std::size_t j = 0; j < count; ++j) {
      const auto &s = shapes[j];
      const double *in = j ? n.y[j - 1].data() : x.data();
      if (s.linear)
        ex.run(op::LinearForward<double>{.batch = rows,
                                         .in = s.in,
                                         .out = s.out,
                                         .x = in,
                                         .weight = n.w[j].data(),
                                         .bias = n.b[j].data(),
                                         .y = n.y[j].data()});
      else ex.run(op::ActivationForward<double>{.kind = s.kind, .n = rows * s.in, .x = in, .y = n.y[j].data()});
    }
    std::vector<std::vector<double>> grad(count + 1);
    grad[count].assign(rows * classes, 0.0);
    if (loss.kind == op::LossKind::cross_entropy)
      ex.run(op::CrossEntropy<double>{.rows = rows,
                                      .classes = classes,
                                      .logits = n.y[count - 1].data(),
                                      .labels = loss.labels,
                                      .scale = loss.scale,
                                      .loss = loss.loss,
                                      .dlogits = grad[count].data()});
    else
      ex.run(op::SquaredError<double>{.n = rows * classes,
                                      .pred = n.y[count - 1].data(),
                                      .target = loss.targets,
                                      .scale = loss.scale,
                                      .loss = loss.loss,
                                      .dpred = grad[count].data()});
    for (std::size_t j = count; j-- > 0;) {
      const auto &s = shapes[j];
      const double *in = j ? n.y[j - 1].data() : x.data();
      grad[j].assign(rows * s.in, 0.0);
      if (s.linear)
        ex.run(op::LinearBackward<double>{.batch = rows,
                                          .in = s.in,
                                          .out = s.out,
                                          .x = in,
                                          .weight = n.w[j].data(),
                                          .dy = grad[j + 1].data(),
                                          .dx = grad[j].data(),
                                          .dweight = n.dw[j].data(),
                                          .dbias = n.db[j].data()});
      else
        ex.run(op::ActivationBackward<double>{.kind = s.kind,
                                              .n = rows * s.in,
                                              .x = in,
                                              .y = n.y[j].data(),
                                              .dy = grad[j + 1].data(),
                                              .dx = grad[j].data()});
    }
  });
  ex.synchronize();
}

template <class T> op::SmallNetwork<T> network_op(Net<T> &n, const T *x, std::size_t rows, bool first) {
  op::SmallNetwork<T> net{.rows = rows, .count = count, .first = first};
  for (std::size_t j = 0; j < count; ++j) {
    const auto &s = shapes[j];
    net.layers[j] = {.linear = s.linear,
                     .kind = s.kind,
                     .in = s.in,
                     .out = s.out,
                     .weight = s.linear ? n.w[j].data() : nullptr,
                     .bias = s.linear ? n.b[j].data() : nullptr,
                     .dweight = s.linear ? n.dw[j].data() : nullptr,
                     .dbias = s.linear ? n.db[j].data() : nullptr,
                     .x = j ? n.y[j - 1].data() : x,
                     .y = n.y[j].data()};
  }
  return net;
}

template <class T> double error(const std::vector<T> &got, const std::vector<double> &want) {
  return test::relative_error(std::span<const T>(got), std::span<const double>(want));
}

// One step of `rows` (150: five passes of 32 rows in float, the last one partial) with either
// loss, first or not, in T against the float64 reference; `tolerance` per tensor's scale.
template <class T> void check_step(op::LossKind kind, bool first, double tolerance) {
  Context ctx({.devices = "host"});
  auto &ex = ctx.executor(0);
  const std::size_t rows = 150;
  const auto x = test::uniform<double>(rows * shapes[0].in, 1);
  const auto labels = test::labels(rows, classes, 2);
  const auto targets = test::uniform<double>(rows * classes, 3);
  const double scale = kind == op::LossKind::cross_entropy ? 1.0 / 200 : 1.0 / (200 * classes); // of a batch of 200
  auto ref = random_net(rows);
  auto got = cast_net<T>(ref);
  double ref_loss = 0.25; // a later micro-batch adds to the loss so far
  T got_loss = first ? T(-7) : T(0.25);
  std::int32_t invalid = first ? 1 : 0; // a first micro-batch clears a stale status
  reference_step(ex, ref, x,
                 {.kind = kind, .labels = labels.data(), .targets = targets.data(), .scale = scale, .loss = &ref_loss},
                 rows, first);
  if (first) ref_loss -= 0.25;

  const auto xt = cast<T>(x);
  const auto tt = cast<T>(targets);
  auto net = network_op(got, xt.data(), rows, first);
  net.loss = {.kind = kind,
              .labels = labels.data(),
              .targets = tt.data(),
              .scale = static_cast<T>(scale),
              .loss = &got_loss,
              .invalid = &invalid};
  ex.submit([&] { ex.run(net); });
  ex.synchronize();

  CHECK(invalid == 0);
  CHECK(std::abs(static_cast<double>(got_loss) - ref_loss) <= tolerance * std::abs(ref_loss));
  for (std::size_t j = 0; j < count; ++j) {
    INFO("layer ", j);
    CHECK(error(got.y[j], ref.y[j]) < tolerance);
    if (shapes[j].linear) {
      CHECK(error(got.dw[j], ref.dw[j]) < tolerance);
      CHECK(error(got.db[j], ref.db[j]) < tolerance);
    }
  }
}

} // namespace

TEST_CASE("SmallNetwork takes the step the per-layer and loss operations take in float64") {
  for (const auto kind : {op::LossKind::cross_entropy, op::LossKind::squared_error})
    for (const bool first : {true, false}) {
      CAPTURE(static_cast<int>(kind));
      CAPTURE(first);
      // float32 sums of at most 150 terms: within 1e-5 of each tensor's scale; float64: rounding.
      check_step<float>(kind, first, 1e-5);
      check_step<double>(kind, first, 1e-12);
    }
}

TEST_CASE("SmallNetwork marks bad targets and poisons the loss, as the loss operations do") {
  Context ctx({.devices = "host"});
  auto &ex = ctx.executor(0);
  const std::size_t rows = 40;
  auto ref = random_net(rows);
  auto got = cast_net<float>(ref);
  const auto x = test::uniform<float>(rows * shapes[0].in, 4);
  auto labels = test::labels(rows, classes, 5);
  auto targets = test::uniform<float>(rows * classes, 6);
  for (const auto kind : {op::LossKind::cross_entropy, op::LossKind::squared_error}) {
    CAPTURE(static_cast<int>(kind));
    auto bad_labels = labels;
    auto bad_targets = targets;
    bad_labels[17] = static_cast<std::int32_t>(classes); // one past the last class
    bad_targets[33] = INFINITY;
    float loss = 0;
    std::int32_t invalid = 0;
    auto net = network_op(got, x.data(), rows, true);
    net.loss = {.kind = kind,
                .labels = bad_labels.data(),
                .targets = bad_targets.data(),
                .scale = 0.025f,
                .loss = &loss,
                .invalid = &invalid};
    ex.submit([&] { ex.run(net); });
    ex.synchronize();
    CHECK(invalid == 1);
    CHECK(!std::isfinite(loss));
  }
}

TEST_CASE("a pipeline of small stages takes whole-network steps as it takes them stage by stage") {
  using Net = Pipeline<Stage<Device<0>, Linear<12, 40>, ReLU, Linear<40, 40>, GELU>,
                       Stage<Device<1>, Linear<40, 24>, Tanh, Linear<24, 5>>>;
  // never: one operation per layer (the host's default); per stage: a fused operation per stage
  // and copies at the boundary (force_copies keeps the network from fusing); network: one
  // op::SmallNetwork per micro-batch, reading the boundary in place and updating in it too.
  enum Path { never, per_stage, network };
  const auto train = [](Path path, auto loss, const auto &targets_of, bool adam) {
    Context ctx({.devices = "host",
                 .force_copies = path == per_stage,
                 .fuse_small_stages = path == never ? StageFusion::never : StageFusion::always});
    Net net(ctx, 77);
    optim::SGD sgd(net, {.lr = 0.1f, .momentum = 0.9f});
    optim::AdamW adamw(net, {.lr = 0.01f, .weight_decay = 0.1f, .amsgrad = true});
    std::vector<float> losses;
    for (std::uint64_t step = 0; step < 4; ++step) {
      const auto x = test::uniform<float>(70 * Net::in_features, 90 + step);
      const auto y = targets_of(step);
      // GPipe m = 3 (uneven: 24, 23, 23), then the whole batch
      const std::size_t m = step < 2 ? 3 : 1;
      const schedule::GPipe sched{.micro_batches = m};
      losses.push_back(adam ? net.train_step(std::span<const float>(x), std::span(y), loss, adamw, sched)
                            : net.train_step(std::span<const float>(x), std::span(y), loss, sgd, sched));
    }
    const bool fused = path == network;
    CHECK((net.transferred_bytes() == 0) == fused); // the boundary read in place: proof of the path
    CHECK(net.peak_live_micro_batches(0) == 1);
    return std::make_pair(losses, test::snapshot(net));
  };
  const auto labels = [](std::uint64_t step) { return test::labels(70, Net::out_features, 95 + step); };
  const auto targets = [](std::uint64_t step) { return test::uniform<float>(70 * Net::out_features, 95 + step); };
  // CrossEntropy with SGD (momentum), MSE with SGD, CrossEntropy with AdamW (weight decay, amsgrad)
  for (const int which : {0, 1, 2}) {
    CAPTURE(which);
    const auto run = [&](Path p) {
      return which == 1 ? train(p, loss::MSE{}, targets, false) : train(p, loss::CrossEntropy{}, labels, which == 2);
    };
    const auto want = run(never);
    for (const Path p : {per_stage, network}) {
      CAPTURE(static_cast<int>(p));
      const auto got = run(p);
      CHECK(test::relative_error(got.first, want.first) < 1e-5);
      for (std::size_t i = 0; i < want.second.size(); ++i) {
        INFO("parameter ", i);
        CHECK(test::relative_error(got.second[i], want.second[i]) < 1e-5);
      }
    }
  }
}

TEST_CASE("a whole-network step with a bad label on the device changes nothing and says why") {
  using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
  Context ctx({.devices = "host", .fuse_small_stages = StageFusion::always});
  Net net(ctx, 3);
  optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
  loss::CrossEntropy ce;
  const std::size_t batch = 64;
  const Tensor<float> x(ctx, 0, batch, Net::in_features, test::uniform<float>(batch * Net::in_features, 7));
  auto y = test::labels(batch, Net::out_features, 8);
  const Tensor<std::int32_t> good(ctx, 1, batch, 1, y);
  net.train_step(x, good, ce, opt); // seeds the momentum: the bad step must leave it too
  const auto before = test::snapshot(net);
  y[41] = -1;
  const Tensor<std::int32_t> bad(ctx, 1, batch, 1, y);
  CHECK_THROWS_WITH_AS(net.train_step(x, bad, ce, opt), doctest::Contains("label 41 is -1"), Error);
  CHECK(test::snapshot(net) == before);
  CHECK(opt.steps(0) == 1);
  CHECK(opt.steps(1) == 1);
  CHECK(net.transferred_bytes() == 0);
  // The next good step trains as a twin that never saw the bad one.
  Context twin_ctx({.devices = "host", .fuse_small_stages = StageFusion::always});
  Net twin(twin_ctx, 3);
  optim::SGD twin_opt(twin, {.lr = 0.05f, .momentum = 0.9f});
  const Tensor<float> tx(twin_ctx, 0, batch, Net::in_features, x.to_host());
  const Tensor<std::int32_t> tgood(twin_ctx, 1, batch, 1, good.to_host());
  twin.train_step(tx, tgood, ce, twin_opt);
  CHECK(net.train_step(x, good, ce, opt) == twin.train_step(tx, tgood, ce, twin_opt));
  CHECK(test::snapshot(net) == test::snapshot(twin));
}

TEST_CASE("the timeline shows a whole-network step as one `network` task per micro-batch") {
  using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
  loss::CrossEntropy ce;
  const auto x = test::uniform<float>(64 * Net::in_features, 11);
  const auto y = test::labels(64, Net::out_features, 12);
  float losses[2];
  for (const bool timeline : {false, true}) {
    Context ctx({.devices = "host", .fuse_small_stages = StageFusion::always, .timeline = timeline});
    Net net(ctx, 9);
    optim::SGD opt(net, {.lr = 0.05f, .momentum = 0.9f});
    net.train_step(x, y, ce, opt);
    losses[timeline] = net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 3});
    if (!timeline) continue;
    std::size_t network = 0, other = 0;
    for (const auto &span : ctx.timeline().spans()) {
      (span.kind == TaskKind::network ? network : other) += 1;
      if (span.kind == TaskKind::network) CHECK(span.stage == 0);
      CHECK(span.duration_us >= 0);
    }
    CHECK(network == 1 + 3); // the whole batch, then three micro-batches
    CHECK(other == 0);       // the updates run inside the last one; nothing crosses a boundary
  }
  CHECK(losses[1] == losses[0]); // timing changes nothing
}

TEST_CASE("a step that one whole-network operation cannot take is issued stage by stage, with the same result") {
  loss::CrossEntropy ce;
  // Trains two steps with `always` and with `never`; returns the bytes the fused run moved across
  // boundaries (0 where it took whole-network steps) after checking both runs agree.
  const auto compare = [&]<class Net>(std::size_t batch, const auto &loss, const auto &targets) {
    std::vector<float> losses[2];
    std::vector<std::vector<float>> params[2];
    std::size_t bytes = 0;
    for (const bool fused : {false, true}) {
      Context ctx({.devices = "host", .fuse_small_stages = fused ? StageFusion::always : StageFusion::never});
      Net net(ctx, 21);
      optim::SGD opt(net, {.lr = 0.05f});
      for (std::uint64_t step = 0; step < 2; ++step) {
        const auto x = test::uniform<float>(batch * Net::in_features, 40 + step);
        losses[fused].push_back(net.train_step(std::span<const float>(x), std::span(targets), loss, opt));
      }
      params[fused] = test::snapshot(net);
      if (fused) bytes = net.transferred_bytes();
    }
    CHECK(test::relative_error(losses[1], losses[0]) < 1e-5);
    for (std::size_t i = 0; i < params[0].size(); ++i) CHECK(test::relative_error(params[1][i], params[0][i]) < 1e-5);
    return bytes;
  };
  SUBCASE("more than op::small_network_layers layers in all") {
    using Net = Pipeline<Stage<Device<0>, Linear<6, 8>, ReLU, Linear<8, 8>, ReLU, Linear<8, 8>, ReLU>,
                         Stage<Device<1>, Linear<8, 8>, ReLU, Linear<8, 8>, ReLU, Linear<8, 8>, ReLU>,
                         Stage<Device<2>, Linear<8, 8>, ReLU, Linear<8, 8>, ReLU, Linear<8, 3>>>;
    static_assert(6 + 6 + 5 > backend::op::small_network_layers);
    CHECK(compare.template operator()<Net>(32, ce, test::labels(32, 3, 5)) > 0);
  }
  SUBCASE("more rows than one block takes (op::small_rows)") {
    using Net = Pipeline<Stage<Device<0>, Linear<4, 8>, ReLU>, Stage<Device<1>, Linear<8, 3>>>;
    const std::size_t batch = backend::op::small_rows + 7;
    CHECK(compare.template operator()<Net>(batch, ce, test::labels(batch, 3, 6)) > 0);
  }
  SUBCASE("the same network and batch within the limits fuses") {
    using Net = Pipeline<Stage<Device<0>, Linear<4, 8>, ReLU>, Stage<Device<1>, Linear<8, 3>>>;
    CHECK(compare.template operator()<Net>(64, ce, test::labels(64, 3, 7)) == 0);
  }
}

namespace {
// An optimizer that only issues its updates (no fused_step_group): SGD underneath.
class IssuedSgd {
public:
  template <class Net> IssuedSgd(Net &net, optim::SGDOptions o) : sgd_(net, o) {}
  const void *owner() const { return sgd_.owner(); }
  void step_group(std::size_t i) { sgd_.step_group(i); }

private:
  optim::SGD sgd_;
};
static_assert(optim::Optimizer<IssuedSgd> && !optim::Fusable<IssuedSgd>);
} // namespace

TEST_CASE("an optimizer that is not Fusable updates after the whole-network step, as a fused one inside it") {
  using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
  loss::CrossEntropy ce;
  Context ctx({.devices = "host", .fuse_small_stages = StageFusion::always});
  Net fused(ctx, 13), issued(ctx, 13);
  optim::SGD a(fused, {.lr = 0.05f, .momentum = 0.9f});
  IssuedSgd b(issued, {.lr = 0.05f, .momentum = 0.9f});
  for (std::uint64_t step = 0; step < 3; ++step) {
    const auto x = test::uniform<float>(48 * Net::in_features, 70 + step);
    const auto y = test::labels(48, Net::out_features, 80 + step);
    CHECK(fused.train_step(x, y, ce, a, schedule::GPipe{.micro_batches = 2}) ==
          issued.train_step(x, y, ce, b, schedule::GPipe{.micro_batches = 2}));
  }
  CHECK(test::snapshot(fused) == test::snapshot(issued)); // the same formulas, bit for bit
  CHECK(fused.transferred_bytes() == 0);
  CHECK(issued.transferred_bytes() == 0);
}
