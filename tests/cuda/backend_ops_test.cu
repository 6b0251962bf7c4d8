// SPDX-License-Identifier: Apache-2.0
// Every operation of backend/ops.hpp on the CUDA backend against the host backend's kernels, on
// random data, in float (TF32 off) and double. Templated helpers, plain TEST_CASEs: doctest's
// TEST_CASE_TEMPLATE misregisters under nvcc (doctest #800).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/backend/cuda/executor.hpp"
#include "tandem/backend/host/kernels.hpp"
#include "tandem/backend/ops.hpp"

namespace {

using namespace tandem;
using backend::Activation;
namespace op = backend::op;
namespace host = backend::host::kernels;
using test::check_close;
using test::DeviceArray;
using test::run_on;
using test::tolerance;
using test::uniform;

const char *type_name(float) { return "float"; }
const char *type_name(double) { return "double"; }

template <class T> void gemm_case(backend::Executor &ex, bool ta, bool tb, T beta, std::size_t k) {
  const std::size_t m = 37, n = 29, pad = 3;
  // Stored shapes: op(A) is (m, k), so A is (k, m) when transposed; leading dimensions padded.
  const std::size_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  const std::size_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  auto a = uniform<T>(std::max<std::size_t>(a_rows * lda, 1), 1);
  auto b = uniform<T>(std::max<std::size_t>(b_rows * ldb, 1), 2);
  auto c = uniform<T>(m * ldc, 3);
  DeviceArray<T> da(ex, a), db(ex, b), dc(ex, c);
  op::Gemm<T> g{ta, tb, m, n, k, T(0.75), a.data(), lda, b.data(), ldb, beta, c.data(), ldc};
  host::run(g);
  g.a = da.get(), g.b = db.get(), g.c = dc.get();
  run_on(ex, g);
  check_close(dc.to_host(), c, tolerance<T>,
              std::string("Gemm<") + type_name(T{}) + "> trans_a " + std::to_string(ta) + " trans_b " +
                  std::to_string(tb) + " beta " + std::to_string(double(beta)) + " k " + std::to_string(k));
}

// accumulate off: the gradients are set (a step's first micro-batch), where float takes cuBLASLt's
// weight gradient with the bias gradient in its epilogue (BGRADB) when the executor fuses.
template <class T> void linear_case(backend::Executor &ex, bool bias, bool dx, bool dbias, bool accumulate) {
  const std::size_t batch = 33, in = 17, out = 9;
  auto x = uniform<T>(batch * in, 10), w = uniform<T>(out * in, 11), b = uniform<T>(out, 12);
  auto dy = uniform<T>(batch * out, 13), dw = uniform<T>(out * in, 14), db = uniform<T>(out, 15);
  std::vector<T> y(batch * out), dxs(batch * in);
  DeviceArray<T> d_x(ex, x), d_w(ex, w), d_b(ex, b), d_y(ex, y), d_dy(ex, dy), d_dx(ex, dxs), d_dw(ex, dw),
      d_db(ex, db);

  host::run(op::LinearForward<T>{batch, in, out, x.data(), w.data(), bias ? b.data() : nullptr, y.data()});
  run_on(ex, op::LinearForward<T>{batch, in, out, d_x.get(), d_w.get(), bias ? d_b.get() : nullptr, d_y.get()});
  check_close(d_y.to_host(), y, tolerance<T>,
              std::string("LinearForward<") + type_name(T{}) + "> bias " + std::to_string(bias));

  host::run(op::LinearBackward<T>{batch, in, out, x.data(), w.data(), dy.data(), dx ? dxs.data() : nullptr, dw.data(),
                                  dbias ? db.data() : nullptr, accumulate});
  run_on(ex, op::LinearBackward<T>{batch, in, out, d_x.get(), d_w.get(), d_dy.get(), dx ? d_dx.get() : nullptr,
                                   d_dw.get(), dbias ? d_db.get() : nullptr, accumulate});
  const std::string what = std::string("LinearBackward<") + type_name(T{}) + "> accumulate " +
                           std::to_string(accumulate) + " dbias " + std::to_string(dbias) + " ";
  if (dx) check_close(d_dx.to_host(), dxs, tolerance<T>, what + "dx");
  check_close(d_dw.to_host(), dw, tolerance<T>, what + "dweight");
  check_close(d_db.to_host(), db, tolerance<T>, what + "dbias");
}

// y = act(z), z = x w^T + b, with z kept at pre_activation or not, against the host kernels.
template <class T> void activated_linear_case(backend::Executor &ex, Activation act, std::size_t out, bool keep) {
  const std::size_t batch = 33, in = 17;
  auto x = uniform<T>(batch * in, 20), w = uniform<T>(out * in, 21), b = uniform<T>(out, 22);
  std::vector<T> y(batch * out), z(batch * out, T(7));
  DeviceArray<T> d_x(ex, x), d_w(ex, w), d_b(ex, b), d_y(ex, y), d_z(ex, z);
  op::LinearForward<T> f{.batch = batch,
                         .in = in,
                         .out = out,
                         .x = x.data(),
                         .weight = w.data(),
                         .bias = b.data(),
                         .y = y.data(),
                         .activation = act,
                         .pre_activation = keep ? z.data() : nullptr};
  host::run(f);
  f.x = d_x.get(), f.weight = d_w.get(), f.bias = d_b.get(), f.y = d_y.get();
  f.pre_activation = keep ? d_z.get() : nullptr;
  run_on(ex, f);
  const std::string what = std::string("LinearForward<") + type_name(T{}) + "> activation " +
                           std::to_string(static_cast<int>(act)) + " out " + std::to_string(out) +
                           (keep ? " keeping z " : " ");
  check_close(d_y.to_host(), y, tolerance<T>, what + "y");
  check_close(d_z.to_host(), z, tolerance<T>, what + "z"); // (untouched: 7s on both sides)
}

// A Linear (in -> hidden) with its ReLU, then a Linear (hidden -> out) whose backward takes the
// ReLU's over (relu_before) and writes the first one's bias gradient (dbias_before): on the GPU
// through cuBLASLt's DRELU(_BGRAD) epilogue where the forward kept the ReLU's mask, by kernels
// where not. `mask_from_forward` off: the forward is given no mask, and the backward one filled
// with garbage, which it must not read. `out` 1: a one-wide head, whose input gradient is a
// product of depth 1 (no DRELU there: kernels do it).
template <class T>
void relu_pair_case(backend::Executor &ex, bool accumulate, bool mask_from_forward, std::size_t out = 9) {
  const std::size_t batch = 33, in = 17, hidden = 24;
  auto x = uniform<T>(batch * in, 50), w0 = uniform<T>(hidden * in, 51), b0 = uniform<T>(hidden, 52);
  auto w1 = uniform<T>(out * hidden, 53), dy = uniform<T>(batch * out, 54);
  auto db0 = uniform<T>(hidden, 55), dw1 = uniform<T>(out * hidden, 56), db1 = uniform<T>(out, 57);
  std::vector<T> h(batch * hidden), dh(batch * hidden);
  std::vector<std::uint8_t> mask(backend::cuda::relu_mask_bytes(batch, hidden), 0xff);
  DeviceArray<T> d_x(ex, x), d_w0(ex, w0), d_b0(ex, b0), d_w1(ex, w1), d_dy(ex, dy), d_db0(ex, db0), d_dw1(ex, dw1),
      d_db1(ex, db1), d_h(ex, h), d_dh(ex, dh);
  DeviceArray<std::uint8_t> d_mask(ex, mask);

  op::LinearForward<T> f{.batch = batch,
                         .in = in,
                         .out = hidden,
                         .x = x.data(),
                         .weight = w0.data(),
                         .bias = b0.data(),
                         .y = h.data(),
                         .activation = Activation::relu};
  host::run(f);
  f.x = d_x.get(), f.weight = d_w0.get(), f.bias = d_b0.get(), f.y = d_h.get();
  f.relu_mask = mask_from_forward ? d_mask.get() : nullptr;
  run_on(ex, f);
  const std::string what = std::string("relu pair<") + type_name(T{}) + "> out " + std::to_string(out) +
                           " accumulate " + std::to_string(accumulate) + (mask_from_forward ? " mask" : " no mask") +
                           " ";
  check_close(d_h.to_host(), h, tolerance<T>, what + "forward");

  op::LinearBackward<T> b{.batch = batch,
                          .in = hidden,
                          .out = out,
                          .x = h.data(),
                          .weight = w1.data(),
                          .dy = dy.data(),
                          .dx = dh.data(),
                          .dweight = dw1.data(),
                          .dbias = db1.data(),
                          .accumulate = accumulate,
                          .relu_before = true,
                          .dbias_before = db0.data()};
  host::run(b);
  b.x = d_h.get(), b.weight = d_w1.get(), b.dy = d_dy.get(), b.dx = d_dh.get(), b.dweight = d_dw1.get();
  b.dbias = d_db1.get(), b.dbias_before = d_db0.get(), b.relu_mask = d_mask.get();
  run_on(ex, b);
  check_close(d_dh.to_host(), dh, tolerance<T>, what + "dx (at the ReLU's input)");
  check_close(d_db0.to_host(), db0, tolerance<T>, what + "dbias of the Linear before");
  check_close(d_dw1.to_host(), dw1, tolerance<T>, what + "dweight");
  check_close(d_db1.to_host(), db1, tolerance<T>, what + "dbias");
  // Some gradients stopped at the ReLU, some passed: the case tests the mask.
  const auto zeros = std::count(dh.begin(), dh.end(), T(0));
  CHECK(zeros > 0);
  CHECK(zeros < static_cast<std::ptrdiff_t>(dh.size()));
}

template <class T> void activation_case(backend::Executor &ex, Activation kind) {
  const std::size_t n = 1000;
  auto x = uniform<T>(n, 20, -4, 4), dy = uniform<T>(n, 21);
  std::vector<T> y(n), dx(n);
  DeviceArray<T> d_x(ex, x), d_y(ex, y), d_dy(ex, dy), d_dx(ex, dx);
  const std::string what = std::string("Activation<") + type_name(T{}) + "> " + std::to_string(int(kind));
  host::run(op::ActivationForward<T>{kind, n, x.data(), y.data()});
  run_on(ex, op::ActivationForward<T>{kind, n, d_x.get(), d_y.get()});
  check_close(d_y.to_host(), y, tolerance<T>, what + " forward");
  host::run(op::ActivationBackward<T>{kind, n, x.data(), y.data(), dy.data(), dx.data()});
  run_on(ex, op::ActivationBackward<T>{kind, n, d_x.get(), d_y.get(), d_dy.get(), d_dx.get()});
  check_close(d_dx.to_host(), dx, tolerance<T>, what + " backward");
}

template <class T> void fill_case(backend::Executor &ex, T value) {
  std::vector<T> v = uniform<T>(1001, 30);
  DeviceArray<T> d(ex, v);
  host::run(op::Fill<T>{v.size(), value, v.data()});
  run_on(ex, op::Fill<T>{v.size(), value, d.get()});
  const auto got = d.to_host();
  CHECK(got == v);
  CHECK(std::signbit(got[0]) == std::signbit(value));
}

template <class T>
// bad: two labels out of range (one negative, one == classes), which set the status word, make
// the loss NaN and give their rows a zero gradient on both backends.
void cross_entropy_case(backend::Executor &ex, std::size_t rows, std::size_t classes, bool loss, bool grad,
                        bool bad = false) {
  auto logits = uniform<T>(rows * classes, 40, -5, 5);
  std::vector<std::int32_t> labels(rows);
  for (std::size_t r = 0; r < rows; ++r) labels[r] = static_cast<std::int32_t>((r * 7 + 3) % classes);
  if (bad) labels[rows / 2] = -3, labels[rows - 1] = static_cast<std::int32_t>(classes);
  std::vector<T> l{T(0.25)}, d(rows * classes, T(0.5));
  std::vector<std::int32_t> invalid{0};
  DeviceArray<T> d_logits(ex, logits), d_l(ex, l), d_d(ex, d);
  DeviceArray<std::int32_t> d_labels(ex, labels), d_invalid(ex, invalid);
  const T scale = T(1) / T(rows);
  host::run(op::CrossEntropy<T>{rows, classes, logits.data(), labels.data(), scale, loss ? l.data() : nullptr,
                                grad ? d.data() : nullptr, invalid.data()});
  run_on(ex, op::CrossEntropy<T>{rows, classes, d_logits.get(), d_labels.get(), scale, loss ? d_l.get() : nullptr,
                                 grad ? d_d.get() : nullptr, d_invalid.get()});
  const std::string what = std::string("CrossEntropy<") + type_name(T{}) + "> " + std::to_string(rows) + " x " +
                           std::to_string(classes) + (bad ? " bad labels" : "");
  CHECK_MESSAGE(invalid[0] == (bad ? 1 : 0), what);
  CHECK_MESSAGE(d_invalid.to_host() == invalid, (what + " status word"));
  check_close(d_l.to_host(), l, tolerance<T>, what + " loss");
  check_close(d_d.to_host(), d, tolerance<T>, what + " dlogits");
}

// bad: one target is NaN, which sets the status word.
template <class T> void squared_error_case(backend::Executor &ex, std::size_t n, bool loss, bool grad, bool bad) {
  auto pred = uniform<T>(n, 50), target = uniform<T>(n, 51);
  if (bad) target[n / 2] = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> l{T(0.5)}, d(n, T(0.5));
  std::vector<std::int32_t> invalid{0};
  DeviceArray<T> d_pred(ex, pred), d_target(ex, target), d_l(ex, l), d_d(ex, d);
  DeviceArray<std::int32_t> d_invalid(ex, invalid);
  const T scale = T(1) / T(n);
  host::run(op::SquaredError<T>{n, pred.data(), target.data(), scale, loss ? l.data() : nullptr,
                                grad ? d.data() : nullptr, invalid.data()});
  run_on(ex, op::SquaredError<T>{n, d_pred.get(), d_target.get(), scale, loss ? d_l.get() : nullptr,
                                 grad ? d_d.get() : nullptr, d_invalid.get()});
  const std::string what =
      std::string("SquaredError<") + type_name(T{}) + "> n " + std::to_string(n) + (bad ? " NaN target" : "");
  CHECK_MESSAGE(invalid[0] == (bad ? 1 : 0), what);
  CHECK_MESSAGE(d_invalid.to_host() == invalid, (what + " status word"));
  check_close(d_l.to_host(), l, tolerance<T>, what + " loss");
  check_close(d_d.to_host(), d, tolerance<T>, what + " dpred");
}

template <class T> void sgd_case(backend::Executor &ex, T momentum, T dampening, T weight_decay, bool nesterov) {
  const std::size_t n = 777;
  auto p = uniform<T>(n, 60), g = uniform<T>(n, 61);
  std::vector<T> buf(n, T(0));
  DeviceArray<T> d_p(ex, p), d_g(ex, g), d_buf(ex, buf);
  for (int step = 0; step < 3; ++step) {
    op::SgdStep<T> s{n, p.data(), g.data(), buf.data(), T(0.1), momentum, dampening, weight_decay, nesterov, step == 0};
    host::run(s);
    s.params = d_p.get(), s.grads = d_g.get(), s.momentum_buffer = d_buf.get();
    run_on(ex, s);
  }
  const std::string what = std::string("SgdStep<") + type_name(T{}) + "> momentum " + std::to_string(double(momentum)) +
                           " nesterov " + std::to_string(nesterov);
  check_close(d_p.to_host(), p, tolerance<T>, what + " params");
  check_close(d_buf.to_host(), buf, tolerance<T>, what + " momentum buffer");
}

template <class T> void adam_case(backend::Executor &ex, T weight_decay, bool decoupled, bool amsgrad) {
  const std::size_t n = 555;
  auto p = uniform<T>(n, 70);
  std::vector<T> m(n, T(0)), v(n, T(0)), vmax(n, T(0));
  DeviceArray<T> d_p(ex, p), d_m(ex, m), d_v(ex, v), d_vmax(ex, vmax);
  for (std::int64_t step = 1; step <= 3; ++step) {
    const auto g = uniform<T>(n, 71 + std::uint32_t(step));
    DeviceArray<T> d_g(ex, g);
    op::AdamStep<T> a{n,      p.data(), g.data(), m.data(),     v.data(),  vmax.data(), T(1e-2),
                      T(0.9), T(0.999), T(1e-8),  weight_decay, decoupled, amsgrad,     step};
    host::run(a);
    a.params = d_p.get(), a.grads = d_g.get(), a.exp_avg = d_m.get(), a.exp_avg_sq = d_v.get(),
    a.max_exp_avg_sq = d_vmax.get();
    run_on(ex, a);
  }
  const std::string what = std::string("AdamStep<") + type_name(T{}) + "> decoupled " + std::to_string(decoupled) +
                           " amsgrad " + std::to_string(amsgrad);
  check_close(d_p.to_host(), p, tolerance<T>, what + " params");
  check_close(d_m.to_host(), m, tolerance<T>, what + " exp_avg");
  check_close(d_v.to_host(), v, tolerance<T>, what + " exp_avg_sq");
  if (amsgrad) check_close(d_vmax.to_host(), vmax, tolerance<T>, what + " max_exp_avg_sq");
}

// Adam's per-step scalars, which the comparison above cannot see: from zero parameters and with
// the same gradient every step, the updates neither cancel nor depend on a weight, so the
// device's parameters equal the host's to a rounding or two of float (no more than 1e-6), while
// bias corrections computed in float (beta2^t rounded, then 1 - beta2^t small) were 6e-6 to
// 1.3e-5 off from step 2 on with beta2 = 0.9999 (checked by emulating both on the host).
void adam_scalars_case(backend::Executor &ex, bool amsgrad) {
  const std::size_t n = 555;
  const auto g = uniform<float>(n, 80);
  std::vector<float> p(n, 0.0f), m(n, 0.0f), v(n, 0.0f), vmax(n, 0.0f);
  DeviceArray<float> d_p(ex, p), d_g(ex, g), d_m(ex, m), d_v(ex, v), d_vmax(ex, vmax);
  for (std::int64_t step = 1; step <= 4; ++step) {
    op::AdamStep<float> a{n,    p.data(), g.data(), m.data(), v.data(), vmax.data(), 1e-3f,
                          0.9f, 0.9999f,  1e-8f,    0.0f,     false,    amsgrad,     step};
    host::run(a);
    a.params = d_p.get(), a.grads = d_g.get(), a.exp_avg = d_m.get(), a.exp_avg_sq = d_v.get(),
    a.max_exp_avg_sq = d_vmax.get();
    run_on(ex, a);
    check_close(d_p.to_host(), p, 1e-6,
                "AdamStep<float> amsgrad " + std::to_string(amsgrad) + " params after step " + std::to_string(step));
  }
}

template <class T> void all_gemm(backend::Executor &ex) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (T beta : {T(0), T(1), T(-0.5)}) gemm_case<T>(ex, ta, tb, beta, 53);
  for (T beta : {T(0), T(1), T(2)}) gemm_case<T>(ex, false, false, beta, 0); // empty product: C = beta C
}

