// SPDX-License-Identifier: Apache-2.0
// testing::check_gradients<L>: a layer's backward against central finite differences, in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "tandem/backend/host/executor.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/layer.hpp"
#include "tandem/random.hpp"

namespace tandem::testing {

struct GradientCheckOptions {
  std::size_t batch = 3;
  // The width of a layer that keeps any width (in_features == out_features == 0); a layer with
  // fixed widths is checked at its own.
  std::size_t width = 5;
  std::uint64_t seed = 1;
  // Inputs are drawn uniformly from [-input_range, input_range].
  double input_range = 2;
  // Each parameter starts at the layer's own init() plus a uniform draw from [-jitter, jitter], so
  // that a layer initialised to constants (ones, zeros) is also checked away from that point.
  double parameter_jitter = 0.5;
  // Central differences (f(v + h) - f(v - h)) / 2h with h = step * max(1, |v|): in double the
  // truncation error (h^2) and the rounding error (1e-16 / h) are both near 1e-10.
  double step = 1e-6;
  // A tensor passes when max |analytic - numeric| <= tolerance * max(1, max |numeric|): relative
  // for gradients larger than 1, absolute below, where finite differences have no relative accuracy.
  double tolerance = 1e-6;
};

// How one gradient tensor ("input", or a parameter by its ParameterSpec name) compares.
struct TensorGradientError {
  std::string name;
  std::size_t size = 0;
  double max_abs_error = 0; // max_i |analytic_i - numeric_i|
  double max_rel_error = 0; // max_abs_error / max_i |numeric_i|: norm-wise, per tensor
  double scale = 0;         // max_i |numeric_i|
  std::size_t worst_index = 0;
  bool passed = true;
};

struct GradientCheckReport {
  std::size_t batch = 0, in = 0, out = 0;
  double tolerance = 0;
  std::vector<TensorGradientError> tensors{}; // the input first, then parameters in the layer's order
  // Broken protocol, found besides the numbers (an output left unwritten, gradients overwritten
  // instead of accumulated, ...). Any entry fails the check.
  std::vector<std::string> problems{};
  double max_abs_error = 0, max_rel_error = 0;

  bool passed() const {
    if (!problems.empty()) return false;
    return std::all_of(tensors.begin(), tensors.end(), [](const auto &t) { return t.passed; });
  }
  explicit operator bool() const { return passed(); }

