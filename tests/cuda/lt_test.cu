// SPDX-License-Identifier: Apache-2.0
// cuda::Lt: the fused Linear forward (bias and ReLU in cuBLASLt's epilogue) against a float64
// reference on the host, on random data; y is poisoned with NaN first, so an element left
// unwritten fails. Plain FP32 (TF32 off) unless a case says otherwise.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/backend/activation_math.hpp"
#include "tandem/backend/cuda/executor.hpp"
#include "tandem/backend/cuda/lt.hpp"
#include "tandem/backend/ops.hpp"

namespace {

using namespace tandem;
using backend::Activation;
using backend::cuda::Lt;
using test::DeviceArray;
using test::uniform;
namespace op = backend::op;

constexpr double fp32_tolerance = 1e-5;
const float poison = std::numeric_limits<float>::quiet_NaN(); // y before a call

struct Shape {
  std::size_t batch, in, out;
};

std::string describe(const Shape &s, bool bias, Activation act) {
  return std::to_string(s.batch) + "x" + std::to_string(s.in) + " -> " + std::to_string(s.out) +
         (bias ? " bias" : " no bias") + (act == Activation::relu ? " relu" : " identity");
}

// y = act(x w^T + b) in float64, from the float inputs.
std::vector<double> reference(const Shape &s, const std::vector<float> &x, const std::vector<float> &w, const float *b,
                              Activation act) {
  std::vector<double> y(s.batch * s.out);
  for (std::size_t r = 0; r < s.batch; ++r)
    for (std::size_t o = 0; o < s.out; ++o) {
      double sum = b ? static_cast<double>(b[o]) : 0.0;
      for (std::size_t i = 0; i < s.in; ++i)
        sum += static_cast<double>(x[r * s.in + i]) * static_cast<double>(w[o * s.in + i]);
      y[r * s.out + o] = act == Activation::relu ? std::max(sum, 0.0) : sum;
    }
  return y;
}

// max |got - want| / max |want|; infinite when any element is not finite (a NaN left by the poison).
double relative_error(const float *got, const std::vector<double> &want) {
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

// One product on the device. `offset` elements of padding in front of every array give pointers
// that are only as aligned as a float is (offset 1) rather than as cudaMalloc's 256 bytes. Returns
// what linear_forward returned; on true, checks y against the reference.
bool run_case(backend::cuda::Executor &ex, Lt &lt, const Shape &s, bool bias, Activation act, double tolerance,
              std::size_t offset = 0, unsigned seed = 1) {
  const auto x = uniform<float>(s.batch * s.in, 100 + seed), w = uniform<float>(s.out * s.in, 200 + seed),
             b = uniform<float>(s.out, 300 + seed);
  const auto padded = [offset](const std::vector<float> &v) {
    std::vector<float> p(offset, 0.0f);
    p.insert(p.end(), v.begin(), v.end());
    return p;
  };
  DeviceArray<float> d_x(ex, padded(x)), d_w(ex, padded(w)), d_b(ex, padded(b)),
      d_y(ex, std::vector<float>(offset + s.batch * s.out, poison));
  const op::LinearForward<float> f{
      s.batch,           s.in, s.out, d_x.get() + offset, d_w.get() + offset, bias ? d_b.get() + offset : nullptr,
      d_y.get() + offset};
  const bool done = lt.linear_forward(ex.stream(), f, act);
  const auto y = d_y.to_host(); // synchronizes the stream, so a failed launch surfaces here
  const std::string what = describe(s, bias, act) + (offset ? " (pointers 4-byte aligned)" : "");
  if (!done) {
    // Nothing enqueued: y keeps its poison.
    CHECK_MESSAGE(std::all_of(y.begin(), y.end(), [](float v) { return std::isnan(v); }),
                  what << ": returned false but wrote y");
    return false;
  }
  const double err = relative_error(y.data() + offset, reference(s, x, w, bias ? b.data() : nullptr, act));
  CHECK_MESSAGE(err <= tolerance, what << ": relative error " << err);
  return true;
}

// The weight and bias gradients of one Linear (BGRADB) against float64; dweight and dbias are
// poisoned first. Returns what weight_gradient returned.
bool run_gradient_case(backend::cuda::Executor &ex, Lt &lt, const Shape &s, unsigned seed) {
  const auto x = uniform<float>(s.batch * s.in, 500 + seed), dy = uniform<float>(s.batch * s.out, 600 + seed);
  DeviceArray<float> d_x(ex, x), d_dy(ex, dy), d_dw(ex, std::vector<float>(s.out * s.in, poison)),
      d_db(ex, std::vector<float>(s.out, poison));
  const op::LinearBackward<float> b{.batch = s.batch,
                                    .in = s.in,
                                    .out = s.out,
                                    .x = d_x.get(),
                                    .dy = d_dy.get(),
                                    .dweight = d_dw.get(),
                                    .dbias = d_db.get(),
                                    .accumulate = false};
  const bool done = lt.weight_gradient(ex.stream(), b);
  const auto dw = d_dw.to_host(), db = d_db.to_host();
  const std::string what = "weight gradient " + describe(s, true, Activation::identity);
  if (!done) {
    CHECK_MESSAGE(std::all_of(dw.begin(), dw.end(), [](float v) { return std::isnan(v); }), what << ": wrote dweight");
    return false;
  }
  std::vector<double> want_dw(s.out * s.in, 0.0), want_db(s.out, 0.0);
  for (std::size_t r = 0; r < s.batch; ++r)
    for (std::size_t o = 0; o < s.out; ++o) {
      const double g = dy[r * s.out + o];
      want_db[o] += g;
      for (std::size_t i = 0; i < s.in; ++i) want_dw[o * s.in + i] += g * static_cast<double>(x[r * s.in + i]);
    }
  const double err_w = relative_error(dw.data(), want_dw), err_b = relative_error(db.data(), want_db);
  CHECK_MESSAGE(err_w <= fp32_tolerance, what << ": dweight relative error " << err_w);
  CHECK_MESSAGE(err_b <= fp32_tolerance, what << ": dbias relative error " << err_b);
  return true;
}

} // namespace

TEST_SUITE("gpu") {
  TEST_CASE("Lt: weight gradient with the bias gradient in its epilogue matches a float64 reference") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    unsigned seed = 0;
    // Where cuBLASLt has no BGRADB algorithm the caller keeps its plain path: said, not failed.
    for (const Shape s : {Shape{64, 10, 20}, Shape{64, 20, 10}, Shape{1024, 256, 256}, Shape{37, 13, 5}})
      if (!run_gradient_case(ex, lt, s, ++seed))
        MESSAGE("cuBLASLt refused the weight gradient of " << describe(s, true, Activation::identity));
    // Accumulating into the gradients is the plain path's: refused, nothing written.
    const Shape s{64, 10, 20};
    DeviceArray<float> x(ex, uniform<float>(s.batch * s.in, 1)), dy(ex, uniform<float>(s.batch * s.out, 2)),
        dw(ex, std::vector<float>(s.out * s.in, 0.5f)), db(ex, std::vector<float>(s.out, 0.5f));
    CHECK_FALSE(lt.weight_gradient(ex.stream(), {.batch = s.batch,
                                                 .in = s.in,
                                                 .out = s.out,
                                                 .x = x.get(),
                                                 .dy = dy.get(),
                                                 .dweight = dw.get(),
                                                 .dbias = db.get(),
                                                 .accumulate = true}));
  }