struct LayerShape {
  bool linear;
  Activation kind;
  std::size_t in, out;
};

// A chain of small layers with random parameters and gradients (outputs poisoned) on the host,
// copied to the device, and the chain's layers described twice, over each copy: an op built on
// each can be run by the host kernels and by the GPU and the two compared. Seeds: seed + j for
// layer j's weight, seed + 10 + j its bias, + 20 and + 30 its two gradients.
template <class T> struct TwinLayers {
  TwinLayers(backend::Executor &ex, std::span<const LayerShape> shapes, std::size_t rows, const std::vector<T> &x,
             std::uint64_t seed, double weight_range)
      : ex(ex) {
    const T *d_x = keep(x).get();
    for (std::size_t j = 0; j < shapes.size(); ++j) {
      const auto &s = shapes[j];
      w.push_back(uniform<T>(s.linear ? s.out * s.in : 1, seed + j, -weight_range, weight_range));
      b.push_back(uniform<T>(s.linear ? s.out : 1, seed + 10 + j));
      dw.push_back(uniform<T>(s.linear ? s.out * s.in : 1, seed + 20 + j));
      db.push_back(uniform<T>(s.linear ? s.out : 1, seed + 30 + j));
      y.push_back(std::vector<T>(rows * s.out, T(-7)));
      d_y.push_back(&keep(y[j]));
      d_dw.push_back(&keep(dw[j]));
      d_db.push_back(&keep(db[j]));
      on_host.push_back({s.linear, s.kind, s.in, s.out, w[j].data(), b[j].data(), dw[j].data(), db[j].data(),
                         j ? y[j - 1].data() : x.data(), y[j].data()});
      on_gpu.push_back({s.linear, s.kind, s.in, s.out, keep(w[j]).get(), keep(b[j]).get(), d_dw[j]->get(),
                        d_db[j]->get(), j ? d_y[j - 1]->get() : d_x, d_y[j]->get()});
      if (s.linear) continue;
      for (auto *l : {&on_host.back(), &on_gpu.back()}) {
        l->weight = l->bias = nullptr;
        l->dweight = l->dbias = nullptr;
      }
    }
  }
  // A device copy of v, kept as long as the layers are.
  DeviceArray<T> &keep(const std::vector<T> &v) {
    arrays.push_back(std::make_unique<DeviceArray<T>>(ex, v));
    return *arrays.back();
  }
  // After both ran: every output, weight gradient and bias gradient, GPU against host.
  void check(std::span<const LayerShape> shapes, const std::string &what) const {
    for (std::size_t j = 0; j < shapes.size(); ++j) {
      check_close(d_y[j]->to_host(), y[j], tolerance<T>, what + " y" + std::to_string(j));
      if (!shapes[j].linear) continue;
      check_close(d_dw[j]->to_host(), dw[j], tolerance<T>, what + " dweight" + std::to_string(j));
      check_close(d_db[j]->to_host(), db[j], tolerance<T>, what + " dbias" + std::to_string(j));
    }
  }

  backend::Executor &ex;
  std::vector<std::vector<T>> w, b, dw, db, y;
  std::vector<std::unique_ptr<DeviceArray<T>>> arrays;
  std::vector<DeviceArray<T> *> d_y, d_dw, d_db;
  std::vector<op::SmallLayer<T>> on_host, on_gpu;
};

