// SPDX-License-Identifier: Apache-2.0
// Net::memory_plan is exact: with each logical device's capacity (ContextOptions::device_memory)
// set to the plan's device_bytes(d), a fresh network, its optimizer and a step fit and fill the
// devices to the byte; one byte less on any device is an Error before any parameter changes, and
// the network then trains on with a smaller batch.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace memory_plan_test {

// Uneven widths and three devices, one of which holds two stages; the last stage keeps saved
// memory (LayerNorm) and needs per-call scratch.
using Mlp = Pipeline<Stage<Device<0>, Linear<6, 24>, ReLU>, Stage<Device<2>, Linear<24, 10>, Tanh>,
                     Stage<Device<1>, Linear<10, 16>, GELU>, Stage<Device<2>, LayerNorm<16>, Linear<16, 3>>>;
// Sequences: attention's saved and scratch memory, token input.
constexpr std::size_t V = 11, T = 4, D = 8;
using Gpt =
    Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>>,
             Stage<Device<1>, Residual<LayerNorm<D>, CausalSelfAttention<D, 2, T>>, LayerNorm<D>, Linear<D, V>>>;

// A plan is a constant: a network that cannot fit a budget need not compile.
static_assert(Mlp::memory_plan(64, schedule::GPipe{.micro_batches = 8}, optim::AdamOptions{}).device_bytes(2) > 0);
static_assert(Mlp::memory_plan(64, schedule::OneFOneB{.micro_batches = 8}).stages[0].live == 4);
static_assert(Mlp::memory_plan(64, schedule::GPipe{.micro_batches = 8}).stages[0].live == 8);
// ZB-H1 keeps min(stages, m) micro-batches on every stage, each entry with its split Linear's
// output gradient beside its output: stage 0's 4 entries of 8 rows of 24 + 24 values.
static_assert(Mlp::memory_plan(64, schedule::ZeroBubbleH1{.micro_batches = 8}).stages[3].live == 4);
static_assert(Mlp::memory_plan(64, schedule::ZeroBubbleH1{.micro_batches = 8}).stages[0].activations ==
              4 * 8 * (24 + 24) * sizeof(float));
static_assert(Mlp::memory_plan(64).device_bytes(1) <
              Mlp::memory_plan(64, schedule::Naive{}, optim::AdamOptions{}).device_bytes(1));

// Two blocks a stage, their activations kept (Sequential) or recomputed in the backward.
template <template <class...> class Chain>
using Blocks = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>,
                              Chain<Residual<LayerNorm<D>, CausalSelfAttention<D, 2, T>>,
                                    Residual<LayerNorm<D>, Linear<D, 4 * D>, GELU, Linear<4 * D, D>>>>,
                        Stage<Device<1>, Chain<Residual<LayerNorm<D>, CausalSelfAttention<D, 2, T>>>, Linear<D, V>>>;
constexpr auto kept_plan =
    Blocks<Sequential>::memory_plan(8 * T, schedule::GPipe{.micro_batches = 4}, optim::AdamWOptions{});
constexpr auto recomputed_plan =
    Blocks<Recompute>::memory_plan(8 * T, schedule::GPipe{.micro_batches = 4}, optim::AdamWOptions{});
static_assert(recomputed_plan.device_bytes(0) < kept_plan.device_bytes(0));

template <class Net> std::vector<typename Net::input_type> inputs(std::size_t rows, std::uint64_t seed) {
  if constexpr (std::is_same_v<typename Net::input_type, std::int32_t>) return test::labels(rows, V, seed);
  else return test::uniform<float>(rows * Net::in_features, seed);
}

// Builds the network and its optimizer and takes one step of `rows` rows on a Context whose
// devices hold `capacity` bytes each; `after` sees the context and the network once it is built.
template <class Net, class Opt, class Sched, class After>
void run(const std::vector<std::size_t> &capacity, HostExecution where, std::size_t rows, const Sched &sched,
         const typename Opt::Options &options, After &&after) {
  Context ctx({.devices = "host", .quiet = true, .host_execution = where, .device_memory = capacity});
  Net net(ctx, 7);
  Opt opt(net, options);
  after(ctx, net, opt, rows, sched);
}

