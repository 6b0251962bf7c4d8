// SPDX-License-Identifier: Apache-2.0
// Reduced-precision products (ContextOptions::precision): the rounding itself, the host backend's
// products against float64 references on rounded inputs, and a whole pipeline's policy.
#include <doctest/doctest.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

using namespace tandem;

namespace {
// Rounding by arithmetic, independent of round_to's bit manipulation: the nearest multiple of
// the value's unit in the last kept place, ties to even (the default floating-point rounding).
double reference_round(double v, int kept_bits) {
  if (v == 0 || !std::isfinite(v)) return v;
  const double ulp = std::ldexp(1.0, std::ilogb(v) - kept_bits);
  return std::nearbyint(v / ulp) * ulp;
}

// C (m, n) = A (m, k) * B (k, n), row-major, in double on inputs rounded to `p`.
std::vector<double> product(Precision p, const std::vector<float> &a, const std::vector<float> &b, std::size_t m,
                            std::size_t k, std::size_t n, bool b_transposed) {
  std::vector<double> c(m * n, 0.0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t l = 0; l < k; ++l)
        c[i * n + j] +=
            double(round_to(p, a[i * k + l])) * double(round_to(p, b_transposed ? b[j * k + l] : b[l * n + j]));
  return c;
}
std::vector<double> transpose(const std::vector<float> &a, std::size_t rows, std::size_t cols) {
  std::vector<double> t(a.size());
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) t[c * rows + r] = a[r * cols + c];
  return t;
}
std::vector<float> as_float(const std::vector<double> &v) { return {v.begin(), v.end()}; }
} // namespace

