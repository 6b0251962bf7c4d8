// SPDX-License-Identifier: Apache-2.0
// Balanced<N, Layers...> against a brute-force search over every cut, layer_cost on the layers
// that declare their own, and a balanced MLP that trains.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {

// A network as text the test reads on its own: 'L' a Linear to `out`, 'R' ReLU, 'T' Tanh, 'N'
// LayerNorm (the last three keep the width).
struct Entry {
  char kind;
  std::size_t out = 0;
};
template <char K, std::size_t In, std::size_t Out> struct Make;
template <std::size_t In, std::size_t Out> struct Make<'L', In, Out> { using type = Linear<In, Out>; };
template <std::size_t In, std::size_t Out> struct Make<'R', In, Out> { using type = ReLU; };
template <std::size_t In, std::size_t Out> struct Make<'T', In, Out> { using type = Tanh; };
template <std::size_t In, std::size_t Out> struct Make<'N', In, Out> { using type = LayerNorm<In>; };

// Widths entering each entry, then the output width.
template <std::size_t K>
constexpr std::array<std::size_t, K + 1> widths_of(std::size_t in, const std::array<Entry, K> &s) {
  std::array<std::size_t, K + 1> w{};
  w[0] = in;
  for (std::size_t j = 0; j < K; ++j) w[j + 1] = s[j].kind == 'L' ? s[j].out : w[j];
  return w;
}

// The expected cost of each entry, from the documented rules: Linear 3 I O, an elementwise layer
// 2 per value, LayerNorm 11 per value.
template <std::size_t K> std::vector<std::size_t> costs_of(std::size_t in, const std::array<Entry, K> &s) {
  const auto w = widths_of(in, s);
  std::vector<std::size_t> c;
  for (std::size_t j = 0; j < K; ++j)
    c.push_back(s[j].kind == 'L' ? 3 * w[j] * w[j + 1] : s[j].kind == 'N' ? 11 * w[j] : 2 * w[j]);
  return c;
}

template <std::size_t N, std::size_t In, const auto &Spec> struct PlanOf {
  static constexpr auto w = widths_of(In, Spec);
  using type = decltype([]<std::size_t... J>(std::index_sequence<J...>) {
    return std::type_identity<BalancedPlan<N, typename Make<Spec[J].kind, w[J], w[J + 1]>::type...>>{};
  }(std::make_index_sequence<Spec.size()>{}))::type;
};

struct Best {
  std::size_t max_cost = 0, boundary = 0;
  std::vector<std::size_t> starts; // each stage's first layer, then the layer count
};

// Every way to cut K layers into n non-empty stages, in lexicographic order of the cuts; keeps the
// least (max stage cost, boundary values) and, among equals, the first met (the earliest cuts).
Best brute_force(const std::vector<std::size_t> &cost, const std::vector<std::size_t> &width, std::size_t n) {
  const std::size_t k = cost.size();
  Best best;
  bool found = false;
  std::vector<std::size_t> starts{0};
  auto walk = [&](auto &self) -> void {
    if (starts.size() == n) {
      starts.push_back(k);
      std::size_t worst = 0, boundary = 0;
      for (std::size_t s = 0; s < n; ++s) {
        std::size_t c = 0;
        for (std::size_t j = starts[s]; j < starts[s + 1]; ++j) c += cost[j];
        worst = std::max(worst, c);
        if (s > 0) boundary += width[starts[s]];
      }
      if (!found || worst < best.max_cost || (worst == best.max_cost && boundary < best.boundary))
        best = {worst, boundary, starts}, found = true;
      starts.pop_back();
      return;
    }
    const std::size_t remaining = n - starts.size(); // stages still to start after this cut
    for (std::size_t j = starts.back() + 1; j + remaining <= k; ++j) {
      starts.push_back(j);
      self(self);
      starts.pop_back();
    }
  };
  walk(walk);
  return best;
}

