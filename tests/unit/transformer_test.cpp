// SPDX-License-Identifier: Apache-2.0
// The transformer layers (layers/embedding, positional_embedding, layer_norm,
// causal_self_attention, sequential, residual, dropout, recompute) in the protocol and in a
// pipeline: their gradients against finite differences, nested names, sequences that
// micro-batches keep whole, token input, every schedule equal to the whole batch, and Recompute
// equal to Sequential bit for bit, with the memory it saves. PyTorch parity is in
// tests/reference/transformer_reference.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <tandem/tandem.hpp>
#include <tandem/testing/gradient_check.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace transformer_test {

template <class L> void passes(testing::GradientCheckOptions options = {}) {
  const auto report = testing::check_gradients<L>(options);
  INFO(report.summary());
  CHECK(report.passed());
}

constexpr std::size_t V = 13, T = 4, D = 8, H = 2;
using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, H, T>>;
using Mlp = Residual<LayerNorm<D>, Linear<D, 2 * D>, GELU, Dropout<20>, Linear<2 * D, D>>;
using Gpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn>,
                     Stage<Device<1>, Mlp, Attn, LayerNorm<D>, Linear<D, V>>>;

// Four stages cycling through two devices, so that Interleaved1F1B runs too, with Linears of
// their own in a stage (their backwards split under ZB-H1) beside layers that do not split.
using Cycle = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>>, Stage<Device<1>, Attn>,
                       Stage<Device<0>, Mlp, Linear<D, 2 * D>, GELU, Linear<2 * D, D>>,
                       Stage<Device<1>, LayerNorm<D>, Linear<D, V>>>;

std::vector<std::int32_t> tokens(std::size_t n, std::uint64_t seed) { return test::labels(n, V, seed); }

// Three steps on one batch of the Cycle network: the losses, then the parameters and an output.
template <class Opt, class Sched>
std::vector<std::vector<float>> train_cycle(const typename Opt::Options &o, const Sched &sched) {
  Context ctx;
  Cycle net(ctx, 5);
  Opt opt(net, o);
  std::vector<float> losses;
  for (std::uint64_t k = 0; k < 3; ++k)
    losses.push_back(net.train_step(tokens(8 * T, 10 + k), tokens(8 * T, 20 + k), loss::CrossEntropy{}, opt, sched));
  auto values = test::snapshot(net);
  values.push_back(net.forward(tokens(2 * T, 30)));
  values.insert(values.begin(), losses);
  return values;
}

template <class Opt> void cycle_trains_as_naive(const typename Opt::Options &o, double tolerance) {
  const auto naive = train_cycle<Opt>(o, schedule::Naive{});
  const std::vector<std::vector<std::vector<float>>> others{
      train_cycle<Opt>(o, schedule::GPipe{.micro_batches = 4}),
      train_cycle<Opt>(o, schedule::OneFOneB{.micro_batches = 4}),
      train_cycle<Opt>(o, schedule::ZeroBubbleH1{.micro_batches = 4}),
      train_cycle<Opt>(o, schedule::Interleaved1F1B{.micro_batches = 4})};
  for (std::size_t s = 0; s < others.size(); ++s)
    for (std::size_t i = 0; i < naive.size(); ++i) {
      INFO("schedule ", s, " (GPipe, 1F1B, ZB-H1, Interleaved1F1B), ", i == 0 ? "losses" : "parameter or output ", i);
      CHECK(test::relative_error(others[s][i], naive[i]) <= tolerance);
    }
}

template <class Sched> std::vector<std::vector<float>> train(const Sched &sched, std::vector<float> &losses) {
  Context ctx;
  Gpt net(ctx, 5);
  optim::AdamW opt(net, {.lr = 1e-2f});
  for (std::uint64_t k = 0; k < 3; ++k) // (one batch again and again: the loss must fall)
    losses.push_back(net.train_step(tokens(6 * T, 10), tokens(6 * T, 20), loss::CrossEntropy{}, opt, sched));
  auto values = test::snapshot(net);
  values.push_back(net.forward(tokens(2 * T, 30)));
  return values;
}

// The same network with one chain of layers as Sequential or as Recompute (Chain).
template <template <class...> class Chain>
using ChainGpt = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Chain<Attn>>,
                          Stage<Device<1>, Chain<Mlp, Attn>, LayerNorm<D>, Linear<D, V>>>;