// A small stage (Linear 13 -> 20, GELU, Linear 20 -> 7, ReLU, Linear 7 -> 3) fused, on 150 rows:
// several chunks, so several blocks forward and one block looping backward.
template <class T> void small_stage_case(backend::Executor &ex, bool accumulate) {
  const LayerShape shapes[] = {{true, Activation::identity, 13, 20},
                               {false, Activation::gelu, 20, 20},
                               {true, Activation::identity, 20, 7},
                               {false, Activation::relu, 7, 7},
                               {true, Activation::identity, 7, 3}};
  const std::size_t rows = 150, count = std::size(shapes);
  const auto x = uniform<T>(rows * 13, 40), dy = uniform<T>(rows * 3, 41);
  TwinLayers<T> t(ex, shapes, rows, x, 50, 1.0);
  std::vector<T> dx(rows * 13, T(-7));
  op::SmallForward<T> hf{.rows = rows, .count = count}, df{.rows = rows, .count = count};
  op::SmallBackward<T> hb{.rows = rows, .count = count, .dy = dy.data(), .dx = dx.data(), .accumulate = accumulate};
  DeviceArray<T> &d_dx = t.keep(dx);
  op::SmallBackward<T> db_op{
      .rows = rows, .count = count, .dy = t.keep(dy).get(), .dx = d_dx.get(), .accumulate = accumulate};
  std::copy(t.on_host.begin(), t.on_host.end(), hf.layers.begin());
  std::copy(t.on_gpu.begin(), t.on_gpu.end(), df.layers.begin());
  hb.layers = hf.layers;
  db_op.layers = df.layers;
  host::run(hf);
  host::run(hb);
  run_on(ex, df);
  run_on(ex, db_op);
  const std::string what = std::string("Small<") + type_name(T{}) + "> accumulate " + std::to_string(accumulate);
  t.check(shapes, what);
  check_close(d_dx.to_host(), dx, tolerance<T>, what + " dx");
}