template <std::size_t N, std::size_t In, const auto &Spec> void check_against_brute_force() {
  using Plan = typename PlanOf<N, In, Spec>::type;
  const auto w = widths_of(In, Spec);
  const auto cost = costs_of(In, Spec);
  const std::vector<std::size_t> width(w.begin(), w.end() - 1);
  const Best best = brute_force(cost, width, N);
  INFO(N, " devices, ", Spec.size(), " layers");
  CHECK(std::vector<std::size_t>(Plan::costs.begin(), Plan::costs.end()) == cost);
  CHECK(Plan::max_stage_cost == best.max_cost);
  CHECK(Plan::boundary_values == best.boundary);
  CHECK(std::vector<std::size_t>(Plan::starts.begin(), Plan::starts.end()) == best.starts);
  // The type's stages are those cuts, on devices 0..N-1.
  using Net = typename Plan::template apply<Pipeline>;
  static_assert(Net::num_stages == N);
  [&]<std::size_t... S>(std::index_sequence<S...>) {
    CHECK(((Net::template stage<S>::num_layers == best.starts[S + 1] - best.starts[S]) && ...));
    CHECK(((Net::template stage<S>::device_index == S) && ...));
  }
  (std::make_index_sequence<N>{});
}

// Widths drawn at random once (and kept here), 6 to 16 layers.
constexpr std::array<Entry, 6> net6{{{'L', 48}, {'R'}, {'L', 64}, {'L', 4}, {'L', 9}, {'L', 2}}};
constexpr std::array<Entry, 8> net8{{{'L', 64}, {'N'}, {'L', 20}, {'L', 20}, {'L', 20}, {'L', 3}, {'L', 9}, {'L', 4}}};
constexpr std::array<Entry, 10> net10{
    {{'L', 9}, {'N'}, {'L', 2}, {'L', 12}, {'N'}, {'L', 3}, {'N'}, {'L', 20}, {'L', 9}, {'L', 9}}};
constexpr std::array<Entry, 12> net12{
    {{'L', 20}, {'L', 64}, {'T'}, {'L', 48}, {'L', 4}, {'T'}, {'L', 6}, {'R'}, {'L', 4}, {'N'}, {'L', 6}, {'T'}}};
constexpr std::array<Entry, 14> net14{{{'L', 12},
                                       {'L', 9},
                                       {'L', 48},
                                       {'L', 12},
                                       {'L', 6},
                                       {'L', 2},
                                       {'T'},
                                       {'L', 20},
                                       {'R'},
                                       {'L', 12},
                                       {'L', 16},
                                       {'N'},
                                       {'L', 16},
                                       {'L', 9}}};
constexpr std::array<Entry, 16> net16{{{'L', 4},
                                       {'R'},
                                       {'L', 64},
                                       {'L', 9},
                                       {'L', 2},
                                       {'L', 16},
                                       {'T'},
                                       {'L', 9},
                                       {'N'},
                                       {'L', 12},
                                       {'L', 2},
                                       {'R'},
                                       {'L', 3},
                                       {'R'},
                                       {'L', 32},
                                       {'L', 48}}};
// Ties: the first layer outweighs the rest together, so the other cuts are free: for 3 devices
// seven cuts share the least costliest stage, two of them the fewest boundary values (cut at
// layers 1 and 2, or 1 and 3), and the earlier wins. In the uniform chain equal cuts differ only
// in place, and the earliest wins.
constexpr std::array<Entry, 9> dominant{
    {{'L', 128}, {'L', 2}, {'R'}, {'L', 8}, {'T'}, {'L', 3}, {'L', 8}, {'R'}, {'L', 6}}};
constexpr std::array<Entry, 7> uniform{{{'L', 8}, {'R'}, {'L', 8}, {'R'}, {'L', 8}, {'R'}, {'L', 8}}};

template <std::size_t In, const auto &Spec> void check_two_to_four() {
  check_against_brute_force<2, In, Spec>();
  check_against_brute_force<3, In, Spec>();
  check_against_brute_force<4, In, Spec>();
}

