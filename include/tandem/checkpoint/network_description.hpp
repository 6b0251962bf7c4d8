// SPDX-License-Identifier: Apache-2.0
// checkpoint::signature and the checks a file's tensors go through: what a network is, as a file records it, and the
// problems a file that does not fit it has.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tandem/backend/transport.hpp"
#include "tandem/checkpoint/safetensors.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/optim/adam.hpp"
#include "tandem/optim/adamw.hpp"
#include "tandem/optim/lr_scheduler.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/parameter.hpp"
#include "tandem/version.hpp"

namespace tandem::checkpoint {

inline constexpr const char *model_file = "model.safetensors";
inline constexpr const char *optimizer_file = "optimizer.safetensors";
inline constexpr const char *index_file = "model.safetensors.index.json";
// The most steps an optimizer's count may hold in a file: counts beyond 2^53 are not exact in the
// doubles that Adam's bias corrections compute with, and near 2^63 the next step overflows.
inline constexpr std::uint64_t max_steps = std::uint64_t{1} << 53;

// ---- the network's description ----

template <class L> struct IsLinear : std::false_type {};
template <std::size_t I, std::size_t O> struct IsLinear<Linear<I, O>> : std::true_type {};

template <class L> std::string layer_name() {
  if constexpr (IsLinear<L>::value) {
    return "Linear<" + std::to_string(L::in_features) + ", " + std::to_string(L::out_features) + ">";
  } else if constexpr (requires { L::activation; }) {
    constexpr const char *names[] = {"Identity", "ReLU", "Sigmoid", "Tanh", "GELU", "GELUTanh"};
    return names[static_cast<int>(L::activation)];
  } else {
    std::size_t values = 0;
    for (const ParameterSpec &p : L::parameters) values += p.size();
    return "Layer(" + std::to_string(L::in_features) + " -> " + std::to_string(L::out_features) + ", " +
           std::to_string(values) + " parameters)";
  }
}

// One pack expansion per function template: nvcc's host compilers fail on a fold over one pack
// inside a lambda inside a fold over another (g++ 12: an internal error; clang 14: "different
// length").
template <class St, std::size_t... J> std::string layer_names(std::index_sequence<J...>) {
  std::string s;
  ((s += ", " + layer_name<typename St::template layer<J>>()), ...);
  return s;
}
template <class Net, std::size_t I> std::string stage_signature() {
  using St = typename Net::template stage<I>;
  constexpr std::size_t out =
      I + 1 < Net::num_stages ? Net::template stage_in_features<(I + 1) % Net::num_stages> : Net::out_features;
  return std::string(I ? " | " : "") + "Stage<Device<" + std::to_string(St::device_index) + ">" +
         layer_names<St>(std::make_index_sequence<St::num_layers>{}) + "> " +
         std::to_string(Net::template stage_in_features<I>) + " -> " + std::to_string(out);
}
template <class Net, std::size_t... I> std::string stage_signatures(std::index_sequence<I...>) {
  return (std::string() + ... + stage_signature<Net, I>());
}

// The stages, their layers and widths, as the type spells them: written into every file, so that
// a file that does not fit a network can say which network it came from.
template <class Net> std::string signature() {
  return stage_signatures<Net>(std::make_index_sequence<Net::num_stages>{}) + "; " +
         std::string(dtype_of<typename Net::value_type>());
}

template <class Net, std::size_t... I> constexpr auto stage_parameter_counts(std::index_sequence<I...>) {
  return std::array<std::size_t, Net::num_stages>{Net::template stage<I>::parameter_count...};
}
// Each stage's parameter count, known on every rank (a group of another rank's stage is empty).
template <class Net>
inline constexpr auto stage_sizes = stage_parameter_counts<Net>(std::make_index_sequence<Net::num_stages>{});

// Where each parameter lies: its stage, and its offset in that stage's flat group. Parameters come
// in stage order, each stage's filling its group, so their sizes alone say it.
struct Place {
  std::size_t stage, offset;
};
template <class Net> std::vector<Place> places(const Net &net) {
  std::vector<Place> out;
  std::size_t stage = 0, offset = 0;
  for (const auto &p : net.parameters()) {
    while (stage < Net::num_stages && offset == stage_sizes<Net>[stage]) {
      ++stage;
      offset = 0;
    }
    if (stage == Net::num_stages || offset + p.size() > stage_sizes<Net>[stage])
      tandem::detail::fail("checkpoint: parameter '", p.name(), "' lies in no stage's group");
    out.push_back({stage, offset});
    offset += p.size();
  }
  return out;
}

// A parameter's shape in a file: (out, in) for a matrix, (out) for a column (a bias, a 1-D
// weight), as PyTorch.
template <class T> std::vector<std::uint64_t> shape_of(const Parameter<T> &p) {
  if (p.cols() == 1) return {p.rows()};
  return {p.rows(), p.cols()};
}

inline std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v)); // 9 digits: every float round-trips
  return buf;
}
inline std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v); // 17 digits: every double round-trips
  return buf;
}

// A file's problems, listed (at most a few), then thrown as one Error.
class Problems {
public:
  template <class... Parts> void add(const Parts &...parts) {
    ++count_;
    if (count_ > shown) return;
    std::string s;
    ((s += to_text(parts)), ...);
    text_ += (text_.empty() ? "" : "; ") + s;
  }
  bool empty() const { return count_ == 0; }
  // Throws if anything was added; `hint` closes the message.
  void raise(const std::string &file, const char *what, const std::string &hint = "") const {
    if (!count_) return;
    std::string more = count_ > shown ? "; and " + std::to_string(count_ - shown) + " more" : "";
    tandem::detail::fail("'", file, "' ", what, ": ", text_, more, hint.empty() ? "" : ". ", hint);
  }

private:
  static constexpr std::size_t shown = 6;
  static std::string to_text(const std::string &s) { return s; }
  static std::string to_text(const char *s) { return s; }
  static std::string to_text(std::string_view s) { return std::string(s); }
  template <class N>
  requires std::is_arithmetic_v<N>
  static std::string to_text(N n) { return std::to_string(n); }
  std::size_t count_ = 0;
  std::string text_;
};

// What a file's tensors must be: every name, with its shape and dtype.
struct Expected {
  std::string name;
  std::vector<std::uint64_t> shape;
  std::string_view dtype;
};

// Checks that the file holds exactly the tensors expected, no more.
inline void check_tensors(const SafetensorsFile &f, const std::vector<Expected> &expected, const char *what,
                          const std::string &hint) {
  Problems problems;
  std::set<std::string> names;
  for (const auto &e : expected) {
    names.insert(e.name);
    const TensorEntry *t = f.find(e.name);
    if (!t) {
      problems.add("no tensor '", e.name, "'");
      continue;
    }
    if (t->dtype != e.dtype) problems.add("'", e.name, "' is ", t->dtype, ", expected ", e.dtype);
    if (t->shape != e.shape)
      problems.add("'", e.name, "' has shape ", detail::shape_text(t->shape), ", expected ",
                   detail::shape_text(e.shape));
  }
  for (const auto &t : f.tensors())
    if (!names.count(t.name)) problems.add("unexpected tensor '", t.name, "'");
  problems.raise(f.file(), what, hint);
}

inline std::string network_hint(const std::optional<std::string> &saved, const std::string &mine) {
  if (saved && *saved != mine) return "It was saved from the network " + *saved + "; this network is " + mine;
  return "This network is " + mine;
}
template <class Net> std::string network_hint(const SafetensorsFile &f) {
  return network_hint(f.meta("tandem.network"), signature<Net>());
}

} // namespace tandem::checkpoint