// A whole-network step (Linear 13 -> 40, Tanh, Linear 40 -> 64, GELU, Linear 64 -> 9, ReLU,
// Linear 9 -> 5) on 150 rows, 64 wide: five passes of one block in float. Either loss, first
// micro-batch or not; with one bad target, the status word and a loss that is not finite.
template <class T> void small_network_case(backend::Executor &ex, op::LossKind kind, bool first, bool bad) {
  const LayerShape shapes[] = {{true, Activation::identity, 13, 40}, {false, Activation::tanh, 40, 40},
                               {true, Activation::identity, 40, 64}, {false, Activation::gelu, 64, 64},
                               {true, Activation::identity, 64, 9},  {false, Activation::relu, 9, 9},
                               {true, Activation::identity, 9, 5}};
  const std::size_t rows = 150, count = std::size(shapes), classes = 5;
  const auto x = uniform<T>(rows * 13, 90);
  auto labels = test::labels(rows, classes, 91);
  auto targets = uniform<T>(rows * classes, 92);
  if (bad) {
    labels[77] = -3;
    targets[301] = T(NAN);
  }
  TwinLayers<T> t(ex, shapes, rows, x, 100, 0.4);
  std::vector<T> loss{T(0.25)}; // a later micro-batch adds to it
  std::vector<std::int32_t> invalid{first ? 1 : 0};
  const T scale = kind == op::LossKind::cross_entropy ? T(1) / T(200) : T(1) / T(200 * classes);
  op::SmallNetwork<T> hn{.rows = rows, .count = count, .first = first}, dn = hn;
  hn.loss = {kind, labels.data(), targets.data(), scale, loss.data(), invalid.data()};
  DeviceArray<T> &d_loss = t.keep(loss);
  DeviceArray<std::int32_t> d_invalid(ex, invalid), d_labels(ex, labels);
  dn.loss = {kind, d_labels.get(), t.keep(targets).get(), scale, d_loss.get(), d_invalid.get()};
  std::copy(t.on_host.begin(), t.on_host.end(), hn.layers.begin());
  std::copy(t.on_gpu.begin(), t.on_gpu.end(), dn.layers.begin());
  host::run(hn);
  run_on(ex, dn);
  const std::string what = std::string("SmallNetwork<") + type_name(T{}) + "> loss " +
                           std::to_string(static_cast<int>(kind)) + " first " + std::to_string(first) + " bad " +
                           std::to_string(bad);
  CHECK_MESSAGE(d_invalid.to_host() == invalid, what);
  CHECK_MESSAGE(invalid[0] == (bad ? 1 : 0), what);
  check_close(d_loss.to_host(), loss, tolerance<T>, what + " loss");
  t.check(shapes, what); // a bad label's row has a zero gradient on both (cross_entropy_row)
}

} // namespace

