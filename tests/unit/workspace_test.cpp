// SPDX-License-Identifier: Apache-2.0
// The workspace policy: buffers fit the step that needs them, a huge batch does not hold its
// memory for good, release_workspace() gives it all back, and none of it changes a result.
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
using Net = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

// Floats a step of m micro-batches of `rows` rows holds at most on both stages: each slot's
// boundary buffers, the stash entries (at most m) and the scratch pair, per stage's widths.
std::size_t bound_bytes(std::size_t m, std::size_t rows) {
  const std::size_t stage0 = m * 2 * (10 + 20) + m * 20 + 2 * 20, stage1 = m * 2 * (20 + 2) + m * 2 * 10 + 2 * 20;
  return (stage0 + stage1) * rows * sizeof(float) + m * rows * sizeof(std::int32_t);
}
} // namespace

TEST_SUITE("stress") {
  TEST_CASE("workspace: a huge batch's buffers are given back when smaller steps follow") {
    Context ctx({.devices = "host"});
    Net net(ctx, 3), reference(ctx, 3);
    optim::SGD opt(net, {.lr = 0.01f}), ref_opt(reference, {.lr = 0.01f});
    loss::CrossEntropy ce;
    CHECK(net.workspace_bytes() == 0);

    const std::size_t huge = 200'000;
    const auto hx = test::uniform<float>(huge * 10, 1);
    const auto hy = test::labels(huge, 2, 2);
    net.train_step(hx, hy, ce, opt);
    reference.train_step(hx, hy, ce, ref_opt);
    const std::size_t after_huge = net.workspace_bytes();
    CHECK(after_huge >= huge * (10 + 20 + 20 + 2) * sizeof(float)); // at least the boundaries it used
    CHECK(after_huge <= bound_bytes(1, huge));

    // GPipe with 64 micro-batches of one row: 64 slots, each of one row, not 64 of 200,000.
    const auto x = test::uniform<float>(64 * 10, 3);
    const auto y = test::labels(64, 2, 4);
    const float l = net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 64});
    CHECK(net.workspace_bytes() <= bound_bytes(64, 1) + huge * sizeof(std::int32_t));
    CHECK(net.workspace_bytes() < after_huge / 100);

    // The same training on a network that never shrank (the reference keeps its size: released
    // by hand, then made again by the step) gives the same bits.
    reference.release_workspace();
    CHECK(reference.workspace_bytes() == 0);
    CHECK(reference.train_step(x, y, ce, ref_opt, schedule::GPipe{.micro_batches = 64}) == l);
    CHECK(test::snapshot(net) == test::snapshot(reference));
    CHECK(reference.workspace_bytes() > 0);
  }

  TEST_CASE("workspace: an epoch's full and last batches share one size, without reallocating") {
    Context ctx({.devices = "host"});
    Net net(ctx, 5);
    optim::SGD opt(net, {.lr = 0.01f});
    loss::CrossEntropy ce;
    const auto x = test::uniform<float>(64 * 10, 6);
    const auto y = test::labels(64, 2, 7);
    net.train_step(x, y, ce, opt, schedule::GPipe{.micro_batches = 4});
    const std::size_t full = net.workspace_bytes();
    CHECK(full > 0);
    const std::vector<float> last_x(x.begin(), x.begin() + 13 * 10);
    const std::vector<std::int32_t> last_y(y.begin(), y.begin() + 13);
    net.train_step(last_x, last_y, ce, opt, schedule::GPipe{.micro_batches = 4});
    CHECK(net.workspace_bytes() == full);
    net.train_step(x, y, ce, opt, schedule::OneFOneB{.micro_batches = 4});
    CHECK(net.workspace_bytes() == full);
  }
}