template <template <class...> class Chain>
using ChainMlp =
    Pipeline<Stage<Device<0>, Linear<6, 16>, Chain<ReLU, Linear<16, 16>, Dropout<25>, Tanh, Linear<16, 12>>>,
             Stage<Device<1>, Chain<Linear<12, 8>, Sigmoid>, Linear<8, 3>>>;

// What a few steps leave: each step's loss, every parameter and its gradient, and an inference.
struct Trained {
  std::vector<float> losses;
  std::vector<std::vector<float>> values;
  bool operator==(const Trained &) const = default;
};
template <class Net, class Opt, class Sched>
Trained train_twin(HostExecution mode, const Sched &sched, const std::vector<std::vector<std::int32_t>> &xs,
                   const std::vector<std::vector<std::int32_t>> &ys, const std::vector<float> &features) {
  Context ctx({.host_execution = mode});
  Net net(ctx, 7);
  Opt opt = [&] {
    if constexpr (std::is_same_v<Opt, optim::SGD>) return Opt(net, {.lr = 0.1f, .momentum = 0.9f});
    else return Opt(net, {.lr = 1e-2f});
  }();
  Trained r;
  for (std::size_t k = 0; k < ys.size(); ++k) {
    if constexpr (std::is_same_v<typename Net::input_type, std::int32_t>)
      r.losses.push_back(net.train_step(xs[k], ys[k], loss::CrossEntropy{}, opt, sched));
    else
      r.losses.push_back(
          net.train_step(test::uniform<float>(ys[k].size() * 6, 40 + k), ys[k], loss::CrossEntropy{}, opt, sched));
  }
  r.values = test::snapshot(net);
  for (const auto &p : net.parameters()) r.values.push_back(p.grad_to_host());
  if constexpr (std::is_same_v<typename Net::input_type, std::int32_t>) r.values.push_back(net.forward(xs[0]));
  else r.values.push_back(net.forward(features));
  return r;
}

} // namespace transformer_test
using namespace transformer_test;

TEST_CASE("transformer layers pass the gradient checker") {
  SUBCASE("Embedding") { passes<Embedding<7, 5>>(); }
  SUBCASE("PositionalEmbedding") { passes<PositionalEmbedding<4, 5>>({.batch = 2}); }
  SUBCASE("LayerNorm") { passes<LayerNorm<6>>(); }
  SUBCASE("CausalSelfAttention") { passes<CausalSelfAttention<8, 2, 4>>({.batch = 2}); }
  SUBCASE("Sequential") { passes<Sequential<Linear<4, 6>, Tanh, Linear<6, 3>>>(); }
  SUBCASE("Residual of an MLP") { passes<Residual<LayerNorm<6>, Linear<6, 12>, GELU, Linear<12, 6>>>(); }
  SUBCASE("Residual of attention") { passes<Residual<LayerNorm<8>, CausalSelfAttention<8, 4, 3>>>({.batch = 2}); }
  SUBCASE("Dropout (a training call's mask)") { passes<Dropout<30>>({.width = 7}); }
  SUBCASE("Linear, whose backward also runs as two tasks") { passes<Linear<5, 3>>(); }
  SUBCASE("Recompute of an MLP") { passes<Recompute<Linear<4, 6>, Tanh, Dropout<30>, Linear<6, 3>>>(); }
  SUBCASE("Recompute of a transformer block") {
    passes<Recompute<Residual<LayerNorm<8>, CausalSelfAttention<8, 4, 3>>,
                     Residual<LayerNorm<8>, Linear<8, 16>, GELU, Dropout<20>, Linear<16, 8>>>>({.batch = 2});
  }
}

// Recompute keeps nothing per micro-batch: the stage holds its input already. Its per-call memory
// is the chain's kept memory, its output and the chain's own per-call memory, each from a multiple
// of 64 values.
static_assert(saved_values<Recompute<Attn, Mlp>>(D) == 0);
static_assert(saved_values<Recompute<Linear<4, 6>, Tanh, Linear<6, 3>>>(4) == 0);
static_assert(saved_values<Sequential<Attn, Mlp>>(D) == 132 && scratch_values<Sequential<Attn, Mlp>>(D) == 104);
static_assert(scratch_values<Recompute<Attn, Mlp>>(D) == 256 + 104); // 132 to 192, + 8 to 256; 104
static_assert(scratch_values<Recompute<Linear<4, 6>, Tanh, Linear<6, 3>>>(4) == 128 + 2 * 6); // 6 + 6 to 64, + 3 to 128
static_assert(Recompute<Attn, Mlp>::sequence_length == T && Recompute<Mlp>::draws_random &&
              !Recompute<Attn>::draws_random && Recompute<Attn, Mlp>::sets_gradients);

