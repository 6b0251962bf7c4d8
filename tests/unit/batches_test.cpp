// SPDX-License-Identifier: Apache-2.0
// data::Batches walks (x, y) in mini-batches; metrics::argmax and accuracy read a classifier's outputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include <tandem/data/batches.hpp>
#include <tandem/metrics.hpp>
#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
constexpr std::size_t rows = 23, features = 3;

// Rows whose x and y both name the row, so that every batch can be checked row by row.
struct Data {
  std::vector<float> x = test::uniform<float>(rows * features, 7);
  std::vector<std::int32_t> y;
  Data() {
    for (std::size_t r = 0; r < rows; ++r) y.push_back(static_cast<std::int32_t>(r));
  }
};

// The rows of one epoch in the order its batches give them; checks x goes with y on the way.
template <class E> std::vector<std::int32_t> walk(const Data &d, E &&epoch, std::vector<std::size_t> *sizes = nullptr) {
  std::vector<std::int32_t> seen;
  for (auto [x, y] : epoch) {
    REQUIRE(x.size() == y.size() * features);
    if (sizes) sizes->push_back(y.size());
    for (std::size_t r = 0; r < y.size(); ++r) {
      const auto row = static_cast<std::size_t>(y[r]);
      CHECK(std::equal(x.begin() + std::ptrdiff_t(r * features), x.begin() + std::ptrdiff_t((r + 1) * features),
                       d.x.begin() + std::ptrdiff_t(row * features)));
      seen.push_back(y[r]);
    }
  }
  return seen;
}
} // namespace

TEST_CASE("data::Batches in order: every row once, the last batch short, spans into the arrays") {
  const Data d;
  data::Batches batches(d.x, d.y, {.batch_size = 5});
  CHECK(batches.rows() == rows);
  CHECK(batches.features() == features);
  CHECK(batches.size() == 5);
  std::vector<std::size_t> sizes;
  const auto seen = walk(d, batches.epoch(0), &sizes);
  CHECK(seen == d.y);
  CHECK(sizes == std::vector<std::size_t>{5, 5, 5, 5, 3});
  // No copy: each batch points into the arrays given.
  std::size_t i = 0;
  for (auto [x, y] : batches.epoch(1)) {
    CHECK(x.data() == d.x.data() + i * 5 * features);
    CHECK(y.data() == d.y.data() + i * 5);
    ++i;
  }
}

TEST_CASE("data::Batches with drop_last leaves out the short batch") {
  const Data d;
  for (bool shuffle : {false, true}) {
    data::Batches batches(d.x, d.y, {.batch_size = 5, .shuffle = shuffle, .seed = 3, .drop_last = true});
    CHECK(batches.size() == 4);
    std::vector<std::size_t> sizes;
    const auto seen = walk(d, batches.epoch(0), &sizes);
    CHECK(sizes == std::vector<std::size_t>{5, 5, 5, 5});
    CHECK(std::set<std::int32_t>(seen.begin(), seen.end()).size() == 20); // 20 distinct rows
  }
}

TEST_CASE("data::Batches shuffled: every row once per epoch, another order each epoch, the same for a seed") {
  const Data d;
  data::Batches batches(d.x, d.y, {.batch_size = 4, .shuffle = true, .seed = 11});
  std::vector<std::vector<std::int32_t>> orders;
  for (std::size_t e = 0; e < 4; ++e) {
    auto seen = walk(d, batches.epoch(e));
    CHECK(seen != d.y); // 23! orders: the identity is no honest outcome
    orders.push_back(seen);
    std::sort(seen.begin(), seen.end());
    CHECK(seen == d.y); // a permutation: every row exactly once
  }
  for (std::size_t a = 0; a < orders.size(); ++a)
    for (std::size_t b = a + 1; b < orders.size(); ++b) CHECK(orders[a] != orders[b]);
  data::Batches again(d.x, d.y, {.batch_size = 4, .shuffle = true, .seed = 11});
  CHECK(walk(d, again.epoch(2)) == orders[2]); // the seed and the epoch fix the order
  CHECK(walk(d, again.next_epoch()) == orders[0]);
  CHECK(walk(d, again.next_epoch()) == orders[1]);
  data::Batches other(d.x, d.y, {.batch_size = 4, .shuffle = true, .seed = 12});
  CHECK(walk(d, other.epoch(0)) != orders[0]);
  // The batch is gathered into the epoch's own buffer, not the arrays given.
  for (auto [x, y] : batches.epoch(0)) {
    CHECK((x.data() < d.x.data() || x.data() >= d.x.data() + d.x.size()));
    CHECK((y.data() < d.y.data() || y.data() >= d.y.data() + d.y.size()));
  }
}