template <class Net, class Opt, class Sched>
void check_exact(const Sched &sched, const typename Opt::Options &options, std::size_t rows) {
  constexpr auto plan_of = [](std::size_t r, const Sched &s, const typename Opt::Options &o) {
    return Net::memory_plan(r, s, o);
  };
  const auto plan = plan_of(rows, sched, options);
  std::vector<std::size_t> exact;
  for (std::size_t d = 0; d < Net::num_devices; ++d) exact.push_back(plan.device_bytes(d));
  const auto x = inputs<Net>(rows, 1);
  const auto y = test::labels(rows, Net::out_features, 2);
  for (const HostExecution where : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(where));
    // Exactly the plan: everything fits, and every device is full to the byte.
    run<Net, Opt>(exact, where, rows, sched, options, [&](Context &ctx, Net &net, Opt &opt, std::size_t r, auto &s) {
      const float l = net.train_step(x, y, loss::CrossEntropy{}, opt, s);
      CHECK(std::isfinite(l));
      for (std::size_t d = 0; d < Net::num_devices; ++d) CHECK(ctx.bytes_in_use(d) == exact[d]);
      (void)r;
    });
    // One byte short on one device: an Error (at construction, or before the step changes a
    // parameter), then a smaller batch trains.
    for (std::size_t d = 0; d < Net::num_devices; ++d) {
      CAPTURE(d);
      auto short_one = exact;
      short_one[d] -= 1;
      bool built = false;
      try {
        run<Net, Opt>(short_one, where, rows, sched, options, [&](Context &, Net &net, Opt &opt, std::size_t, auto &s) {
          built = true;
          const auto before = test::snapshot(net);
          bool thrown = false;
          try {
            (void)net.train_step(x, y, loss::CrossEntropy{}, opt, s);
          } catch (const Error &e) {
            thrown = true;
            CHECK(std::string(e.what()).find("Device<" + std::to_string(d) + ">") != std::string::npos);
          }
          REQUIRE(thrown);
          CHECK(test::snapshot(net) == before);
          // Half the samples, in as many micro-batches, need less of everything that grows with
          // the batch.
          const std::size_t half = rows / 2 / Net::sequence_length * Net::sequence_length;
          const std::vector<typename Net::input_type> hx(x.begin(), x.begin() + half * Net::in_features);
          const std::vector<std::int32_t> hy(y.begin(), y.begin() + half);
          CHECK(std::isfinite(float(net.train_step(hx, hy, loss::CrossEntropy{}, opt, s))));
          CHECK(test::snapshot(net) != before);
        });
      } catch (const Error &e) {
        CHECK_FALSE(built); // (the capacity ran out while building: nothing to keep)
        CHECK(std::string(e.what()).find("capacity") != std::string::npos);
      }
    }
  }
}

template <class Net, class Sched> void every_optimizer(const Sched &sched, std::size_t rows) {
  check_exact<Net, optim::SGD>(sched, {.lr = 0.05f}, rows);
  check_exact<Net, optim::SGD>(sched, {.lr = 0.05f, .momentum = 0.9f}, rows);
  check_exact<Net, optim::Adam>(sched, {}, rows);
  check_exact<Net, optim::Adam>(sched, {.amsgrad = true}, rows);
  check_exact<Net, optim::AdamW>(sched, {}, rows);
  check_exact<Net, optim::AdamW>(sched, {.amsgrad = true}, rows);
}

} // namespace memory_plan_test
using namespace memory_plan_test;

TEST_CASE("memory_plan: the plan is what a step allocates, byte for byte, under every schedule and optimizer") {
  SUBCASE("Naive") { every_optimizer<Mlp>(schedule::Naive{}, 37); }
  SUBCASE("GPipe") { every_optimizer<Mlp>(schedule::GPipe{.micro_batches = 4}, 37); }
  SUBCASE("1F1B") { every_optimizer<Mlp>(schedule::OneFOneB{.micro_batches = 5}, 37); }
  SUBCASE("a transformer, GPipe") { every_optimizer<Gpt>(schedule::GPipe{.micro_batches = 3}, 6 * T); }
  SUBCASE("a transformer, 1F1B") { every_optimizer<Gpt>(schedule::OneFOneB{.micro_batches = 2}, 5 * T); }
  SUBCASE("ZB-H1") { check_exact<Mlp, optim::Adam>(schedule::ZeroBubbleH1{.micro_batches = 5}, {}, 37); }
  SUBCASE("a transformer, Interleaved1F1B") {
    check_exact<Gpt, optim::AdamW>(schedule::Interleaved1F1B{.micro_batches = 2}, {}, 6 * T);
  }
}