TEST_CASE("Recompute trains bit for bit as Sequential, under every schedule and host execution") {
  std::vector<std::vector<std::int32_t>> xs, ys, labels;
  for (std::uint64_t k = 0; k < 3; ++k) { // (one batch again and again: the loss must fall)
    xs.push_back(tokens(6 * T, 50));
    ys.push_back(tokens(6 * T, 60));
    labels.push_back(test::labels(12, 3, 70));
  }
  const auto features = test::uniform<float>(5 * 6, 80);
  auto both = [&]<class Opt>(HostExecution mode, const auto &sched) {
    const auto seq = train_twin<ChainGpt<Sequential>, Opt>(mode, sched, xs, ys, features);
    const auto rec = train_twin<ChainGpt<Recompute>, Opt>(mode, sched, xs, ys, features);
    CHECK(rec.losses == seq.losses);
    CHECK(rec.values == seq.values);
    CHECK(seq.losses.back() < seq.losses.front()); // (it trained)
    const auto seq_mlp = train_twin<ChainMlp<Sequential>, Opt>(mode, sched, {}, labels, features);
    const auto rec_mlp = train_twin<ChainMlp<Recompute>, Opt>(mode, sched, {}, labels, features);
    CHECK(rec_mlp == seq_mlp);
    CHECK(seq_mlp.losses.back() < seq_mlp.losses.front());
  };
  for (const HostExecution mode : {HostExecution::workers, HostExecution::calling_thread}) {
    CAPTURE(static_cast<int>(mode));
    both.operator()<optim::SGD>(mode, schedule::Naive{});
    both.operator()<optim::Adam>(mode, schedule::GPipe{.micro_batches = 3});
    both.operator()<optim::SGD>(mode, schedule::OneFOneB{.micro_batches = 4});
    both.operator()<optim::AdamW>(mode, schedule::ZeroBubbleH1{.micro_batches = 3}); // (Recompute runs whole in B)
  }
}

TEST_CASE("Recompute names its parameters as Sequential does") {
  Context ctx;
  ChainGpt<Sequential> seq(ctx, 1);
  ChainGpt<Recompute> rec(ctx, 1);
  std::vector<std::string> a, b;
  for (const auto &p : seq.parameters()) a.push_back(p.name());
  for (const auto &p : rec.parameters()) b.push_back(p.name());
  CHECK(a == b);
  CHECK(rec.parameter("stage1.0.1.1.in_proj_weight").rows() == 3 * D); // chain 0 of stage 1, its Attn, attention
  CHECK(rec.parameter("stage0.2.0.0.weight").to_host() == std::vector<float>(D, 1.0f));
  CHECK(test::snapshot(rec) == test::snapshot(seq));
}

TEST_CASE("Recompute's stage holds less by what its traits say") {
  using Seq = ChainGpt<Sequential>;
  using Rec = ChainGpt<Recompute>;
  Context ctx;
  Seq seq(ctx, 2);
  Rec rec(ctx, 2);
  optim::SGD opt_seq(seq, {.lr = 1e-2f}), opt_rec(rec, {.lr = 1e-2f});
  const auto x = tokens(6 * T, 1), y = tokens(6 * T, 2);
  const schedule::GPipe sched{.micro_batches = 3};
  CHECK(seq.train_step(x, y, loss::CrossEntropy{}, opt_seq, sched) ==
        rec.train_step(x, y, loss::CrossEntropy{}, opt_rec, sched));
  const std::size_t rows = 2 * T; // a micro-batch: 2 sequences
  // Per stage: its stash entries no longer hold the chain's memory; its per-call memory is the most
  // any of its layers needs, now Recompute's.
  auto most = [](auto... v) { return std::max({v...}); };
  const std::size_t first_others =
      most(scratch_values<Embedding<V, D>>(1), scratch_values<PositionalEmbedding<T, D>>(D));
  const std::size_t second_others = most(scratch_values<LayerNorm<D>>(D), scratch_values<Linear<D, V>>(D));
  std::size_t saved = 0, more_scratch = 0;
  saved += seq.peak_live_micro_batches(0) * saved_values<Sequential<Attn>>(D);
  saved += seq.peak_live_micro_batches(1) * saved_values<Sequential<Mlp, Attn>>(D);
  more_scratch +=
      most(first_others, scratch_values<Recompute<Attn>>(D)) - most(first_others, scratch_values<Sequential<Attn>>(D));
  more_scratch += most(second_others, scratch_values<Recompute<Mlp, Attn>>(D)) -
                  most(second_others, scratch_values<Sequential<Mlp, Attn>>(D));
  CHECK(seq.peak_live_micro_batches(0) == 3);
  CHECK(rec.peak_live_micro_batches(1) == seq.peak_live_micro_batches(1));
  CHECK(seq.workspace_bytes() - rec.workspace_bytes() == rows * (saved - more_scratch) * sizeof(float));
  CHECK(rec.workspace_bytes() < seq.workspace_bytes());
}

