// SPDX-License-Identifier: Apache-2.0
// The workspace policy: buffers fit the step that needs them, a huge batch does not hold its
// memory for good, release_workspace() gives it all back, and none of it changes a result.
#include <doctest/doctest.h>

#include <cstddef>
#include <string>
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

  TEST_CASE("workspace: every allocation of a step's buffers may fail, and the next step trains as if none had") {
    // Each n fails the n-th allocation of a step that must make new buffers (a larger batch, more
    // micro-batches) until a step gets through; after each failure, the same step with nothing
    // failing gives the bits of a network that never failed, also with a half-made workspace.
    Context ctx({.devices = "host"});
    loss::CrossEntropy ce;
    const auto x = test::uniform<float>(48 * 10, 8);
    const auto y = test::labels(48, 2, 9);
    const auto small_x = std::vector<float>(x.begin(), x.begin() + 8 * 10);
    const auto small_y = std::vector<std::int32_t>(y.begin(), y.begin() + 8);
    Net reference(ctx, 11);
    optim::Adam ref_opt(reference, {.lr = 0.01f});
    reference.train_step(small_x, small_y, ce, ref_opt);
    const float expected = reference.train_step(x, y, ce, ref_opt, schedule::OneFOneB{.micro_batches = 6});
    const auto expected_params = test::snapshot(reference);
    std::size_t failures = 0;
    for (std::size_t n = 1;; ++n) {
      Net net(ctx, 11);
      optim::Adam opt(net, {.lr = 0.01f});
      net.train_step(small_x, small_y, ce, opt);
      const auto before = test::snapshot(net);
      backend::fail_allocation_after(n);
      bool failed = false;
      try {
        net.train_step(x, y, ce, opt, schedule::OneFOneB{.micro_batches = 6});
      } catch (const Error &e) {
        failed = true;
        CHECK(std::string(e.what()).find("out of memory") != std::string::npos);
      }
      backend::fail_allocation_after(0);
      if (!failed) break; // the n-th allocation is past the step's last
      ++failures;
      CHECK(test::snapshot(net) == before); // nothing changed
      CHECK(net.train_step(x, y, ce, opt, schedule::OneFOneB{.micro_batches = 6}) == expected);
      CHECK(test::snapshot(net) == expected_params);
      REQUIRE(n < 1000);
    }
    CHECK(failures >= 8); // slots, stash and scratch of two stages, and the targets' copy
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