TEST_CASE("data::Batches with several targets per row, and bad shapes") {
  const auto x = test::uniform<float>(6 * 2, 1), y = test::uniform<float>(6 * 3, 2);
  data::Batches batches(x, y, {.batch_size = 4, .targets_per_row = 3});
  CHECK(batches.rows() == 6);
  CHECK(batches.features() == 2);
  std::size_t n = 0;
  for (auto [xb, yb] : batches.epoch(0)) {
    CHECK(yb.size() == xb.size() / 2 * 3);
    n += yb.size() / 3;
  }
  CHECK(n == 6);
  CHECK_THROWS_WITH_AS(data::Batches(x, y, {.batch_size = 0}), doctest::Contains("batch_size is 0"), Error);
  CHECK_THROWS_WITH_AS(data::Batches(x, y, {.targets_per_row = 4}),
                       doctest::Contains("y holds 18 values, not a multiple of targets_per_row 4"), Error);
  const auto odd = test::uniform<float>(13, 3);
  CHECK_THROWS_WITH_AS(data::Batches(odd, y, {.targets_per_row = 3}),
                       doctest::Contains("x holds 13 values, not a whole number of rows for the 6 rows of y"), Error);
}

TEST_CASE("metrics::argmax and accuracy: the first largest, NaN as the largest, int32 or int64 labels") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> out{0.1f,  0.7f,  0.2f,  // 1
                               0.5f,  0.5f,  -1.0f, // 0: the first of equals
                               -3.0f, nan,   2.0f,  // 1: NaN wins, as torch.argmax
                               -1.0f, -2.0f, 4.0f}; // 2
  CHECK(metrics::argmax(out, 3) == std::vector<std::int32_t>{1, 0, 1, 2});
  CHECK(metrics::accuracy(out, std::vector<std::int32_t>{1, 0, 2, 2}) == 0.75);
  CHECK(metrics::accuracy(out, std::vector<std::int64_t>{0, 0, 1, 1}) == 0.5);
  const std::vector<std::int32_t> labels{1, 1, 1, 1};
  CHECK(metrics::accuracy(std::span<const float>(out), std::span<const std::int32_t>(labels)) == 0.5);
  CHECK_THROWS_WITH_AS(metrics::argmax(out, 5), doctest::Contains("12 outputs are not whole rows of 5 classes"), Error);
  CHECK_THROWS_WITH_AS(metrics::accuracy(out, std::vector<std::int32_t>{1, 2, 0, 1, 0}),
                       doctest::Contains("12 outputs are not whole rows for 5 labels"), Error);
}

TEST_CASE("a network trains on data::Batches and metrics::accuracy reads it back") {
  // Three separable clusters; shuffled batches of 16 for 30 epochs.
  using Net = Pipeline<Stage<Device<0>, Linear<4, 16>, Tanh>, Stage<Device<1>, Linear<16, 3>>>;
  const std::size_t n = 96;
  auto x = test::uniform<float>(n * 4, 5, -0.5, 0.5);
  const auto y = test::labels(n, 3, 6);
  for (std::size_t r = 0; r < n; ++r) x[r * 4 + std::size_t(y[r])] += 2.0f;
  Context ctx({.devices = "host"});
  Net net(ctx, 4);
  optim::Adam opt(net, {.lr = 1e-2f});
  loss::CrossEntropy ce;
  const double before = metrics::accuracy(net.forward(x), y);
  data::Batches batches(x, y, {.batch_size = 16, .shuffle = true, .seed = 1});
  for (std::size_t e = 0; e < 30; ++e)
    for (auto [xb, yb] : batches.epoch(e)) net.train_step(xb, yb, ce, opt);
  const double after = metrics::accuracy(net.forward(x), y);
  INFO("accuracy ", before, " -> ", after);
  CHECK(after > 0.95);
  CHECK(after > before);
}

