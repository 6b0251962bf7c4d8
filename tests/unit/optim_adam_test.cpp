// SPDX-License-Identifier: Apache-2.0
// optim::Adam and optim::AdamW against the textbook algorithm, computed here in double precision.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <tandem/backend/host/executor.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;

namespace {

// All an optimizer asks of a network: its parameter groups. Gradients are written by the test,
// so each step can get fresh values of any size without a forward pass in between.
struct Groups {
  using value_type = float;
  std::vector<optim::ParameterGroup<float>> groups;
  std::span<const optim::ParameterGroup<float>> parameter_groups() const { return groups; }
};

// Two blocks on two host devices (host memory is plain memory, so vectors serve as device buffers).
struct Fixture {
  backend::host::Executor ex0{0}, ex1{1};
  std::vector<float> p0, g0, p1, g1;
  Groups net;
  explicit Fixture(Random &rng) : p0(13), g0(13), p1(7), g1(7) {
    for (auto *v : {&p0, &p1})
      for (auto &x : *v) x = static_cast<float>(rng.uniform(-1, 1));
    net.groups = {{&ex0, p0.data(), g0.data(), p0.size()}, {&ex1, p1.data(), g1.data(), p1.size()}};
  }
};

// Adam as Kingma & Ba write it (bias-corrected moments), with PyTorch's two weight-decay forms
// and AMSGrad's running maximum of the second moment. Written from the algorithm, not the kernel.
struct ReferenceAdam {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled, amsgrad;
  std::vector<double> m, v, v_max;
  int t = 0;