TEST_SUITE("gpu") {
  TEST_CASE("ops: Gemm matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    all_gemm<float>(ex);
    all_gemm<double>(ex);
  }

  TEST_CASE("ops: LinearForward and LinearBackward match the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    // Fused epilogues (cuBLASLt) and the plain cuBLAS path; the weight gradient on the side stream
    // beside the input gradient (these products are far below a wave of tiles) or after it.
    // And with tuning, which sends the input gradient through cuBLASLt too.
    backend::cuda::Executor ex(0, 0, Precision::fp32), plain(0, 1, Precision::fp32, {.fuse_epilogues = false}),
        serial(0, 2, Precision::fp32, {.overlap_gradients = false}),
        plain_serial(0, 3, Precision::fp32, {.fuse_epilogues = false, .overlap_gradients = false}),
        tuned(0, 4, Precision::fp32, {.tune_products = true});
    REQUIRE(ex.overlaps_gradients());
    REQUIRE(plain.overlaps_gradients());
    REQUIRE(!serial.overlaps_gradients());
    for (bool bias : {false, true})
      for (bool dx : {false, true})
        for (bool dbias : {false, true})
          for (bool accumulate : {true, false}) {
            linear_case<float>(ex, bias, dx, dbias, accumulate);
            linear_case<double>(ex, bias, dx, dbias, accumulate);
            linear_case<float>(plain, bias, dx, dbias, accumulate);
            linear_case<float>(serial, bias, dx, dbias, accumulate);
            linear_case<double>(plain_serial, bias, dx, dbias, accumulate);
            linear_case<float>(tuned, bias, dx, dbias, accumulate);
          }
    MESSAGE("products tuned: " << tuned.tuned_products());
  }

  TEST_CASE("ops: LinearForward with each activation after it, its input kept or not, matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    // Fused (cuBLASLt for ReLU and GELU's tanh form, where it takes the shape) and plain.
    backend::cuda::Executor ex(0, 0, Precision::fp32), plain(0, 1, Precision::fp32, {.fuse_epilogues = false});
    for (backend::Executor *e : {static_cast<backend::Executor *>(&ex), static_cast<backend::Executor *>(&plain)})
      for (const std::size_t out : {std::size_t{9}, std::size_t{24}})
        for (const Activation act : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh,
                                     Activation::gelu, Activation::gelu_tanh})
          for (bool keep : {false, true}) {
            activated_linear_case<float>(*e, act, out, keep);
            activated_linear_case<double>(*e, act, out, keep);
          }
  }

  TEST_CASE("ops: a Linear taking the ReLU before it (relu_before, DRELU_BGRAD) matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32), plain(0, 1, Precision::fp32, {.fuse_epilogues = false}),
        serial(0, 2, Precision::fp32, {.overlap_gradients = false}),
        tuned(0, 3, Precision::fp32, {.tune_products = true});
    for (const bool accumulate : {false, true})
      for (const bool mask : {true, false}) {
        relu_pair_case<float>(ex, accumulate, mask);
        relu_pair_case<double>(ex, accumulate, mask);
        relu_pair_case<float>(plain, accumulate, mask);
        relu_pair_case<float>(serial, accumulate, mask);
        relu_pair_case<float>(tuned, accumulate, mask);
        relu_pair_case<float>(ex, accumulate, mask, 1);
      }
  }

  TEST_CASE("ops: activations forward and backward match the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (Activation kind : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh,
                            Activation::gelu, Activation::gelu_tanh}) {
      activation_case<float>(ex, kind);
      activation_case<double>(ex, kind);
    }
  }

  TEST_CASE("ops: SmallForward and SmallBackward match the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (const bool accumulate : {true, false}) {
      small_stage_case<float>(ex, accumulate);
      small_stage_case<double>(ex, accumulate);
    }
  }

  TEST_CASE("ops: SmallNetwork matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (const auto kind : {op::LossKind::cross_entropy, op::LossKind::squared_error})
      for (const bool first : {true, false})
        for (const bool bad : {false, true}) {
          small_network_case<float>(ex, kind, first, bad);
          small_network_case<double>(ex, kind, first, bad);
        }
  }

  TEST_CASE("ops: Fill matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (double value : {0.0, -0.0, 1.5}) {
      fill_case<float>(ex, float(value));
      fill_case<double>(ex, value);
    }
  }

  TEST_CASE("ops: CrossEntropy matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    // 2 classes (the seed's), wide rows (more classes than a warp has lanes), and more rows
    // than one block takes (many partial sums).
    // Bad labels with a loss, a gradient, or neither (a call that only checks the labels).
    for (auto [rows, classes] : {std::pair<std::size_t, std::size_t>{64, 2}, {5, 100}, {3000, 7}}) {
      for (auto [loss, grad] : {std::pair{true, true}, {true, false}, {false, true}}) {
        for (bool bad : {false, true}) {
          cross_entropy_case<float>(ex, rows, classes, loss, grad, bad);
          cross_entropy_case<double>(ex, rows, classes, loss, grad, bad);
        }
      }
      cross_entropy_case<float>(ex, rows, classes, false, false, true);
    }
  }

  TEST_CASE("ops: SquaredError matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (std::size_t n : {std::size_t(1), std::size_t(128), std::size_t(300000)}) {
      for (bool bad : {false, true}) {
        squared_error_case<float>(ex, n, true, true, bad);
        squared_error_case<double>(ex, n, true, true, bad);
      }
      squared_error_case<float>(ex, n, false, true, false);
      squared_error_case<float>(ex, n, false, false, true); // only checks the targets
    }
  }

  TEST_CASE("ops: SgdStep matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    sgd_case<float>(ex, 0, 0, 0, false);
    sgd_case<float>(ex, 0.9f, 0.1f, 0.01f, false);
    sgd_case<float>(ex, 0.9f, 0, 0.01f, true);
    sgd_case<double>(ex, 0.9, 0.1, 0.01, false);
    sgd_case<double>(ex, 0.9, 0, 0, true);
  }

  TEST_CASE("ops: AdamStep matches the host kernels") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    for (bool decoupled : {false, true})
      for (bool amsgrad : {false, true}) {
        adam_case<float>(ex, 0.01f, decoupled, amsgrad);
        adam_case<double>(ex, 0.01, decoupled, amsgrad);
      }
    adam_case<float>(ex, 0, false, false);
  }

  TEST_CASE("ops: AdamStep rounds its bias corrections from double as the host does") {
    TANDEM_SKIP_WITHOUT_GPU();
    backend::cuda::Executor ex(0, 0, Precision::fp32);
    adam_scalars_case(ex, false);
    adam_scalars_case(ex, true);
  }
}