TEST_CASE("data::Batches with a batch size beyond the rows: one batch of every row, none with drop_last") {
  const Data d;
  for (const std::size_t size :
       {rows, rows + 1, std::numeric_limits<std::size_t>::max() / 2 + 1, std::numeric_limits<std::size_t>::max()}) {
    CAPTURE(size);
    data::Batches batches(d.x, d.y, {.batch_size = size});
    CHECK(batches.size() == 1);
    CHECK(walk(d, batches.epoch(0)) == d.y);
    data::Batches shuffled(d.x, d.y, {.batch_size = size, .shuffle = true});
    auto seen = walk(d, shuffled.epoch(0));
    std::sort(seen.begin(), seen.end());
    CHECK(seen == d.y);
    data::Batches dropped(d.x, d.y, {.batch_size = size, .drop_last = size != rows});
    CHECK(dropped.size() == (size == rows ? 1u : 0u));
  }
}

TEST_CASE("metrics::evaluate: the loss and accuracy of forward alone, under any schedule, changing nothing") {
  using Net = Pipeline<Stage<Device<0>, Linear<4, 16>, Tanh>, Stage<Device<1>, Linear<16, 3>>>;
  Context ctx({.devices = "host"});
  Net net(ctx, 4);
  optim::Adam opt(net, {.lr = 1e-2f});
  const loss::CrossEntropy ce;
  const auto x = test::uniform<float>(20 * 4, 8);
  const auto y = test::labels(20, 3, 9);
  net.train_step(x, y, ce, opt); // an optimizer with state, which evaluation must leave alone
  std::vector<std::vector<float>> weights, grads;
  for (const auto &p : net.parameters()) {
    weights.push_back(p.to_host());
    grads.push_back(p.grad_to_host());
  }
  const auto e = metrics::evaluate(net, x, y, ce);
  const auto e4 = metrics::evaluate(net, x, y, ce, schedule::OneFOneB{.micro_batches = 4});
  CHECK(e.loss == e4.loss);
  REQUIRE(e.accuracy);
  CHECK(*e.accuracy == metrics::accuracy(net.forward(x), y));
  CHECK(e4.accuracy == e.accuracy);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    CHECK(weights[i] == net.parameters()[i].to_host());
    CHECK(grads[i] == net.parameters()[i].grad_to_host());
  }
  CHECK(opt.steps(0) == 1);
  // The loss a training step would report (forward_backward computes it the same way).
  CHECK(static_cast<float>(e.loss) == doctest::Approx(net.forward_backward(x, y, ce)).epsilon(1e-6));
  const std::vector<std::int64_t> y64(y.begin(), y.end());
  CHECK(metrics::evaluate(net, x, y64, ce).loss == e.loss);
  auto bad = y;
  bad[3] = 3;
  CHECK_THROWS_WITH_AS(metrics::evaluate(net, x, bad, ce), doctest::Contains("label 3 is 3, outside [0, 3)"), Error);

  // MSE: the mean of the squared differences.
  const auto targets = test::uniform<float>(20 * 3, 10);
  const auto out = net.forward(std::span<const float>(x), schedule::GPipe{.micro_batches = 3});
  double sum = 0;
  for (std::size_t i = 0; i < out.size(); ++i) sum += double(out[i] - targets[i]) * double(out[i] - targets[i]);
  const auto m = metrics::evaluate(net, x, targets, loss::MSE{}, schedule::GPipe{.micro_batches = 3});
  CHECK(m.loss == doctest::Approx(sum / double(out.size())).epsilon(1e-12));
  CHECK_FALSE(m.accuracy);
}