  TEST_CASE("Lt: tuned products match float64, and a second Lt takes the first one's choice") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    // Shapes no other case of this process tunes, so the first Lt times them itself.
    const Shape forward{768, 192, 320}, backward{768, 320, 192};
    const auto x = uniform<float>(forward.batch * forward.in, 901), w = uniform<float>(forward.out * forward.in, 902),
               b = uniform<float>(forward.out, 903), dy = uniform<float>(backward.batch * backward.out, 904),
               w2 = uniform<float>(backward.out * backward.in, 905);
    DeviceArray<float> d_x(ex, x), d_w(ex, w), d_b(ex, b), d_dy(ex, dy), d_w2(ex, w2);
    std::vector<std::vector<float>> results[2];
    std::size_t tuned[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
      Lt lt({ex.device(), ex.logical()}, Precision::fp32, true);
      REQUIRE(lt.tunes());
      DeviceArray<float> y(ex, std::vector<float>(forward.batch * forward.out, poison)),
          dx(ex, std::vector<float>(backward.batch * backward.in, poison));
      REQUIRE(lt.linear_forward(ex.stream(),
                                {forward.batch, forward.in, forward.out, d_x.get(), d_w.get(), d_b.get(), y.get()},
                                Activation::relu));
      const op::LinearBackward<float> g{.batch = backward.batch,
                                        .in = backward.in,
                                        .out = backward.out,
                                        .weight = d_w2.get(),
                                        .dy = d_dy.get(),
                                        .dx = dx.get()};
      REQUIRE(lt.input_gradient(ex.stream(), g).product);
      results[i] = {y.to_host(), dx.to_host()};
      tuned[i] = lt.tuned();
    }
    CHECK(relative_error(results[0][0].data(), reference(forward, x, w, b.data(), Activation::relu)) <= fp32_tolerance);
    // dx = dy w2: the reference of a product with x = dy and weight = w2 transposed.
    std::vector<float> w2t(backward.in * backward.out);
    for (std::size_t o = 0; o < backward.out; ++o)
      for (std::size_t i = 0; i < backward.in; ++i) w2t[i * backward.out + o] = w2[o * backward.in + i];
    CHECK(relative_error(results[0][1].data(), reference(Shape{backward.batch, backward.out, backward.in}, dy, w2t,
                                                         nullptr, Activation::identity)) <= fp32_tolerance);
    // A shape with one candidate keeps it untimed; where a timing chose, the second Lt reuses it.
    MESSAGE("tuned plans: " << tuned[0] << " of 2 (the heuristic's only candidate is kept untimed)");
    CHECK(tuned[1] == tuned[0]);
    CHECK(results[1] == results[0]); // the same algorithms, the same bits
    // Untuned, the input gradient stays with plain cuBLAS.
    Lt plain({ex.device(), ex.logical()}, Precision::fp32);
    CHECK_FALSE(plain
                    .input_gradient(ex.stream(), {.batch = backward.batch,
                                                  .in = backward.in,
                                                  .out = backward.out,
                                                  .weight = d_w2.get(),
                                                  .dy = d_dy.get(),
                                                  .dx = d_x.get()})
                    .product);
  }

  TEST_CASE("Lt: the ReLU mask of a forward (RELU_AUX_BIAS) drives the next input gradient (DRELU_BGRAD)") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    const std::size_t batch = 96, in = 40, hidden = 200, out = 24; // hidden: a mask row of two 128-bit words
    const auto x = uniform<float>(batch * in, 701), w0 = uniform<float>(hidden * in, 702),
               b0 = uniform<float>(hidden, 703), w1 = uniform<float>(out * hidden, 704),
               dy = uniform<float>(batch * out, 705);
    DeviceArray<float> d_x(ex, x), d_w0(ex, w0), d_b0(ex, b0), d_w1(ex, w1), d_dy(ex, dy),
        d_h(ex, std::vector<float>(batch * hidden, poison)), d_dh(ex, std::vector<float>(batch * hidden, poison)),
        d_db0(ex, std::vector<float>(hidden, poison));
    DeviceArray<std::uint8_t> d_mask(ex, std::vector<std::uint8_t>(backend::cuda::relu_mask_bytes(batch, hidden), 0));
    const op::LinearForward<float> f{.batch = batch,
                                     .in = in,
                                     .out = hidden,
                                     .x = d_x.get(),
                                     .weight = d_w0.get(),
                                     .bias = d_b0.get(),
                                     .y = d_h.get(),
                                     .activation = Activation::relu,
                                     .relu_mask = d_mask.get()};
    REQUIRE(lt.linear_forward(ex.stream(), f, Activation::relu));
    if (!lt.has_mask(d_mask.get())) {
      MESSAGE("cuBLASLt refused RELU_AUX_BIAS for " << batch << "x" << in << " -> " << hidden
                                                    << ": the backward keeps its ReLU kernel");
      return;
    }
    const auto h = d_h.to_host();
    for (const bool accumulate : {false, true}) {
      const op::LinearBackward<float> b{.batch = batch,
                                        .in = hidden,
                                        .out = out,
                                        .x = d_h.get(),
                                        .weight = d_w1.get(),
                                        .dy = d_dy.get(),
                                        .dx = d_dh.get(),
                                        .accumulate = accumulate,
                                        .relu_before = true,
                                        .relu_mask = d_mask.get(),
                                        .dbias_before = d_db0.get()};
      const auto done = lt.input_gradient(ex.stream(), b);
      if (!done.product) {
        MESSAGE("cuBLASLt refused DRELU" << (accumulate ? "" : "_BGRAD") << " for " << batch << "x" << out << " -> "
                                         << hidden);
        continue;
      }
      CHECK(done.relu);
      CHECK(done.bias == !accumulate); // BGRAD sets the bias gradient: only where gradients are set
      // dh = (dy w1) where h > 0, else 0; db0 = dh's column sums; in float64 from the float inputs.
      std::vector<double> want(batch * hidden), want_db(hidden, 0.0);
      for (std::size_t r = 0; r < batch; ++r)
        for (std::size_t j = 0; j < hidden; ++j) {
          double sum = 0;
          for (std::size_t o = 0; o < out; ++o)
            sum += static_cast<double>(dy[r * out + o]) * static_cast<double>(w1[o * hidden + j]);
          want[r * hidden + j] = h[r * hidden + j] > 0 ? sum : 0.0;
          want_db[j] += want[r * hidden + j];
        }
      const auto dh = d_dh.to_host();
      CHECK_MESSAGE(relative_error(dh.data(), want) <= fp32_tolerance, "DRELU: dx");
      if (done.bias) CHECK_MESSAGE(relative_error(d_db0.to_host().data(), want_db) <= fp32_tolerance, "BGRAD: dbias");
    }
  }

  TEST_CASE("Lt: fused Linear forward matches a float64 reference") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    struct Case {
      Shape shape;
      bool required; // the seed's shapes and a 256-wide one must take the fused path
    };
    const Case cases[] = {{{64, 10, 20}, true},
                          {{64, 20, 10}, true},
                          {{64, 10, 2}, true},
                          {{1024, 256, 256}, true},
                          {{37, 13, 5}, false}};
    std::vector<std::string> unsupported;
    unsigned seed = 0;
    for (const auto &c : cases)
      for (bool bias : {true, false})
        for (Activation act : {Activation::identity, Activation::relu}) {
          const bool done = run_case(ex, lt, c.shape, bias, act, fp32_tolerance, 0, ++seed);
          if (c.required) REQUIRE_MESSAGE(done, describe(c.shape, bias, act) << ": cuBLASLt refused a required shape");
          else if (!done) unsupported.push_back(describe(c.shape, bias, act));
        }
    for (const auto &u : unsupported) MESSAGE("cuBLASLt refused " << u << " (the caller falls back to cuBLAS)");
    CHECK(lt.allocations() == 1); // the workspace, once
  }

  TEST_CASE("Lt: pointers aligned only to a float") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    for (const Shape s : {Shape{64, 10, 20}, Shape{37, 13, 5}})
      for (bool bias : {true, false})
        for (Activation act : {Activation::identity, Activation::relu})
          if (!run_case(ex, lt, s, bias, act, fp32_tolerance, 1))
            MESSAGE("cuBLASLt refused " << describe(s, bias, act) << " with 4-byte aligned pointers");
  }

  TEST_CASE("Lt: a repeated call plans nothing, allocates nothing and uses its own bias") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    const Shape s{64, 20, 10};
    REQUIRE(run_case(ex, lt, s, true, Activation::relu, fp32_tolerance, 0, 1));
    const std::size_t plans = lt.plans(), allocations = lt.allocations();
    // Same shape and alignments, other arrays (a different bias pointer): the cached descriptor
    // must not keep the first call's bias.
    REQUIRE(run_case(ex, lt, s, true, Activation::relu, fp32_tolerance, 0, 2));
    REQUIRE(run_case(ex, lt, s, true, Activation::relu, fp32_tolerance, 0, 3));
    CHECK(lt.plans() == plans);
    CHECK(lt.allocations() == allocations);
  }

  TEST_CASE("Lt: GELU (tanh form) in the epilogue, keeping its input where asked (GELU_AUX_BIAS), matches float64") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    // (1024, 256, 256) must take the fused path; out = 20 cannot keep z (cuBLASLt wants an aux
    // leading dimension divisible by 8) and must say so by returning false.
    const Shape shapes[] = {{1024, 256, 256}, {64, 32, 16}, {64, 10, 20}};
    unsigned seed = 40;
    for (const Shape &s : shapes)
      for (bool bias : {true, false})
        for (bool keep : {true, false}) {
          const std::string what = describe(s, bias, Activation::identity) + " gelu_tanh" + (keep ? " keeping z" : "");
          CAPTURE(what);
          ++seed;
          const auto x = uniform<float>(s.batch * s.in, 100 + seed, -2, 2),
                     w = uniform<float>(s.out * s.in, 200 + seed), b = uniform<float>(s.out, 300 + seed);
          DeviceArray<float> d_x(ex, x), d_w(ex, w), d_b(ex, b), d_y(ex, std::vector<float>(s.batch * s.out, poison)),
              d_z(ex, std::vector<float>(s.batch * s.out, poison));
          op::LinearForward<float> f{.batch = s.batch,
                                     .in = s.in,
                                     .out = s.out,
                                     .x = d_x.get(),
                                     .weight = d_w.get(),
                                     .bias = bias ? d_b.get() : nullptr,
                                     .y = d_y.get(),
                                     .activation = Activation::gelu_tanh,
                                     .pre_activation = keep ? d_z.get() : nullptr};
          const bool done = lt.linear_forward(ex.stream(), f, Activation::gelu_tanh);
          const auto y = d_y.to_host(), z = d_z.to_host();
          if (keep && s.out % 8 != 0) CHECK_MESSAGE(!done, "an aux leading dimension of " << s.out << " was taken");
          if (s.batch == 1024) REQUIRE_MESSAGE(done, "cuBLASLt refused the 256-wide GELU epilogue");
          if (!done) {
            CHECK(std::all_of(y.begin(), y.end(), [](float v) { return std::isnan(v); }));
            continue;
          }
          const auto want_z = reference(s, x, w, bias ? b.data() : nullptr, Activation::identity);
          std::vector<double> want_y(want_z.size());
          for (std::size_t i = 0; i < want_z.size(); ++i)
            want_y[i] = backend::activate<Activation::gelu_tanh>(want_z[i]);
          // The GPU bound of the design (1e-4): cuBLASLt's tanh need not be the correctly rounded one.
          const double err_y = relative_error(y.data(), want_y);
          MESSAGE(what << ": relative error of y " << err_y);
          CHECK(err_y <= 1e-4);
          if (keep) CHECK(relative_error(z.data(), want_z) <= fp32_tolerance);
          else CHECK(std::all_of(z.begin(), z.end(), [](float v) { return std::isnan(v); }));
        }
  }

  TEST_CASE("Lt: at most max_plans products stay planned, the least recently used going first") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32, false, 16);
    REQUIRE(lt.max_plans() == 16);
    // One shape used between all the others stays; the first of the others is dropped.
    const Shape kept{64, 20, 10};
    auto other = [](std::size_t i) { return Shape{i + 1, 12, 5}; };
    const std::size_t n = lt.max_plans() + 40;
    unsigned seed = 0;
    REQUIRE(run_case(ex, lt, kept, true, Activation::relu, fp32_tolerance, 0, ++seed));
    for (std::size_t i = 0; i < n; ++i) {
      CAPTURE(i);
      run_case(ex, lt, other(i), false, Activation::identity, fp32_tolerance, 0, ++seed); // refused is fine
      REQUIRE(run_case(ex, lt, kept, true, Activation::relu, fp32_tolerance, 0, ++seed));
      REQUIRE(lt.plans() <= lt.max_plans());
    }
    CHECK(lt.plans() == lt.max_plans());
    CHECK(lt.planned() == n + 1); // `kept` was planned once
    run_case(ex, lt, other(0), false, Activation::identity, fp32_tolerance, 0, ++seed);
    CHECK(lt.planned() == n + 2); // the first other shape had been dropped
    CHECK(lt.allocations() == 1);
  }

  TEST_CASE("Lt: a warmed-up call can be captured into a CUDA graph, which replays after its plan is dropped") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32, false, 2);
    const Shape s{64, 10, 20};
    const auto x = uniform<float>(s.batch * s.in, 401), w = uniform<float>(s.out * s.in, 402),
               b1 = uniform<float>(s.out, 403), b2 = uniform<float>(s.out, 404);
    DeviceArray<float> d_x(ex, x), d_w(ex, w), d_b(ex, b1), d_y(ex, std::vector<float>(s.batch * s.out, poison));
    const op::LinearForward<float> f{s.batch, s.in, s.out, d_x.get(), d_w.get(), d_b.get(), d_y.get()};
    REQUIRE(lt.linear_forward(ex.stream(), f, Activation::relu)); // plans, allocates the workspace
    ex.synchronize();
    const std::size_t plans = lt.plans(), allocations = lt.allocations();

    // Global mode: any call that is not allowed during a capture (cudaMalloc, a synchronisation)
    // fails and invalidates the capture.
    const backend::cuda::Site site{ex.device(), ex.logical()};
    backend::cuda::check(cudaStreamBeginCapture(ex.stream(), cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture",
                         site);
    bool captured_call = false;
    std::string error;
    try {
      captured_call = lt.linear_forward(ex.stream(), f, Activation::relu);
    } catch (const std::exception &e) {
      error = e.what();
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(ex.stream(), &graph); // always, so the stream is usable again
    REQUIRE_MESSAGE(error.empty(), error);
    REQUIRE(captured_call);
    REQUIRE(end == cudaSuccess);
    CHECK(lt.plans() == plans);
    CHECK(lt.allocations() == allocations);

    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    REQUIRE(instantiated == cudaSuccess);
    // Two other products drop the captured one's plan (its descriptor and layouts destroyed).
    const std::size_t planned = lt.planned();
    run_case(ex, lt, Shape{32, 8, 8}, true, Activation::identity, fp32_tolerance, 0, 405);
    run_case(ex, lt, Shape{16, 8, 8}, true, Activation::identity, fp32_tolerance, 0, 406);
    CHECK(lt.planned() == planned + 2);
    // The graph reads the arrays when it runs: new bias values and a fresh poison in y.
    ex.upload(d_b.get(), b2.data(), b2.size() * sizeof(float));
    const std::vector<float> fresh(s.batch * s.out, poison);
    ex.upload(d_y.get(), fresh.data(), fresh.size() * sizeof(float));
    const cudaError_t launched = cudaGraphLaunch(exec, ex.stream());
    const auto y = d_y.to_host();
    (void)cudaGraphExecDestroy(exec);
    REQUIRE(launched == cudaSuccess);
    const double err = relative_error(y.data(), reference(s, x, w, b2.data(), Activation::relu));
    CHECK_MESSAGE(err <= fp32_tolerance, "graph replay: relative error " << err);
    REQUIRE(lt.linear_forward(ex.stream(), f, Activation::relu));
    ex.synchronize();
    CHECK(lt.planned() == planned + 3); // it had been dropped indeed
  }

  TEST_CASE("Lt: TF32 when allowed, within TF32's rounding") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::tf32);
    Lt lt({ex.device(), ex.logical()}, Precision::tf32);
    // TF32 keeps 10 mantissa bits of each input: about 1e-3 relative error, where FP32 has 1e-7.
    for (Activation act : {Activation::identity, Activation::relu})
      if (!run_case(ex, lt, Shape{1024, 256, 256}, true, act, 1e-2, 0, 7))
        MESSAGE("cuBLASLt refused TF32 for " << describe(Shape{1024, 256, 256}, true, act));
  }

  TEST_CASE("Lt: what it does not fuse returns false and enqueues nothing") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    for (Activation act : {Activation::sigmoid, Activation::tanh, Activation::gelu, Activation::gelu_tanh})
      CHECK_FALSE(run_case(ex, lt, Shape{64, 10, 20}, true, act, fp32_tolerance));
    CHECK_FALSE(run_case(ex, lt, Shape{64, 0, 20}, true, Activation::identity, fp32_tolerance)); // k = 0
    CHECK(lt.allocations() == 0);
    CHECK(lt.plans() == 0);
  }

  // The plain path's ReLU lets NaN through, as torch.relu does; cuBLASLt documents its ReLU
  // epilogue as max(x, 0), which may not. Reported rather than asserted, so the caller can decide.
  TEST_CASE("Lt: what the ReLU epilogue makes of a NaN") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    Lt lt({ex.device(), ex.logical()}, Precision::fp32);
    const Shape s{64, 10, 20};
    auto x = uniform<float>(s.batch * s.in, 501);
    const auto w = uniform<float>(s.out * s.in, 502), b = uniform<float>(s.out, 503);
    x[0] = poison; // row 0 of the product is NaN throughout
    DeviceArray<float> d_x(ex, x), d_w(ex, w), d_b(ex, b);
    for (Activation act : {Activation::identity, Activation::relu}) {
      DeviceArray<float> d_y(ex, std::vector<float>(s.batch * s.out, 0.0f));
      const op::LinearForward<float> f{s.batch, s.in, s.out, d_x.get(), d_w.get(), d_b.get(), d_y.get()};
      REQUIRE(lt.linear_forward(ex.stream(), f, act));
      const auto y = d_y.to_host();
      const auto nans = std::count_if(y.begin(), y.begin() + s.out, [](float v) { return std::isnan(v); });
      if (act == Activation::identity) CHECK(nans == static_cast<std::ptrdiff_t>(s.out));
      else MESSAGE("ReLU epilogue: " << nans << " of " << s.out << " NaN outputs stay NaN (torch.relu keeps all)");
      // The other rows are untouched by the NaN.
      const std::vector<float> rest_x(x.begin() + s.in, x.end());
      const Shape rest{s.batch - 1, s.in, s.out};
      const double err = relative_error(y.data() + s.out, reference(rest, rest_x, w, b.data(), act));
      CHECK_MESSAGE(err <= fp32_tolerance, "rows without NaN: relative error " << err);
    }
  }
}