// Layers that declare their cost, each at the widths it sees.
static_assert(layer_cost<Linear<3, 5>>(3) == 3 * 3 * 5);
static_assert(layer_cost<ReLU>(7) == 14 && layer_cost<Dropout<10>>(4) == 8);
static_assert(layer_cost<Embedding<1000, 16>>(1) == 2 * 16); // a gather, not 3 x 1000 x 16
static_assert(layer_cost<LayerNorm<8>>(8) == 11 * 8);
static_assert(layer_cost<CausalSelfAttention<16, 2, 5>>(16) == 12 * 16 * 16 + 6 * 5 * 16);
static_assert(layer_cost<Sequential<Linear<4, 8>, ReLU, Linear<8, 3>, Tanh>>(4) == 3 * 32 + 2 * 8 + 3 * 24 + 2 * 3);
static_assert(layer_cost<Residual<Linear<8, 6>, GELU, Linear<6, 8>>>(8) == 3 * 48 + 2 * 6 + 3 * 48 + 2 * 8);
// Recompute: its chain once more forward, a third of the chain's multiply-adds.
static_assert(layer_cost<Recompute<Linear<4, 6>, Linear<6, 3>>>(4) == 3 * 24 + 3 * 18 + (3 * 24 + 3 * 18) / 3);

// A width-keeping layer first takes the network's first fixed width.
static_assert(BalancedPlan<2, ReLU, Linear<5, 7>, Tanh>::widths == std::array<std::size_t, 4>{5, 5, 7, 7});

using Mlp = Balanced<2, Linear<6, 32>, Tanh, Linear<32, 32>, ReLU, Linear<32, 12>, ReLU, Linear<12, 3>>;
// Per layer 576, 64 | 3072, 64, 1152, 24, 108: cut after the second Linear, the stages cost 3712
// and 1348; one layer later 3776 and 1284; one earlier 640 and 4420.
using MlpByHand = Pipeline<Stage<Device<0>, Linear<6, 32>, Tanh, Linear<32, 32>>,
                           Stage<Device<1>, ReLU, Linear<32, 12>, ReLU, Linear<12, 3>>>;
static_assert(std::is_same_v<Mlp, MlpByHand>);

} // namespace

TEST_SUITE("balanced") {
  TEST_CASE("Balanced cuts as a brute-force search over every cut does, for 2, 3 and 4 devices") {
    check_two_to_four<40, net6>();
    check_two_to_four<13, net8>();
    check_two_to_four<40, net10>();
    check_two_to_four<5, net12>();
    check_two_to_four<13, net14>();
    check_two_to_four<8, net16>();
    check_two_to_four<4, dominant>();
    check_two_to_four<8, uniform>();
    // The tie above, spelled out: the cut the brute force finds, by hand.
    static_assert(PlanOf<3, 4, dominant>::type::starts == std::array<std::size_t, 4>{0, 1, 2, 9});
  }

  TEST_CASE("a balanced MLP trains, under GPipe, as the pipeline written by hand") {
    Context ctx({.devices = "host"});
    Mlp net(ctx, 5);
    optim::Adam opt(net, {.lr = 0.01f});
    const std::size_t batch = 32;
    const auto x = test::uniform<float>(batch * Mlp::in_features, 11);
    std::vector<float> y(batch * Mlp::out_features); // a function of x the network can learn
    for (std::size_t i = 0; i < batch; ++i)
      for (std::size_t k = 0; k < Mlp::out_features; ++k) y[i * 3 + k] = 0.5f * x[i * 6 + k] - 0.25f * x[i * 6 + 5];
    const loss::MSE loss;
    const float first = net.train_step(std::span<const float>(x), std::span<const float>(y), loss, opt,
                                       schedule::GPipe{.micro_batches = 4});
    float last = first;
    for (int step = 0; step < 60; ++step)
      last = net.train_step(std::span<const float>(x), std::span<const float>(y), loss, opt,
                            schedule::GPipe{.micro_batches = 4});
    INFO("loss ", first, " -> ", last);
    CHECK(last < 0.05f * first);
  }
}