  void step(std::vector<double> &p, std::span<const float> grad) {
    if (m.empty()) m = v = v_max = std::vector<double>(p.size(), 0.0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (decoupled) p[i] -= lr * weight_decay * p[i];
      else g += weight_decay * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      v_max[i] = std::max(v_max[i], v[i]);
      const double m_hat = m[i] / (1 - std::pow(beta1, t));
      const double v_hat = (amsgrad ? v_max[i] : v[i]) / (1 - std::pow(beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

// Largest difference of the parameter's displacement from its start, relative to the largest
// displacement: the update itself is compared, not the (much larger) weights.
double displacement_error(std::span<const float> got, std::span<const double> want, std::span<const double> start) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::abs((got[i] - start[i]) - (want[i] - start[i])));
    scale = std::max(scale, std::abs(want[i] - start[i]));
  }
  return diff / std::max(scale, std::numeric_limits<double>::min());
}

struct Case {
  const char *name;
  float lr;
  std::pair<float, float> betas;
  float eps, weight_decay;
  bool amsgrad, decoupled;
  double shrink;       // gradients scale by shrink^t: < 1 makes v fall, so AMSGrad's maximum matters
  float lr_from_3 = 0; // set_lr(lr_from_3) before the fourth step, where not 0 (an LR schedule)
};

template <class Opt> void check_against_reference(const Case &c) {
  const std::string name = c.name;
  CAPTURE(name);
  Random rng(2024);
  Fixture f(rng);
  typename Opt::Options options{
      .lr = c.lr, .betas = c.betas, .eps = c.eps, .weight_decay = c.weight_decay, .amsgrad = c.amsgrad};
  Opt opt(f.net, options);
  // The reference gets the float hyper-parameters the optimizer got, widened exactly.
  auto make_ref = [&](bool amsgrad) {
    return ReferenceAdam{c.lr, c.betas.first, c.betas.second, c.eps, c.weight_decay, c.decoupled, amsgrad, {}, {}, {}};
  };
  ReferenceAdam ref0 = make_ref(c.amsgrad), ref1 = make_ref(c.amsgrad), plain0 = make_ref(!c.amsgrad);
  const std::vector<double> start0(f.p0.begin(), f.p0.end()), start1(f.p1.begin(), f.p1.end());
  std::vector<double> want0 = start0, want1 = start1, other0 = start0;

  // Group 0 steps six times, group 1 only on even steps: each keeps its own step count, and so
  // its own bias correction.
  for (int t = 0; t < 6; ++t) {
    if (t == 3 && c.lr_from_3 != 0) {
      opt.set_lr(c.lr_from_3);
      ref0.lr = ref1.lr = plain0.lr = c.lr_from_3;
    }
    const double scale = std::pow(c.shrink, t);
    for (auto &g : f.g0) g = static_cast<float>(scale * rng.uniform(-2, 2));
    for (auto &g : f.g1) g = static_cast<float>(scale * rng.uniform(-2, 2));
    opt.step_group(0);
    ref0.step(want0, f.g0);
    plain0.step(other0, f.g0);
    if (t % 2 == 0) {
      opt.step_group(1);
      ref1.step(want1, f.g1);
    }
    f.ex0.synchronize();
    f.ex1.synchronize();
  }
  CHECK(opt.steps(0) == 6);
  CHECK(opt.steps(1) == 3);
  CHECK(displacement_error(f.p0, want0, start0) < 1e-5);
  CHECK(displacement_error(f.p1, want1, start1) < 1e-5);
  // With AMSGrad on, the data must make its running maximum matter, or the checks above could
  // not tell it from plain Adam.
  if (c.amsgrad) {
    const std::vector<float> other_f(other0.begin(), other0.end());
    CHECK(displacement_error(other_f, want0, start0) > 1e-3);
  }
}

} // namespace

TEST_CASE("optim::Adam and optim::AdamW default to PyTorch's hyper-parameters") {
  const optim::AdamOptions adam;
  CHECK(adam.lr == 1e-3f);
  CHECK(adam.betas.first == 0.9f);
  CHECK(adam.betas.second == 0.999f);
  CHECK(adam.eps == 1e-8f);
  CHECK(adam.weight_decay == 0.0f);
  CHECK_FALSE(adam.amsgrad);
  const optim::AdamWOptions adamw;
  CHECK(adamw.lr == 1e-3f);
  CHECK(adamw.betas.first == 0.9f);
  CHECK(adamw.betas.second == 0.999f);
  CHECK(adamw.eps == 1e-8f);
  CHECK(adamw.weight_decay == 1e-2f);
  CHECK_FALSE(adamw.amsgrad);
}

TEST_CASE("optim::Adam and optim::AdamW are made from a network alone, and lr() reads the rate back") {
  Random rng(3);
  Fixture f(rng);
  optim::Adam adam(f.net);
  CHECK(adam.lr() == 1e-3f);
  CHECK(adam.options().betas == std::pair{0.9f, 0.999f});
  CHECK(adam.options().weight_decay == 0.0f);
  adam.set_lr(0.25f);
  CHECK(adam.lr() == 0.25f);
  optim::AdamW adamw(f.net);
  CHECK(adamw.lr() == 1e-3f);
  CHECK(adamw.options().weight_decay == 1e-2f);
  CHECK_FALSE(adamw.options().amsgrad);
}

TEST_CASE("optim::Adam matches the algorithm in double precision") {
  check_against_reference<optim::Adam>({"plain", 0.05f, {0.9f, 0.999f}, 1e-8f, 0.0f, false, false, 0.5});
  check_against_reference<optim::Adam>({"l2 decay, eps", 0.05f, {0.8f, 0.95f}, 1e-2f, 0.3f, false, false, 0.5});
  check_against_reference<optim::Adam>({"amsgrad", 0.05f, {0.9f, 0.99f}, 1e-8f, 0.1f, true, false, 0.5});
  check_against_reference<optim::Adam>({"beta1 = 0", 0.05f, {0.0f, 0.9f}, 1e-6f, 0.0f, true, false, 0.3});
}

TEST_CASE("optim::Adam and optim::AdamW take a new learning rate from the next step on (set_lr)") {
  check_against_reference<optim::Adam>(
      {"lr 0.05 then 0.01", 0.05f, {0.9f, 0.99f}, 1e-8f, 0.1f, false, false, 0.5, 0.01f});
  // AdamW's decay uses the rate too: p -= lr * wd * p.
  check_against_reference<optim::AdamW>(
      {"lr 0.05 then 0.2", 0.05f, {0.9f, 0.999f}, 1e-8f, 0.3f, false, true, 0.5, 0.2f});
  Random rng(5);
  Fixture f(rng);
  optim::AdamW opt(f.net, {});
  CHECK_THROWS_WITH_AS(opt.set_lr(-0.5f), doctest::Contains("optim::AdamW: invalid learning rate -0.5"), Error);
  CHECK_THROWS_AS(opt.set_lr(std::numeric_limits<float>::infinity()), Error);
  CHECK(opt.options().lr == 1e-3f);
}

TEST_CASE("optim::AdamW matches the algorithm in double precision") {
  check_against_reference<optim::AdamW>({"default decay", 0.05f, {0.9f, 0.999f}, 1e-8f, 1e-2f, false, true, 0.5});
  check_against_reference<optim::AdamW>({"strong decay", 0.05f, {0.85f, 0.9f}, 1e-3f, 0.5f, false, true, 0.5});
  check_against_reference<optim::AdamW>({"amsgrad", 0.05f, {0.9f, 0.99f}, 1e-8f, 0.2f, true, true, 0.5});
}

TEST_CASE("optim::AdamW decays the weights, optim::Adam the gradient") {
  // With beta1 = 0 and a zero gradient the two forms part ways completely: Adam's L2 term becomes
  // the whole gradient and moves each weight by about lr, AdamW shrinks it by lr * weight_decay.
  Random rng(5);
  Fixture fa(rng), fw(rng);
  fw.p0 = fa.p0;
  fw.p1 = fa.p1;
  optim::Adam adam(fa.net, {.lr = 0.1f, .betas = {0.0f, 0.999f}, .weight_decay = 0.5f});
  optim::AdamW adamw(fw.net, {.lr = 0.1f, .betas = {0.0f, 0.999f}, .weight_decay = 0.5f});
  const std::vector<float> start = fa.p0;
  std::fill(fa.g0.begin(), fa.g0.end(), 0.0f);
  std::fill(fw.g0.begin(), fw.g0.end(), 0.0f);
  adam.step();
  adamw.step();
  for (std::size_t i = 0; i < start.size(); ++i) {
    CAPTURE(i);
    const double sign = start[i] > 0 ? 1 : -1;
    CHECK(fa.p0[i] == doctest::Approx(start[i] - 0.1 * sign).epsilon(1e-5));
    CHECK(fw.p0[i] == doctest::Approx(start[i] * (1 - 0.1 * 0.5)).epsilon(1e-6));
  }
}

TEST_CASE("optim::Adam and optim::AdamW refuse invalid hyper-parameters") {
  Random rng(9);
  Fixture f(rng);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto rejects = [&](optim::AdamOptions o, const std::string &what) {
    CAPTURE(what);
    std::string adam_message, adamw_message;
    try {
      optim::Adam opt(f.net, o);
    } catch (const Error &e) {
      adam_message = e.what();
    }
    try {
      optim::AdamW opt(f.net, {o.lr, o.betas, o.eps, o.weight_decay, o.amsgrad});
    } catch (const Error &e) {
      adamw_message = e.what();
    }
    CHECK(adam_message.find("optim::Adam:") != std::string::npos);
    CHECK(adam_message.find(what) != std::string::npos);
    CHECK(adamw_message.find("optim::AdamW:") != std::string::npos);
    CHECK(adamw_message.find(what) != std::string::npos);
  };
  rejects({.lr = -1e-3f}, "learning rate");
  rejects({.lr = nan}, "learning rate");
  rejects({.lr = std::numeric_limits<float>::infinity()}, "learning rate");
  rejects({.betas = {1.0f, 0.999f}}, "beta parameter at index 0");
  rejects({.betas = {-0.1f, 0.999f}}, "beta parameter at index 0");
  rejects({.betas = {nan, 0.999f}}, "beta parameter at index 0");
  rejects({.betas = {0.9f, 1.0f}}, "beta parameter at index 1");
  rejects({.betas = {0.9f, -1e-6f}}, "beta parameter at index 1");
  rejects({.eps = 0.0f}, "epsilon");
  rejects({.eps = -1e-8f}, "epsilon");
  rejects({.weight_decay = -0.01f}, "weight_decay");
  rejects({.weight_decay = nan}, "weight_decay");

  // The edges of the valid ranges are accepted.
  CHECK_NOTHROW(optim::Adam(f.net, {.lr = 0.0f, .betas = {0.0f, 0.0f}, .eps = 1e-30f, .weight_decay = 0.0f}));
  CHECK_NOTHROW(optim::AdamW(f.net, {.lr = 0.0f, .betas = {0.0f, 0.0f}, .eps = 1e-30f, .weight_decay = 0.0f}));
}

TEST_CASE("a rejected optim::Adam changes neither the network nor another optimizer's state") {
  using Net = Pipeline<Stage<Device<0>, Linear<6, 5>, Tanh>, Stage<Device<1>, Linear<5, 3>>>;
  Context ctx({.devices = "host"});
  Net net(ctx, 11), twin(ctx, 11);
  optim::Adam opt(net, {.lr = 0.01f, .amsgrad = true});
  optim::Adam twin_opt(twin, {.lr = 0.01f, .amsgrad = true});
  loss::MSE mse;
  Random rng(3);
  std::vector<float> x(8 * 6), y(8 * 3);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  for (auto &v : y) v = static_cast<float>(rng.uniform(-1, 1));
  net.train_step(x, y, mse, opt);
  twin.train_step(x, y, mse, twin_opt);

  std::vector<std::vector<float>> before;
  for (const auto &p : net.parameters()) before.push_back(p.to_host());
  CHECK_THROWS_AS(optim::Adam(net, {.lr = 0.01f, .eps = 0.0f}), Error);
  CHECK_THROWS_AS(optim::AdamW(net, {.betas = {0.9f, 1.5f}}), Error);
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(net.parameters()[i].to_host() == before[i]);

  // The first optimizer's moments are intact: its next step equals the twin's, bit for bit.
  net.train_step(x, y, mse, opt);
  twin.train_step(x, y, mse, twin_opt);
  for (std::size_t i = 0; i < before.size(); ++i) {
    CHECK(net.parameters()[i].to_host() != before[i]);
    CHECK(net.parameters()[i].to_host() == twin.parameters()[i].to_host());
  }
}

TEST_CASE("a step skipped on the device leaves Adam's count, on the device and on the host, as it was") {
  // Adam keeps its step number in device memory (so that graphs can replay it): a step that finds
  // a bad label on the device must not advance it, or every later bias correction would be off.
  using Net = Pipeline<Stage<Device<0>, Linear<6, 5>, Tanh>, Stage<Device<1>, Linear<5, 3>>>;
  Context ctx({.devices = "host"});
  Net net(ctx, 12), twin(ctx, 12);
  optim::Adam opt(net, {.lr = 0.05f, .betas = {0.8f, 0.9f}}), twin_opt(twin, {.lr = 0.05f, .betas = {0.8f, 0.9f}});
  CHECK(opt.replay_id() == opt.replay_id());
  CHECK(opt.replay_id() != twin_opt.replay_id());
  loss::CrossEntropy ce;
  Random rng(4);
  std::vector<float> x(8 * 6);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  std::vector<std::int32_t> y = {0, 1, 2, 1, 0, 2, 2, 1}, bad = y;
  bad[5] = 3;
  const Tensor<float> tx(ctx, 0, 8, 6, x);
  const Tensor<std::int32_t> ty(ctx, 1, 8, 1, y), tbad(ctx, 1, 8, 1, bad);
  net.train_step(tx, ty, ce, opt);
  CHECK_THROWS_AS(net.train_step(tx, tbad, ce, opt), Error); // checked on the device, update skipped
  CHECK(opt.steps(0) == 1);
  net.train_step(tx, ty, ce, opt);
  twin.train_step(tx, ty, ce, twin_opt);
  twin.train_step(tx, ty, ce, twin_opt);
  for (std::size_t i = 0; i < net.parameters().size(); ++i)
    CHECK(net.parameters()[i].to_host() == twin.parameters()[i].to_host());
}