  // Several lines: the verdict, then one line per tensor and per problem.
  std::string summary() const {
    std::ostringstream os;
    os.precision(3);
    os << "gradient check (batch " << batch << ", " << in << " -> " << out
       << " features): " << (passed() ? "passed" : "FAILED") << ", max abs error " << max_abs_error
       << ", max rel error " << max_rel_error << " (tolerance " << tolerance << ")\n";
    for (const auto &t : tensors)
      os << "  " << t.name << " (" << t.size << " values): max abs error " << t.max_abs_error << " at ["
         << t.worst_index << "], rel " << t.max_rel_error << ", gradient scale " << t.scale
         << (t.passed ? "" : "  <- exceeds tolerance") << '\n';
    for (const auto &p : problems) os << "  problem: " << p << '\n';
    return os.str();
  }
};

namespace detail {

// Runs f on the executor's worker, where layers issue their operations, and waits for it.
template <class F> void run_on(backend::host::Executor &ex, F &&f) {
  ex.submit([&f] { f(); });
  ex.synchronize();
}

inline TensorGradientError compare(std::string name, std::span<const double> analytic, std::span<const double> numeric,
                                   double tolerance) {
  TensorGradientError t{.name = std::move(name), .size = analytic.size()};
  for (std::size_t i = 0; i < analytic.size(); ++i) {
    const double e = std::abs(analytic[i] - numeric[i]);
    if (!(e <= t.max_abs_error)) { // NaN counts as the worst
      t.max_abs_error = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
      t.worst_index = i;
    }
    t.scale = std::max(t.scale, std::abs(numeric[i]));
  }
  t.max_rel_error = t.max_abs_error / std::max(t.scale, std::numeric_limits<double>::min());
  t.passed = t.max_abs_error <= tolerance * std::max(1.0, t.scale);
  return t;
}

} // namespace detail

// Checks layer L's backward (the input gradient and every parameter gradient) against central
// finite differences of its forward, all in double precision on a host executor. The scalar
// differentiated is sum(w * y) for a fixed random w, so dy = w reaches backward unchanged.
// Also checks the protocol: forward writes all of y; backward writes all of dx (not adds to it),
// adds to the parameter gradients (micro-batches sum up), and accepts dx == nullptr.
template <Layer L> GradientCheckReport check_gradients(const GradientCheckOptions &options = {}) {
  // Preconditions.
  if (options.batch == 0) tandem::detail::fail("check_gradients: batch must be positive");
  if (!(options.step > 0)) tandem::detail::fail("check_gradients: step must be positive, got ", options.step);
  const std::size_t in = L::in_features ? L::in_features : options.width;
  const std::size_t out = L::out_features ? L::out_features : in;
  if (in == 0) tandem::detail::fail("check_gradients: width must be positive for a layer that keeps any width");
  // A layer that reads whole sequences gets `batch` sequences; one that reads token ids gets ids,
  // whose "gradient" is not checked.
  constexpr std::size_t per_sample = sequence_length<L>() ? sequence_length<L>() : 1;
  constexpr bool tokens = std::is_same_v<layer_input_t<L, double>, std::int32_t>;
  const std::size_t batch = options.batch * per_sample, n_in = batch * in, n_out = batch * out;
  constexpr std::size_t n_params = parameter_count_v<L>;
  const double nan = std::numeric_limits<double>::quiet_NaN();

  GradientCheckReport report{.batch = batch, .in = in, .out = out, .tolerance = options.tolerance};
  Random rng(options.seed);
  // init() is only promised for float (the Layer concept), so initialise in float and widen.
  std::vector<float> init(n_params);
  L::init(std::span<float>(init), in, rng);
  std::vector<double> params(n_params), x(n_in), w(n_out);
  for (std::size_t i = 0; i < n_params; ++i)
    params[i] = double(init[i]) + rng.uniform(-options.parameter_jitter, options.parameter_jitter);
  if constexpr (tokens) { // ids in [0, vocabulary), in the input's buffer as the pipeline keeps them
    auto *ids = reinterpret_cast<std::int32_t *>(x.data());
    for (std::size_t i = 0; i < batch; ++i) ids[i] = static_cast<std::int32_t>(rng.next() % L::vocabulary);
  } else {
    for (auto &v : x) v = rng.uniform(-options.input_range, options.input_range);
  }
  for (auto &v : w) v = rng.uniform(-1, 1);
  // The layer's memory, and a fixed key (a training call's: Dropout drops, the same elements each time).
  const std::size_t n_saved = batch * saved_values<L>(in), n_scratch = batch * scratch_values<L>(in);
  std::vector<double> saved(n_saved, nan), saved_probe(n_saved, nan), scratch(n_scratch, nan);
  const std::uint64_t key = Random(options.seed).next() | 1;

  backend::host::Executor ex(0);
  std::vector<double> y(n_out), dx(n_in), grads(n_params), grads_again(n_params), grads_no_dx(n_params);
  std::vector<double> split_dx(n_in), split_grads(n_params);
  std::vector<double> numeric_dx(n_in), numeric_grads(n_params);
  detail::run_on(ex, [&] {
    auto forward = [&](std::span<double> into, std::vector<double> &memory) {
      L::forward(ex, LayerForward<double>{.rows = batch,
                                          .in = in,
                                          .out = out,
                                          .params = params.data(),
                                          .x = x.data(),
                                          .y = into.data(),
                                          .saved = memory.empty() ? nullptr : memory.data(),
                                          .scratch = scratch.empty() ? nullptr : scratch.data(),
                                          .key = key});
    };
    auto objective = [&] {
      std::vector<double> yy(n_out);
      forward(yy, saved_probe);
      double s = 0;
      for (std::size_t i = 0; i < n_out; ++i) s += w[i] * yy[i];
      return s;
    };
    auto call = [&](double *into_dx, std::vector<double> &into_grads) {
      return LayerBackward<double>{.rows = batch,
                                   .in = in,
                                   .out = out,
                                   .params = params.data(),
                                   .grads = into_grads.data(),
                                   .x = x.data(),
                                   .y = y.data(),
                                   .dy = w.data(),
                                   .dx = into_dx,
                                   .saved = saved.empty() ? nullptr : saved.data(),
                                   .scratch = scratch.empty() ? nullptr : scratch.data(),
                                   .key = key};
    };
    auto backward = [&](double *into_dx, std::vector<double> &into_grads) {
      L::backward(ex, call(into_dx, into_grads));
    };
    auto central = [&](double &v) {
      const double kept = v, h = options.step * std::max(1.0, std::abs(v));
      v = kept + h;
      const double up = objective();
      v = kept - h;
      const double down = objective();
      v = kept;
      return (up - down) / (2 * h);
    };

    // NaN in every output: whatever the layer leaves unwritten (or adds to) shows.
    std::fill(y.begin(), y.end(), nan);
    forward(y, saved);
    std::fill(dx.begin(), dx.end(), nan);
    backward(tokens ? nullptr : dx.data(), grads);
    backward(nullptr, grads_again); // from zero, then again on top: must add up to twice
    backward(nullptr, grads_again);
    backward(nullptr, grads_no_dx);
    if constexpr (SplitBackward<L>) { // the two tasks together do what backward does
      L::backward_input(ex, call(tokens ? nullptr : split_dx.data(), split_grads));
      L::backward_weights(ex, call(nullptr, split_grads));
    }
    if constexpr (!tokens)
      for (std::size_t i = 0; i < n_in; ++i) numeric_dx[i] = central(x[i]);
    for (std::size_t i = 0; i < n_params; ++i) numeric_grads[i] = central(params[i]);
  });

  auto first_nan = [](const std::vector<double> &v) {
    return std::find_if(v.begin(), v.end(), [](double d) { return std::isnan(d); }) - v.begin();
  };
  auto note = [&](auto... parts) {
    std::ostringstream os;
    (os << ... << parts);
    report.problems.push_back(os.str());
  };
  if (const auto i = first_nan(y); i < std::ptrdiff_t(n_out))
    note("forward left y[", i, "] unwritten or NaN (it must write every output, not add to it)");
  if (const auto i = first_nan(dx); !tokens && i < std::ptrdiff_t(n_in))
    note("backward left dx[", i, "] unwritten or NaN (it must write the input gradient, not add to it)");
  if constexpr (SplitBackward<L>) {
    auto same = [](const std::vector<double> &a, const std::vector<double> &b) {
      for (std::size_t i = 0; i < a.size(); ++i)
        if (std::abs(a[i] - b[i]) > 1e-12 * std::max(1.0, std::abs(a[i]))) return false;
      return true;
    };
    if ((!tokens && !same(split_dx, dx)) || !same(split_grads, grads))
      note("backward_input and backward_weights together differ from backward (SplitBackward)");
  }
  for (std::size_t i = 0; i < n_params; ++i) {
    if (std::abs(grads_again[i] - 2 * grads[i]) > 1e-12 * std::max(1.0, std::abs(grads[i]))) {
      note("backward overwrote parameter gradient [", i, "] instead of adding to it (two calls gave ", grads_again[i],
           ", once gave ", grads[i], "); micro-batches must sum up");
      break;
    }
  }
  for (std::size_t i = 0; i < n_params; ++i) {
    if (std::abs(grads_no_dx[i] - grads[i]) > 1e-12 * std::max(1.0, std::abs(grads[i]))) {
      note("parameter gradient [", i, "] changes when dx is null (", grads_no_dx[i], " vs ", grads[i],
           "); the first layer of a network gets dx == nullptr");
      break;
    }
  }

  if (!tokens) report.tensors.push_back(detail::compare("input", dx, numeric_dx, options.tolerance));
  std::size_t at = 0;
  for (const ParameterSpec &p : L::parameters) {
    report.tensors.push_back(detail::compare(std::string(p.name), std::span<const double>(grads).subspan(at, p.size()),
                                             std::span<const double>(numeric_grads).subspan(at, p.size()),
                                             options.tolerance));
    at += p.size();
  }
  for (const auto &t : report.tensors) {
    report.max_abs_error = std::max(report.max_abs_error, t.max_abs_error);
    report.max_rel_error = std::max(report.max_rel_error, t.max_rel_error);
  }
  return report;
}

} // namespace tandem::testing
