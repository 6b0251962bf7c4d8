// SPDX-License-Identifier: Apache-2.0
// Compile-time facts a network type promises (the README's contract), and the parameter names they imply.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {
using Seed = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

static_assert(Seed::in_features == 10 && Seed::out_features == 2 && Seed::num_stages == 2);
static_assert(Seed::parameter_count == (10 * 20 + 20) + (20 * 10 + 10) + (10 * 2 + 2));
static_assert(std::is_same_v<Seed::stage<0>, Stage<Device<0>, Linear<10, 20>, ReLU>>);
static_assert(Seed::stage<0>::parameter_count == 220 && Seed::stage<1>::parameter_count == 232);
static_assert(Seed::stage<1>::in_features == 20 && Seed::stage<1>::out_features == 2);
static_assert(Seed::stage<1>::device_index == 1 && Seed::stage<1>::num_layers == 3);
// The seed's estimate: one boundary of width 20, a batch of 64, forward and backward, 4 bytes each.
static_assert(Seed::boundary_bytes(64) == 20 * 64 * 2 * 4);

// A stage that opens with width-keeping layers takes its width from the stage before it.
using Open =
    Pipeline<Stage<Device<0>, Linear<3, 7>>, Stage<Device<1>, ReLU, Sigmoid>, Stage<Device<2>, Tanh, Linear<7, 4>>>;
static_assert(Open::out_features == 4 && Open::stage_in_features<1> == 7 && Open::stage_in_features<2> == 7);
static_assert(Open::stage<2>::in_features == 7); // its Linear fixes it
static_assert(Open::boundary_bytes(5) == (7 + 7) * 5 * 2 * sizeof(float));
static_assert(Open::parameter_count == 3 * 7 + 7 + 7 * 4 + 4);

static_assert(Layer<Linear<2, 3>> && Layer<ReLU> && Layer<GELU> && !Layer<int>);
static_assert(parameter_count_v<Linear<2, 3>> == 9 && parameter_count_v<Identity> == 0);
} // namespace

TEST_CASE("parameters are named and ordered as nn.Sequential would") {
  Context ctx({.devices = "host"});
  Seed net(ctx, 1);
  std::vector<std::string> names;
  std::size_t total = 0;
  for (const auto &p : net.parameters()) {
    names.push_back(p.name());
    total += p.size();
  }
  CHECK(names == std::vector<std::string>{"stage0.0.weight", "stage0.0.bias", "stage1.0.weight", "stage1.0.bias",
                                          "stage1.2.weight", "stage1.2.bias"});
  CHECK(total == Seed::parameter_count);
  const auto &w = net.parameter("stage1.2.weight");
  CHECK(w.rows() == 2); // (out, in), PyTorch's layout
  CHECK(w.cols() == 10);
}

TEST_CASE("initialisation follows nn.Linear: U(-1/sqrt(in), 1/sqrt(in)), deterministic for a seed") {
  Context ctx({.devices = "host"});
  Seed a(ctx, 7), b(ctx, 7), c(ctx, 8);
  for (std::size_t i = 0; i < a.parameters().size(); ++i) {
    const auto &pa = a.parameters()[i];
    const auto va = pa.to_host();
    CHECK(va == b.parameters()[i].to_host());
    CHECK(va != c.parameters()[i].to_host());
    const double bound = 1.0 / std::sqrt(static_cast<double>(pa.name().starts_with("stage0")     ? 10
                                                             : pa.name().starts_with("stage1.0") ? 20
                                                                                                 : 10));
    double lo = 1, hi = -1;
    for (float v : va) {
      lo = std::min(lo, double(v));
      hi = std::max(hi, double(v));
    }
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    if (va.size() >= 20) { // enough draws to see both halves of the interval used
      CHECK(lo < -bound / 4);
      CHECK(hi > bound / 4);
    }
  }
}

// The protocols a user's types are checked against.
static_assert(tandem::loss::Loss<tandem::loss::CrossEntropy> && tandem::loss::Loss<tandem::loss::MSE>);
static_assert(tandem::loss::Loss<tandem::loss::MSE, double>);
static_assert(!tandem::loss::Loss<tandem::Linear<2, 3>>);
static_assert(tandem::SplitBackward<tandem::Linear<2, 3>> && !tandem::SplitBackward<tandem::LayerNorm<3>>);
static_assert(tandem::SmallStageLayer<tandem::ReLU> && !tandem::SmallStageLayer<tandem::LayerNorm<3>>);
static_assert(tandem::saved_values<tandem::LayerNorm<8>>(8) == 2 && tandem::saved_values<tandem::Linear<2, 3>>(2) == 0);
static_assert(tandem::saved_values<tandem::CausalSelfAttention<8, 2, 4>>(8) == 3 * 8 + 2 * 4 + 8);
// A residual block keeps its inner layers' memory, its inner activations but the last, and f(x).
static_assert(tandem::saved_values<tandem::Residual<tandem::LayerNorm<8>, tandem::Linear<8, 8>>>(8) == 8 + 2 + 8);