TEST_CASE("memory_plan: a network that does not fit without Recompute fits with it") {
  check_exact<Blocks<Recompute>, optim::AdamW>(schedule::GPipe{.micro_batches = 4}, {}, 8 * T);
  const std::vector<std::size_t> capacity{recomputed_plan.device_bytes(0), recomputed_plan.device_bytes(1)};
  const auto x = test::labels(8 * T, V, 3), y = test::labels(8 * T, V, 4);
  Context ctx({.devices = "host", .quiet = true, .device_memory = capacity});
  Blocks<Recompute> fits(ctx, 5);
  optim::AdamW fits_opt(fits, {});
  CHECK(
      std::isfinite(float(fits.train_step(x, y, loss::CrossEntropy{}, fits_opt, schedule::GPipe{.micro_batches = 4}))));
  Context other({.devices = "host", .quiet = true, .device_memory = capacity});
  Blocks<Sequential> kept(other, 5);
  optim::AdamW kept_opt(kept, {});
  CHECK_THROWS_AS((void)kept.train_step(x, y, loss::CrossEntropy{}, kept_opt, schedule::GPipe{.micro_batches = 4}),
                  Error);
}

TEST_CASE("memory_plan: its parts follow from the widths, the schedule and the optimizer") {
  // Stage 0 of Mlp: Linear<6, 24>, ReLU: 6*24 + 24 parameters; one slot holds 2 * (6 + 24) values
  // per row, one stash entry Linear's output (24), the workspace two buffers of the widest (24).
  constexpr auto plan = Mlp::memory_plan(40, schedule::OneFOneB{.micro_batches = 3}, optim::AdamOptions{});
  constexpr std::size_t P = 6 * 24 + 24, rows = 14; // 40 rows in 3: 14, 13, 13
  static_assert(plan.micro_batch_rows == rows);
  static_assert(plan.stages[0].parameters == P * 4 && plan.stages[0].gradients == P * 4);
  static_assert(plan.stages[0].optimizer_state == 2 * P * 4 + sizeof(backend::op::AdamCount));
  static_assert(plan.stages[0].live == 3); // min(stages - stage, m)
  static_assert(plan.stages[0].boundary == 3 * rows * 2 * (6 + 24) * 4);
  static_assert(plan.stages[0].activations == 3 * rows * 24 * 4);
  static_assert(plan.stages[0].workspace == rows * 2 * 24 * 4);
  static_assert(plan.stages[0].loss == 0);
  static_assert(plan.stages[3].loss == sizeof(detail::StepResult<float>) + 40 * sizeof(std::int32_t));
  // Device 2 holds stages 1 and 3.
  static_assert(plan.device_bytes(2) == plan.stages[1].total() + plan.stages[3].total());
  const std::string table = Mlp::describe_memory(40, schedule::OneFOneB{.micro_batches = 3}, optim::AdamOptions{});
  CHECK(table.find("Device<2>: " + std::to_string(plan.device_bytes(2)) + " bytes") != std::string::npos);
  CHECK(table.find("activations") != std::string::npos);
}

TEST_CASE("device_memory: an allocation beyond a device's capacity names the device and the numbers") {
  Context ctx({.devices = "host", .quiet = true, .device_memory = {0, 1000}});
  Tensor<float> fits(ctx, Device<1>{}, 200, 1); // 800 bytes of 1000
  CHECK(ctx.bytes_in_use(1) == 800);
  try {
    Tensor<float> more(ctx, Device<1>{}, 60, 1);
    FAIL("no Error");
  } catch (const Error &e) {
    const std::string what = e.what();
    CHECK(what.find("Device<1>") != std::string::npos);
    CHECK(what.find("capacity of 1000 bytes") != std::string::npos);
    CHECK(what.find("800 bytes being in use") != std::string::npos);
    CHECK(what.find("allocating 240 bytes") != std::string::npos);
  }
  CHECK(ctx.bytes_in_use(1) == 800);
  { Tensor<float> last(ctx, Device<1>{}, 50, 1); } // the rest fits exactly, and is given back
  CHECK(ctx.bytes_in_use(1) == 800);
  Tensor<float> unlimited(ctx, Device<0>{}, 1 << 16, 1); // 0: no limit
  CHECK(ctx.bytes_in_use(0) == (std::size_t{1} << 18));
}