TEST_CASE("round_to keeps 7 (bf16) or 10 (tf32) mantissa bits, to nearest, ties to even") {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  // Ties, spelled out: halfway between 1 and the next value goes to the even one.
  CHECK(round_to(Precision::bf16, 1.0f + 0x1p-8f) == 1.0f);
  CHECK(round_to(Precision::bf16, 1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
  CHECK(round_to(Precision::bf16, -(1.0f + 3 * 0x1p-8f)) == -(1.0f + 0x1p-6f));
  CHECK(round_to(Precision::tf32, 1.0f + 0x1p-11f) == 1.0f);
  CHECK(round_to(Precision::tf32, 1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
  // Beyond bf16's largest value, as in a float -> bfloat16 conversion: infinity.
  CHECK(round_to(Precision::bf16, std::numeric_limits<float>::max()) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(round_to(Precision::bf16, std::numeric_limits<float>::quiet_NaN())));
  CHECK(round_to(Precision::tf32, -std::numeric_limits<float>::infinity()) == -std::numeric_limits<float>::infinity());
  CHECK(round_to(Precision::fp32, 1.0f + 0x1p-23f) == 1.0f + 0x1p-23f);

  // Fresh values over many binades of normal floats, against the arithmetic reference.
  const auto mantissas = test::uniform<double>(4000, 31, 1, 2);
  const auto exponents = test::uniform<double>(4000, 32, -120, 120);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < mantissas.size(); ++i) {
    const float v =
        static_cast<float>(std::ldexp(i % 2 ? -mantissas[i] : mantissas[i], static_cast<int>(exponents[i])));
    CAPTURE(v);
    REQUIRE(std::isnormal(v));
    CHECK(double(round_to(Precision::bf16, v)) == reference_round(v, 7));
    CHECK(double(round_to(Precision::tf32, v)) == reference_round(v, 10));
    changed += round_to(Precision::bf16, v) != v;
  }
  CHECK(changed > 3900); // random float32 values almost never fit in 8 significant bits
}

TEST_CASE("the host backend's reduced-precision products equal float64 products of rounded inputs") {
  const std::size_t batch = 13, in = 37, out = 11;
  const auto x = test::uniform<float>(batch * in, 41), w = test::uniform<float>(out * in, 42);
  const auto bias = test::uniform<float>(out, 43), dy = test::uniform<float>(batch * out, 44);
  for (const Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    const std::string precision = name(p);
    CAPTURE(precision);
    backend::host::Executor ex(0, p);
    std::vector<float> y(batch * out), dx(batch * in), dw(out * in), db(out), c(in * in);
    ex.submit([&] {
      ex.run(backend::op::LinearForward<float>{
          .batch = batch, .in = in, .out = out, .x = x.data(), .weight = w.data(), .bias = bias.data(), .y = y.data()});
      ex.run(backend::op::LinearBackward<float>{.batch = batch,
                                                .in = in,
                                                .out = out,
                                                .x = x.data(),
                                                .weight = w.data(),
                                                .dy = dy.data(),
                                                .dx = dx.data(),
                                                .dweight = dw.data(),
                                                .dbias = db.data(),
                                                .accumulate = false});
      // A strided, transposed Gemm: C (in, in) = X^T X.
      ex.run(backend::op::Gemm<float>{.trans_a = true,
                                      .m = in,
                                      .n = in,
                                      .k = batch,
                                      .a = x.data(),
                                      .lda = in,
                                      .b = x.data(),
                                      .ldb = in,
                                      .c = c.data(),
                                      .ldc = in});
    });
    ex.synchronize();

    const auto linear = [&](Precision q) {
      auto v = product(q, x, w, batch, in, out, true);
      for (std::size_t r = 0; r < batch; ++r)
        for (std::size_t o = 0; o < out; ++o) v[r * out + o] += bias[o]; // the bias is not rounded
      return v;
    };
    const auto want_y = linear(p);
    const auto want_dx = product(p, dy, w, batch, out, in, false);
    const auto want_dw = product(p, as_float(transpose(dy, batch, out)), x, out, batch, in, false);
    const auto xt = as_float(transpose(x, batch, in));
    const auto want_c = product(p, xt, x, in, batch, in, false);
    std::vector<double> want_db(out, 0.0);
    for (std::size_t r = 0; r < batch; ++r)
      for (std::size_t o = 0; o < out; ++o) want_db[o] += dy[r * out + o];

    // float32 accumulation of up to 37 terms against float64: well inside 1e-5 of each tensor's scale.
    CHECK(test::relative_error(y, want_y) < 1e-5);
    CHECK(test::relative_error(dx, want_dx) < 1e-5);
    CHECK(test::relative_error(dw, want_dw) < 1e-5);
    CHECK(test::relative_error(c, want_c) < 1e-5);
    CHECK(test::relative_error(db, want_db) < 1e-6);
    // And the rounding really happened: against unrounded products, reduced precision is off by
    // far more than float32 accumulation could explain.
    const double off = test::relative_error(y, linear(Precision::fp32));
    if (p == Precision::fp32) CHECK(off < 1e-5);
    else CHECK(off > 1e-4);
  }
}

TEST_CASE("a pipeline in bf16 trains with rounded products, whatever fuse_small_stages asks") {
  using Net = Pipeline<Stage<Device<0>, Linear<9, 24>, ReLU>, Stage<Device<1>, Linear<24, 16>, Tanh, Linear<16, 4>>>;
  const std::size_t batch = 40;
  const auto x = test::uniform<float>(batch * Net::in_features, 51);
  const auto y = test::labels(batch, Net::out_features, 52);
  auto train = [&](Precision p, StageFusion fusion) {
    Context ctx({.devices = "host", .precision = p, .fuse_small_stages = fusion});
    Net net(ctx, 3);
    optim::SGD opt(net, {.lr = 0.1f});
    loss::CrossEntropy loss;
    std::vector<float> losses;
    for (int i = 0; i < 3; ++i) losses.push_back(net.train_step(x, y, loss, opt));
    auto values = test::snapshot(net);
    values.push_back(losses);
    return values;
  };
  const auto fp32 = train(Precision::fp32, StageFusion::never);
  const auto bf16 = train(Precision::bf16, StageFusion::never);
  // The fused small-stage path computes in float32: with reduced precision it is not used.
  CHECK(train(Precision::bf16, StageFusion::always) == bf16);
  REQUIRE(fp32.size() == bf16.size());
  double most = 0;
  for (std::size_t i = 0; i < fp32.size(); ++i) {
    const double e = test::relative_error(bf16[i], fp32[i]);
    CHECK(e < 3e-2); // a few bf16 roundings (2^-8 each) apart, no more
    most = std::max(most, e);
  }
  CHECK(most > 1e-4); // and not float32's result
}