TEST_CASE("composite layers nest their parameters' names as nn.Sequential does") {
  Context ctx;
  Gpt net(ctx, 1);
  std::vector<std::string> names;
  for (const auto &p : net.parameters()) names.push_back(p.name());
  const std::vector<std::string> expected{"stage0.0.weight",
                                          "stage0.1.weight",
                                          "stage0.2.0.weight",
                                          "stage0.2.0.bias",
                                          "stage0.2.1.in_proj_weight",
                                          "stage0.2.1.in_proj_bias",
                                          "stage0.2.1.out_proj.weight",
                                          "stage0.2.1.out_proj.bias",
                                          "stage1.0.0.weight",
                                          "stage1.0.0.bias",
                                          "stage1.0.1.weight",
                                          "stage1.0.1.bias",
                                          "stage1.0.4.weight",
                                          "stage1.0.4.bias",
                                          "stage1.1.0.weight",
                                          "stage1.1.0.bias",
                                          "stage1.1.1.in_proj_weight",
                                          "stage1.1.1.in_proj_bias",
                                          "stage1.1.1.out_proj.weight",
                                          "stage1.1.1.out_proj.bias",
                                          "stage1.2.weight",
                                          "stage1.2.bias",
                                          "stage1.3.weight",
                                          "stage1.3.bias"};
  CHECK(names == expected);
  CHECK(net.parameter("stage0.2.1.in_proj_weight").rows() == 3 * D);
  CHECK(net.parameter("stage0.2.1.in_proj_bias").cols() == 1);
  static_assert(Gpt::sequence_length == T);
  static_assert(std::is_same_v<Gpt::input_type, std::int32_t>);
  static_assert(Gpt::in_features == 1 && Gpt::out_features == V);
}

TEST_CASE("LayerNorm and attention start as PyTorch's modules do") {
  Context ctx;
  Gpt net(ctx, 3);
  const auto gamma = net.parameter("stage0.2.0.weight").to_host(), beta = net.parameter("stage0.2.0.bias").to_host();
  CHECK(gamma == std::vector<float>(D, 1.0f));
  CHECK(beta == std::vector<float>(D, 0.0f));
  CHECK(net.parameter("stage0.2.1.in_proj_bias").to_host() == std::vector<float>(3 * D, 0.0f));
  CHECK(net.parameter("stage0.2.1.out_proj.bias").to_host() == std::vector<float>(D, 0.0f));
  const auto w = net.parameter("stage0.2.1.in_proj_weight").to_host(); // xavier_uniform: |w| <= sqrt(6 / 4D)
  const float bound = std::sqrt(6.0f / (4 * D));
  CHECK(std::all_of(w.begin(), w.end(), [&](float v) { return std::abs(v) <= bound; }));
  CHECK(std::any_of(w.begin(), w.end(), [&](float v) { return std::abs(v) > bound / 2; }));
}

TEST_CASE("every schedule trains a transformer with Dropout as the whole batch does") {
  std::vector<float> naive_losses, gpipe_losses, one_f_one_b_losses;
  const auto naive = train(schedule::Naive{}, naive_losses);
  const auto gpipe = train(schedule::GPipe{.micro_batches = 3}, gpipe_losses);
  const auto one_f_one_b = train(schedule::OneFOneB{.micro_batches = 4}, one_f_one_b_losses);
  CHECK(test::relative_error(gpipe_losses, naive_losses) < 1e-6);
  CHECK(test::relative_error(one_f_one_b_losses, naive_losses) < 1e-6);
  for (std::size_t i = 0; i < naive.size(); ++i) {
    CAPTURE(i);
    CHECK(test::relative_error(gpipe[i], naive[i]) < 2e-5);
    CHECK(test::relative_error(one_f_one_b[i], naive[i]) < 2e-5);
  }
  CHECK(naive_losses.back() < naive_losses.front());
}

TEST_CASE("ZB-H1 and Interleaved1F1B train a transformer with Dropout as the whole batch does") {
  SUBCASE("SGD with momentum") { cycle_trains_as_naive<optim::SGD>({.lr = 0.1f, .momentum = 0.9f}, 1e-6); }
  SUBCASE("Adam") { cycle_trains_as_naive<optim::Adam>({.lr = 1e-2f}, 1e-6); }
  SUBCASE("AdamW") { cycle_trains_as_naive<optim::AdamW>({.lr = 1e-2f}, 1e-6); }
}

TEST_CASE("Dropout drops in training calls only, the same elements under every split") {
  Context ctx;
  using Net = Pipeline<Stage<Device<0>, Linear<6, 40>, Dropout<25>>, Stage<Device<1>, Linear<40, 3>>>;
  Net a(ctx, 2), b(ctx, 2);
  const auto x = test::uniform<float>(32 * 6, 3);
  CHECK(a.forward(x) == b.forward(x)); // forward: the identity, so equal networks agree
  const auto y = test::labels(32, 3, 4);
  const float whole = a.forward_backward(x, y, loss::CrossEntropy{});
  const float split = b.forward_backward(x, y, loss::CrossEntropy{}, schedule::GPipe{.micro_batches = 5});
  CHECK(std::abs(whole - split) <= 1e-6f * std::abs(whole));
  const auto ga = a.parameter("stage0.0.weight").grad_to_host(), gb = b.parameter("stage0.0.weight").grad_to_host();
  CHECK(test::relative_error(ga, gb) < 1e-5);
  // About a quarter of the hidden units of a row are dropped: their weights get no gradient
  // from that row. One row alone shows it.
  const std::vector<float> one(x.begin(), x.begin() + 6);
  a.forward_backward(one, std::vector<std::int32_t>{1}, loss::CrossEntropy{});
  const auto g = a.parameter("stage0.0.bias").grad_to_host();
  const auto dropped = std::count(g.begin(), g.end(), 0.0f);
  CHECK(dropped >= 3);
  CHECK(dropped <= 20);
}

TEST_CASE("bad tokens and partial sequences are Errors that change nothing") {
  Context ctx;
  Gpt net(ctx, 4);
  optim::Adam opt(net, {.lr = 1e-2f});
  const auto before = test::snapshot(net);
  const auto y = tokens(3 * T, 2);
  auto x = tokens(3 * T, 1);
  x[5] = static_cast<std::int32_t>(V);
  CHECK_THROWS_WITH_AS(net.train_step(x, y, loss::CrossEntropy{}, opt), doctest::Contains("token 5 is 13"), Error);
  x[5] = -1;
  CHECK_THROWS_WITH_AS(net.train_step(x, y, loss::CrossEntropy{}, opt), doctest::Contains("outside the vocabulary"),
                       Error);
  CHECK_THROWS_AS(net.forward(x), Error);
  x[5] = 0;
  const std::vector<std::int32_t> partial(x.begin(), x.end() - 1), partial_y(y.begin(), y.end() - 1);
  CHECK_THROWS_WITH_AS(net.train_step(partial, partial_y, loss::CrossEntropy{}, opt),
                       doctest::Contains("not a whole number of sequences of 4"), Error);
  CHECK_THROWS_WITH_AS(net.train_step(x, y, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 4}),
                       doctest::Contains("micro-batches"), Error);
  CHECK(test::snapshot(net) == before);
  const float l = net.train_step(x, y, loss::CrossEntropy{}, opt, schedule::GPipe{.micro_batches = 3});
  CHECK(std::isfinite(l));
  CHECK(test::snapshot(net) != before);
}
