// SPDX-License-Identifier: Apache-2.0
// Checkpoints in the safetensors format: a network's weights (save / load), and with its optimizer's
// state (and its LR schedule's) a resumable training run (save_checkpoint / load_checkpoint). Across
// processes each rank writes its own stages' shards and rank 0 an index; a checkpoint loads on any
// number of ranks. Needs nlohmann-json (CMake target tandem::checkpoint), so <tandem/tandem.hpp>
// does not include it.
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

namespace tandem {

namespace checkpoint {

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

// ---- the ranks of a network across processes ----

// The ranks of the network's program, for one call (save, load, ...) that every rank makes: a
// channel of its own over the context's transport, opened by every rank together. Inactive in a
// single process, where each call below is a plain call. A network whose parameters all live here
// is taken for a single process's, without asking its Context (which may be gone by now, as a
// network may outlive it); across processes some parameter lives on another rank.
class Ranks {
public:
  template <class Net> Ranks(const Net &net, const char *call) : call_(call) {
    const auto params = net.parameters();
    if (std::all_of(params.begin(), params.end(), [](const auto &p) { return p.is_local(); })) return;
    backend::Transport *t = net.context().transport();
    if (!t || t->size() < 2) return;
    rank_ = t->rank();
    size_ = t->size();
    try {
      channel_ = t->open_channel(net.context().options().peer_timeout);
    } catch (const Error &e) {
      tandem::detail::fail(call, " on rank ", rank_, ": the ranks did not all call it (", e.what(), ")");
    }
    channel_->begin_step(call);
  }

  bool active() const { return channel_ != nullptr; }
  int rank() const { return rank_; }
  int size() const { return size_; }

  // Runs `f` on this rank, then throws on every rank if it threw on any (this rank's own Error
  // first): a check that fails anywhere stops every rank before anything is written.
  template <class F> void all(F &&f) {
    std::exception_ptr error;
    try {
      f();
    } catch (...) {
      if (!active()) throw;
      error = std::current_exception();
    }
    agree(error);
  }
  void agree(const std::exception_ptr &error) {
    if (!active()) {
      if (error) std::rethrow_exception(error);
      return;
    }
    struct Record {
      std::int32_t failed = 0;
      char text[508] = {};
    } mine;
    if (error) {
      mine.failed = 1;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception &e) {
        std::strncpy(mine.text, e.what(), sizeof mine.text - 1);
      } catch (...) {
        std::strncpy(mine.text, "an exception that is not a std::exception", sizeof mine.text - 1);
      }
    }
    const auto bytes = channel_->all_gather(&mine, sizeof mine, call_);
    std::vector<Record> all(static_cast<std::size_t>(size_));
    std::memcpy(all.data(), bytes.data(), bytes.size());
    if (error) std::rethrow_exception(error);
    for (int r = 0; r < size_; ++r)
      if (all[static_cast<std::size_t>(r)].failed)
        tandem::detail::fail(call_, ": rank ", r,
                             " failed, so no rank changed anything: ", all[static_cast<std::size_t>(r)].text);
  }

  // Rank `root`'s bytes, on every rank.
  std::vector<std::byte> broadcast(std::vector<std::byte> bytes, int root) {
    if (!active()) return bytes;
    std::uint64_t n = bytes.size();
    channel_->broadcast(&n, sizeof n, root, call_);
    bytes.resize(static_cast<std::size_t>(n));
    if (n) channel_->broadcast(bytes.data(), bytes.size(), root, call_);
    return bytes;
  }
  std::string broadcast(const std::string &text, int root) {
    const auto *p = reinterpret_cast<const std::byte *>(text.data());
    const auto b = broadcast(std::vector<std::byte>(p, p + text.size()), root);
    return std::string(reinterpret_cast<const char *>(b.data()), b.size());
  }
  // Every rank's `mine`, in rank order; each rank passes as many.
  std::vector<std::vector<std::uint64_t>> all_gather(const std::vector<std::uint64_t> &mine) {
    if (!active()) return {mine};
    const auto bytes = channel_->all_gather(mine.data(), mine.size() * sizeof(std::uint64_t), call_);
    std::vector<std::vector<std::uint64_t>> all(static_cast<std::size_t>(size_),
                                                std::vector<std::uint64_t>(mine.size()));
    for (std::size_t r = 0; r < all.size(); ++r)
      std::memcpy(all[r].data(), bytes.data() + r * mine.size() * sizeof(std::uint64_t),
                  mine.size() * sizeof(std::uint64_t));
    return all;
  }

private:
  const char *call_;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<backend::Channel> channel_;
};

// A name that tells one save from every other: each file of a checkpoint carries it, and a load
// refuses files that carry different ones (a save that stopped halfway).
inline std::string new_save_id() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

// ---- weights ----

template <class Net> std::map<std::string, std::string> common_metadata(const char *format) {
  return {{"format", "pt"},
          {"tandem.format", format},
          {"tandem.version", std::string(tandem::version)},
          {"tandem.network", signature<Net>()}};
}

template <class Net> std::vector<Expected> expected_model(const Net &net) {
  std::vector<Expected> e;
  for (const auto &p : net.parameters()) e.push_back({p.name(), shape_of(p), dtype_of<typename Net::value_type>()});
  return e;
}

template <class Net> void check_model(const Net &net, const SafetensorsFile &f) {
  if (const auto kind = f.meta("tandem.format"); kind && *kind != "model")
    tandem::detail::fail("'", f.file(), "' holds tandem's ", *kind, " state, not a network's weights");
  check_tensors(f, expected_model(net), "does not fit this network", network_hint<Net>(f));
}

// The files a load reads from, checked, with the file that holds each tensor.
struct Sources {
  std::map<std::string, SafetensorsFile> files;
  std::map<std::string, std::string> file_of; // tensor name -> key of `files`
  const SafetensorsFile &at(const std::string &tensor) const { return files.at(file_of.at(tensor)); }
};

// Writes checked weights into this rank's parameters.
template <class Net> void write_model(const Net &net, const Sources &sources) {
  using T = typename Net::value_type;
  std::vector<T> values;
  for (const auto &p : net.parameters()) {
    if (!p.is_local()) continue;
    const SafetensorsFile &f = sources.at(p.name());
    const auto bytes = f.data(*f.find(p.name()));
    values.resize(p.size());
    std::memcpy(values.data(), bytes.data(), bytes.size());
    p.copy_from(values);
  }
}

// Every local parameter's values (its to_host: steps in flight complete first), with views for the
// writer; across processes (`everyone`), every parameter's, each sent by the rank that holds it.
template <class T> struct Gathered {
  std::vector<std::vector<T>> values;
  std::vector<TensorView> views;
  void add(std::string name, std::vector<std::uint64_t> shape, std::vector<T> v) {
    values.push_back(std::move(v));
    const auto &b = values.back();
    views.push_back({std::move(name), std::string(dtype_of<T>()), std::move(shape),
                     std::as_bytes(std::span<const T>(b.data(), b.size()))});
  }
};

template <class Net>
Gathered<typename Net::value_type> gather_model(const Net &net, Ranks *everyone = nullptr,
                                                std::size_t only_stage = SIZE_MAX) {
  using T = typename Net::value_type;
  Gathered<T> g;
  g.values.reserve(net.parameters().size()); // the views point into these vectors
  const auto where = places(net);
  for (std::size_t k = 0; k < net.parameters().size(); ++k) {
    const auto &p = net.parameters()[k];
    if (only_stage != SIZE_MAX && where[k].stage != only_stage) continue;
    if (everyone && everyone->active()) {
      std::vector<std::byte> bytes;
      if (p.is_local()) {
        const auto v = p.to_host();
        const auto b = std::as_bytes(std::span<const T>(v));
        bytes.assign(b.begin(), b.end());
      }
      bytes = everyone->broadcast(std::move(bytes), p.rank());
      std::vector<T> v(p.size());
      if (bytes.size() != v.size() * sizeof(T))
        tandem::detail::fail("save: rank ", p.rank(), " sent ", bytes.size(), " bytes for '", p.name(), "'");
      std::memcpy(v.data(), bytes.data(), bytes.size());
      g.add(p.name(), shape_of(p), std::move(v));
    } else if (p.is_local()) {
      g.add(p.name(), shape_of(p), p.to_host());
    }
  }
  return g;
}

// ---- the weights' index (Hugging Face's sharded layout) ----

// The shard of each stage ("" for a stage without parameters), as Hugging Face numbers them;
// `kind` is "model" or "optimizer". The same names on every rank and for any rank count.
template <class Net> std::vector<std::string> shard_names(const char *kind) {
  std::vector<std::string> names;
  std::size_t count = 0;
  for (const std::size_t n : stage_sizes<Net>) count += n != 0;
  std::size_t k = 0;
  for (const std::size_t n : stage_sizes<Net>) {
    char name[96] = "";
    if (n) std::snprintf(name, sizeof name, "%s-%05zu-of-%05zu.safetensors", kind, ++k, count);
    names.emplace_back(name);
  }
  return names;
}

// An index file, read and checked: its maps from tensor name to shard file, and its metadata.
struct Index {
  std::string file;
  std::map<std::string, std::string> weight_map, optimizer_map, metadata;
  bool has_optimizer = false;
};

inline Index read_index(const std::filesystem::path &path) {
  Index index;
  index.file = path.string();
  const auto bytes = read_file(path, max_header_bytes);
  const auto bad = [&](const auto &...parts) {
    tandem::detail::fail("'", index.file, "' is not a valid index: ", parts...);
  };
  const nlohmann::json j = parse_json(std::string_view(reinterpret_cast<const char *>(bytes.data()), bytes.size()),
                                      [&](const auto &...parts) { bad("it ", parts...); });
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) bad("no \"weight_map\" object");
  const auto read_map = [&](const nlohmann::json &map, std::map<std::string, std::string> &out) {
    for (auto it = map.begin(); it != map.end(); ++it) {
      // A shard lies beside the index: a path elsewhere is refused.
      const std::string shard = it.value().is_string() ? it.value().get<std::string>() : "";
      if (shard.empty() || shard.find_first_of("/\\") != std::string::npos || shard == "." || shard == "..")
        bad("'", it.key(), "' maps to ", brief(it.value()), ", not a file name beside the index");
      out[it.key()] = shard;
    }
  };
  read_map(j["weight_map"], index.weight_map);
  if (j.contains("optimizer_map")) {
    if (!j["optimizer_map"].is_object()) bad("\"optimizer_map\" is not an object");
    read_map(j["optimizer_map"], index.optimizer_map);
    index.has_optimizer = true;
  }
  if (j.contains("metadata")) {
    if (!j["metadata"].is_object()) bad("\"metadata\" is not an object");
    for (const auto &[key, value] : j["metadata"].items())
      if (value.is_string()) index.metadata[key] = value.get<std::string>();
  }
  return index;
}

// Checks that `map` names exactly the tensors expected, opens each shard it names that this rank
// needs (`wanted`), checks the shard's tensors against the map and its save id against the index's,
// and reads its data. `network`: this network's signature, for messages.
inline void read_shards(const Index &index, const std::filesystem::path &dir,
                        const std::map<std::string, std::string> &map, const std::vector<Expected> &expected,
                        const std::set<std::string> &wanted, const char *what, const std::string &network,
                        Sources &out) {
  Problems problems;
  std::set<std::string> names;
  for (const auto &e : expected) {
    names.insert(e.name);
    if (!map.count(e.name)) problems.add("no entry for '", e.name, "'");
  }
  for (const auto &[name, shard] : map)
    if (!names.count(name)) problems.add("unexpected entry '", name, "'");
  problems.raise(index.file, what, "This network is " + network);

  std::map<std::string, std::vector<Expected>> by_shard;
  for (const auto &e : expected) by_shard[map.at(e.name)].push_back(e);
  for (const auto &[shard, tensors] : by_shard) {
    if (std::none_of(tensors.begin(), tensors.end(), [&](const Expected &e) { return wanted.count(e.name); })) continue;
    auto f = SafetensorsFile::open(dir / shard);
    check_tensors(f, tensors, what, network_hint(f.meta("tandem.network"), network));
    const auto id = index.metadata.find("tandem.checkpoint");
    if (id != index.metadata.end() && f.meta("tandem.checkpoint") != id->second)
      tandem::detail::fail("'", f.file(), "' belongs to another save than '", index.file, "' (save id ",
                           f.meta("tandem.checkpoint").value_or("(none)"), ", the index's ", id->second,
                           "): a save stopped before it wrote every file; save again, or load an older checkpoint");
    f.read_data();
    for (const auto &e : tensors) out.file_of[e.name] = shard;
    out.files.emplace(shard, std::move(f));
  }
}

template <class Net> std::set<std::string> local_parameter_names(const Net &net) {
  std::set<std::string> names;
  for (const auto &p : net.parameters())
    if (p.is_local()) names.insert(p.name());
  return names;
}

// The weights of a single file or of an index, read and checked for this rank.
template <class Net> Sources read_model(const Net &net, const std::filesystem::path &path) {
  Sources s;
  if (path.filename().string().ends_with(".index.json")) {
    const Index index = read_index(path);
    read_shards(index, path.parent_path(), index.weight_map, expected_model(net), local_parameter_names(net),
                "does not fit this network", signature<Net>(), s);
    return s;
  }
  auto f = SafetensorsFile::open(path);
  check_model(net, f);
  f.read_data();
  for (const auto &p : net.parameters()) s.file_of[p.name()] = path.filename().string();
  s.files.emplace(path.filename().string(), std::move(f));
  return s;
}

// ---- optimizer state ----

inline const char *optimizer_name(const optim::SGD &) { return "SGD"; }
inline const char *optimizer_name(const optim::Adam &) { return "Adam"; }
inline const char *optimizer_name(const optim::AdamW &) { return "AdamW"; }

// The state tensors each parameter has, with PyTorch's names, and whether one exists only after
// the group's first step (SGD's momentum buffer is seeded by it; Adam's moments start at zero).
// From the options alone: the same on every rank, where the buffers exist on one.
struct StateName {
  const char *name;
  bool after_first_step;
};
inline std::vector<StateName> state_names(const optim::SGD &o) {
  if (o.options().momentum != 0) return {{"momentum_buffer", true}};
  return {};
}
template <class O> std::vector<StateName> adam_state_names(const O &o) {
  std::vector<StateName> names{{"exp_avg", false}, {"exp_avg_sq", false}};
  if (o.options().amsgrad) names.push_back({"max_exp_avg_sq", false});
  return names;
}
inline std::vector<StateName> state_names(const optim::Adam &o) { return adam_state_names(o); }
inline std::vector<StateName> state_names(const optim::AdamW &o) { return adam_state_names(o); }

// Hyperparameters with torch.optim's names; "lr" first (a schedule changes it, load restores it).
inline std::vector<std::pair<std::string, std::string>> hyperparameters(const optim::SGDOptions &o) {
  return {{"lr", number(o.lr)},
          {"momentum", number(o.momentum)},
          {"dampening", number(o.dampening)},
          {"weight_decay", number(o.weight_decay)},
          {"nesterov", o.nesterov ? "true" : "false"}};
}
template <class O> std::vector<std::pair<std::string, std::string>> adam_hyperparameters(const O &o) {
  return {{"lr", number(o.lr)},
          {"betas", number(o.betas.first) + "," + number(o.betas.second)},
          {"eps", number(o.eps)},
          {"weight_decay", number(o.weight_decay)},
          {"amsgrad", o.amsgrad ? "true" : "false"}};
}
inline std::vector<std::pair<std::string, std::string>> hyperparameters(const optim::AdamOptions &o) {
  return adam_hyperparameters(o);
}
inline std::vector<std::pair<std::string, std::string>> hyperparameters(const optim::AdamWOptions &o) {
  return adam_hyperparameters(o);
}

template <class Opt>
concept CheckpointableOptimizer = requires(const Opt &o, Opt &m, std::size_t i) {
  optimizer_name(o);
  state_names(o);
  hyperparameters(o.options());
  { o.steps(i) } -> std::convertible_to<std::size_t>;
  m.restore_steps(i, i);
  m.set_lr(0.0f);
};

// One state tensor of one parameter: `state` its kind, `offset` the parameter's place in its
// stage's group.
struct StateSlice {
  std::string name;
  const char *state;
  std::size_t stage, offset, size;
  std::vector<std::uint64_t> shape;
  bool local;
};

// The state tensors that exist when stage s has taken `steps[s]` steps, named "<parameter>.<state>".
template <class Net, class Opt>
std::vector<StateSlice> state_slices(const Net &net, const Opt &opt, const std::vector<std::uint64_t> &steps) {
  std::vector<StateSlice> out;
  const auto where = places(net);
  const auto names = state_names(opt);
  for (std::size_t k = 0; k < net.parameters().size(); ++k) {
    const auto &p = net.parameters()[k];
    for (const auto &n : names) {
      if (n.after_first_step && steps[where[k].stage] == 0) continue;
      out.push_back(
          {p.name() + "." + n.name, n.name, where[k].stage, where[k].offset, p.size(), shape_of(p), p.is_local()});
    }
  }
  return out;
}

// The device buffer of state `state` of stage s (this rank's stages only).
template <class Opt> float *state_buffer(const Opt &opt, std::size_t stage, const char *state) {
  float *found = nullptr;
  opt.visit_state(stage, [&](const char *name, float *buffer, bool) {
    if (std::string_view(name) == state) found = buffer;
  });
  if (!found) tandem::detail::fail("checkpoint: the optimizer has no '", state, "' buffer for stage ", stage);
  return found;
}

// Every stage's step count, from the rank that holds the stage.
template <class Net, class Opt> std::vector<std::uint64_t> steps_of(const Net &net, const Opt &opt, Ranks &ranks) {
  std::vector<std::uint64_t> mine(Net::num_stages, 0), owner(Net::num_stages, 0);
  const auto where = places(net);
  for (std::size_t k = 0; k < net.parameters().size(); ++k) {
    const auto &p = net.parameters()[k];
    owner[where[k].stage] = static_cast<std::uint64_t>(p.rank());
    if (p.is_local()) mine[where[k].stage] = opt.steps(where[k].stage);
  }
  const auto all = ranks.all_gather(mine);
  std::vector<std::uint64_t> steps(Net::num_stages, 0);
  for (std::size_t s = 0; s < steps.size(); ++s)
    if (stage_sizes<Net>[s]) steps[s] = all.size() == 1 ? mine[s] : all[owner[s]][s];
  return steps;
}

// The LR schedule in a file: its description and its counters.
inline std::string schedule_state_text(const optim::LRScheduler &sched) {
  // Appended piece by piece: g++ 12 warns (-Wrestrict, falsely) of "literal" + std::string&& here.
  std::string s;
  for (const auto &x : sched.state()) {
    if (!s.empty()) s += ';';
    s.append(std::to_string(x.last_epoch)).append(",").append(number(x.base_lr)).append(",").append(number(x.group_lr));
  }
  return s;
}

// What the optimizer (and schedule) files carry besides tensors: the optimizer's kind and
// hyperparameters, each stage's step count, the schedule.
template <class Net, class Opt>
std::map<std::string, std::string> optimizer_metadata(const Opt &opt, const std::vector<std::uint64_t> &steps,
                                                      const optim::LRScheduler *sched) {
  auto meta = common_metadata<Net>("optimizer");
  meta["tandem.optimizer"] = optimizer_name(opt);
  for (const auto &[key, value] : hyperparameters(opt.options())) meta[key] = value;
  for (std::size_t s = 0; s < Net::num_stages; ++s)
    if (stage_sizes<Net>[s]) meta["stage" + std::to_string(s) + ".step"] = std::to_string(steps[s]);
  if (sched) {
    meta["tandem.scheduler"] = sched->describe();
    meta["tandem.scheduler.state"] = schedule_state_text(*sched);
  }
  return meta;
}

// This rank's state tensors (of stage `only_stage`, or all), read from the device.
template <class Net, class Opt>
Gathered<float> gather_optimizer(const Net &net, const Opt &opt, const std::vector<std::uint64_t> &steps,
                                 std::size_t only_stage = SIZE_MAX) {
  // Steps in flight complete first (their counts and state are then final), as Parameter::to_host does.
  for (const auto &g : net.parameter_groups())
    if (g.executor) g.executor->complete_steps_in_flight();
  Gathered<float> out;
  const auto slices = state_slices(net, opt, steps);
  out.values.reserve(slices.size());
  std::map<const float *, std::vector<float>> buffers; // each buffer read once
  for (const auto &s : slices) {
    if (!s.local || (only_stage != SIZE_MAX && s.stage != only_stage)) continue;
    const float *buffer = state_buffer(opt, s.stage, s.state);
    auto &host = buffers[buffer];
    const auto &g = net.parameter_groups()[s.stage];
    if (host.empty()) {
      host.resize(g.size);
      g.executor->download(host.data(), buffer, g.size * sizeof(float));
      g.executor->synchronize();
    }
    out.add(s.name, s.shape, std::vector<float>(host.begin() + s.offset, host.begin() + s.offset + s.size));
  }
  return out;
}
// In one process: every stage's own count.
template <class Net, class Opt> Gathered<float> gather_optimizer(const Net &net, const Opt &opt) {
  std::vector<std::uint64_t> steps(Net::num_stages, 0);
  for (std::size_t s = 0; s < Net::num_stages; ++s)
    if (stage_sizes<Net>[s] && net.parameter_groups()[s].size) steps[s] = opt.steps(s);
  return gather_optimizer(net, opt, steps);
}

inline std::optional<std::uint64_t> parse_count(const std::string &s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// What a checked checkpoint restores besides the tensors: the step counts, the learning rate and
// the schedule's counters.
struct OptimizerPlan {
  std::vector<std::uint64_t> steps;
  float lr = 0;
  std::vector<optim::LRScheduler::State> schedule;
};

inline std::optional<std::vector<optim::LRScheduler::State>> parse_schedule_state(const std::string &text) {
  std::vector<optim::LRScheduler::State> out;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t end = std::min(text.find(';', at), text.size());
    const std::string item = text.substr(at, end - at);
    optim::LRScheduler::State s;
    const char *p = item.data(), *e = item.data() + item.size();
    auto r1 = std::from_chars(p, e, s.last_epoch);
    if (r1.ec != std::errc() || r1.ptr == e || *r1.ptr != ',') return std::nullopt;
    auto r2 = std::from_chars(r1.ptr + 1, e, s.base_lr);
    if (r2.ec != std::errc() || r2.ptr == e || *r2.ptr != ',') return std::nullopt;
    auto r3 = std::from_chars(r2.ptr + 1, e, s.group_lr);
    if (r3.ec != std::errc() || r3.ptr != e || !std::isfinite(s.base_lr) || !std::isfinite(s.group_lr) ||
        s.last_epoch < 0)
      return std::nullopt;
    out.push_back(s);
    at = end + 1;
  }
  return out;
}

// Checks the optimizer's (and the schedule's) metadata in `file`: the same optimizer and
// hyperparameters (the learning rate excepted: it is restored), step counts in range, the same kind
// of schedule with the same options.
template <class Net, class Opt>
OptimizerPlan check_optimizer(const Opt &opt, const optim::LRScheduler *sched,
                              const std::map<std::string, std::string> &metadata, const std::string &file) {
  Problems problems;
  const auto meta = [&](const std::string &key) {
    const auto it = metadata.find(key);
    return it == metadata.end() ? std::string("(none)") : it->second;
  };
  if (meta("tandem.optimizer") != optimizer_name(opt))
    problems.add("it holds the state of optimizer ", meta("tandem.optimizer"), ", not of ", optimizer_name(opt));
  OptimizerPlan plan;
  for (const auto &[key, value] : hyperparameters(opt.options())) {
    if (key == "lr") {
      const std::string s = meta("lr");
      float lr = NAN;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), lr);
      if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(lr) || !(lr >= 0))
        problems.add("its lr '", s, "' is not a finite number >= 0");
      plan.lr = lr;
    } else if (meta(key) != value) {
      problems.add("its ", key, " is ", meta(key), ", this optimizer's is ", value);
    }
  }
  plan.steps.assign(Net::num_stages, 0);
  for (std::size_t s = 0; s < Net::num_stages; ++s) {
    if (!stage_sizes<Net>[s]) continue;
    const std::string key = "stage" + std::to_string(s) + ".step";
    const auto n = parse_count(meta(key));
    if (!n) problems.add("its ", key, " is ", meta(key), ", not a step count");
    else if (*n > max_steps)
      problems.add("its ", key, " is ", *n, ", more than the ", max_steps,
                   " steps (2^53) a count may hold (the next step's arithmetic would overflow)");
    else plan.steps[s] = *n;
  }
  if (sched) {
    const std::string saved = meta("tandem.scheduler");
    const std::string mine = sched->describe();
    if (saved == "(none)") {
      problems.add("it holds no LR schedule, and this run has ", mine,
                   "; load_checkpoint(dir, net, opt) resumes without one");
    } else if (saved != mine) {
      problems.add("it holds the LR schedule ", saved, ", but this run has ", mine);
    } else {
      const auto state = parse_schedule_state(meta("tandem.scheduler.state"));
      if (!state || state->size() != sched->state().size())
        problems.add("its tandem.scheduler.state '", meta("tandem.scheduler.state"), "' is not ", sched->state().size(),
                     " schedule states (epoch,base_lr,lr;...)");
      else plan.schedule = *state;
    }
  }
  problems.raise(file, "does not fit this optimizer",
                 network_hint(metadata.count("tandem.network") ? std::optional(meta("tandem.network")) : std::nullopt,
                              signature<Net>()));
  return plan;
}

template <class Net, class Opt>
std::vector<Expected> expected_state(const Net &net, const Opt &opt, const OptimizerPlan &plan) {
  std::vector<Expected> expected;
  for (const auto &s : state_slices(net, opt, plan.steps)) expected.push_back({s.name, s.shape, "F32"});
  return expected;
}

// Writes checked state into this rank's stages, then the counts, the rate and the schedule.
template <class Net, class Opt>
void write_optimizer(const Net &net, Opt &opt, optim::LRScheduler *sched, const Sources &sources,
                     const OptimizerPlan &plan) {
  for (const auto &g : net.parameter_groups())
    if (g.executor) g.executor->complete_steps_in_flight();
  std::map<float *, std::pair<std::size_t, std::vector<float>>> buffers; // buffer -> (stage, values)
  for (const auto &s : state_slices(net, opt, plan.steps)) {
    if (!s.local) continue;
    float *buffer = state_buffer(opt, s.stage, s.state);
    auto &[stage, host] = buffers[buffer];
    stage = s.stage;
    host.resize(net.parameter_groups()[s.stage].size);
    const SafetensorsFile &f = sources.at(s.name);
    const auto bytes = f.data(*f.find(s.name));
    std::memcpy(host.data() + s.offset, bytes.data(), bytes.size());
  }
  // Every slice of a buffer is present (the checks), so each buffer is written whole.
  for (auto &[buffer, item] : buffers) {
    const auto &g = net.parameter_groups()[item.first];
    g.executor->upload(buffer, item.second.data(), item.second.size() * sizeof(float));
    g.executor->synchronize();
  }
  for (std::size_t s = 0; s < plan.steps.size(); ++s)
    if (stage_sizes<Net>[s] && net.parameter_groups()[s].size) opt.restore_steps(s, plan.steps[s]);
  opt.set_lr(plan.lr);
  if (sched) sched->restore(plan.schedule);
}

template <class Net, class Opt> void check_owner(const Net &net, const Opt &opt, const char *call) {
  if (opt.owner() != &net)
    tandem::detail::fail(call, ": the optimizer was built for another network (or moved from); a checkpoint "
                               "belongs to one network and its optimizer");
}

// Leftovers of saves that were stopped: temporary files of a checkpoint's names.
inline void remove_temporaries(const std::filesystem::path &dir) {
  std::error_code ec;
  for (const auto &e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if ((name.starts_with(".model") || name.starts_with(".optimizer")) && name.find(".tmp.") != std::string::npos)
      std::filesystem::remove(e.path(), ec);
  }
}

inline void make_directory(const std::filesystem::path &dir, const char *call) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) tandem::detail::fail(call, ": cannot make the directory '", dir.string(), "': ", ec.message());
}

// Reads and checks a checkpoint directory for this rank: the single-process pair, or (where an
// index is) the shards this rank's stages need. Nothing is written.
template <class Net, class Opt>
std::pair<Sources, OptimizerPlan> read_checkpoint(const std::filesystem::path &dir, const Net &net, const Opt &opt,
                                                  const optim::LRScheduler *sched) {
  Sources sources;
  OptimizerPlan plan;
  const auto index_path = dir / index_file;
  // An index of weights alone (save_sharded's) is no checkpoint's: the pair beside it is.
  if (std::filesystem::exists(index_path)) {
    const Index index = read_index(index_path);
    if (index.has_optimizer) {
      plan = check_optimizer<Net>(opt, sched, index.metadata, index.file);
      const std::string mine = signature<Net>();
      read_shards(index, dir, index.weight_map, expected_model(net), local_parameter_names(net),
                  "does not fit this network", mine, sources);
      std::set<std::string> local_state;
      for (const auto &s : state_slices(net, opt, plan.steps))
        if (s.local) local_state.insert(s.name);
      read_shards(index, dir, index.optimizer_map, expected_state(net, opt, plan), local_state,
                  "does not fit this optimizer", mine, sources);
      return {std::move(sources), std::move(plan)};
    }
  }
  auto model = SafetensorsFile::open(dir / model_file);
  auto state = SafetensorsFile::open(dir / optimizer_file);
  check_model(net, model);
  if (state.meta("tandem.format") != "optimizer")
    tandem::detail::fail("'", state.file(), "' does not fit this optimizer: its metadata tandem.format is ",
                         state.meta("tandem.format").value_or("(none)"), ", expected optimizer. ",
                         network_hint<Net>(state));
  plan = check_optimizer<Net>(opt, sched, state.metadata(), state.file());
  check_tensors(state, expected_state(net, opt, plan), "does not fit this optimizer", network_hint<Net>(state));
  if (model.meta("tandem.checkpoint") != state.meta("tandem.checkpoint"))
    tandem::detail::fail("'", model.file(), "' and '", state.file(), "' belong to different saves (save ids ",
                         model.meta("tandem.checkpoint").value_or("(none)"), " and ",
                         state.meta("tandem.checkpoint").value_or("(none)"),
                         "): a save stopped between them; save again, or load an older checkpoint");
  model.read_data();
  state.read_data();
  for (const auto &p : net.parameters()) sources.file_of[p.name()] = model_file;
  for (const auto &t : state.tensors()) sources.file_of[t.name] = optimizer_file;
  sources.files.emplace(model_file, std::move(model));
  sources.files.emplace(optimizer_file, std::move(state));
  return {std::move(sources), std::move(plan)};
}

template <class Net, class Opt>
void save_checkpoint(const std::filesystem::path &dir, const Net &net, const Opt &opt,
                     const optim::LRScheduler *sched) {
  check_owner(net, opt, "save_checkpoint");
  // Steps in flight complete first: their counts and state are then final.
  for (const auto &g : net.parameter_groups())
    if (g.executor) g.executor->complete_steps_in_flight();
  Ranks ranks(net, "save_checkpoint");
  ranks.all([&] { make_directory(dir, "save_checkpoint"); });
  const std::string id = ranks.broadcast(ranks.rank() == 0 ? new_save_id() : std::string(), 0);
  const auto steps = steps_of(net, opt, ranks);
  auto model_meta = common_metadata<Net>("model");
  model_meta["tandem.checkpoint"] = id;
  auto state_meta = optimizer_metadata<Net>(opt, steps, sched);
  state_meta["tandem.checkpoint"] = id;
  std::error_code ec;
  if (!ranks.active()) {
    const auto model = gather_model(net);
    const auto state = gather_optimizer(net, opt, steps);
    write_safetensors(dir / model_file, model.views, model_meta);
    write_safetensors(dir / optimizer_file, state.views, state_meta);
    // The pair is complete: the index of an earlier save across processes would now win over it
    // (an index of weights alone, save_sharded's, stays).
    try {
      if (std::filesystem::exists(dir / index_file) && read_index(dir / index_file).has_optimizer)
        std::filesystem::remove(dir / index_file, ec);
    } catch (const Error &) {
      // An index that does not read is left for a load to name.
    }
    remove_temporaries(dir);
    return;
  }
  // Each rank its stages' shards, then rank 0 the index that names them all: the index is written
  // last, once every shard is, so that it never names a shard of another save.
  const auto model_shards = shard_names<Net>("model"), state_shards = shard_names<Net>("optimizer");
  ranks.all([&] {
    for (std::size_t s = 0; s < Net::num_stages; ++s) {
      if (!stage_sizes<Net>[s] || !net.parameter_groups()[s].size) continue;
      const auto model = gather_model(net, nullptr, s);
      write_safetensors(dir / model_shards[s], model.views, model_meta);
      const auto state = gather_optimizer(net, opt, steps, s);
      auto meta = common_metadata<Net>("optimizer");
      meta["tandem.checkpoint"] = id;
      write_safetensors(dir / state_shards[s], state.views, meta);
    }
  });
  ranks.all([&] {
    if (ranks.rank() != 0) return;
    const auto where = places(net);
    auto index_meta = state_meta;
    index_meta["tandem.format"] = "checkpoint";
    nlohmann::json index{{"metadata", index_meta},
                         {"weight_map", nlohmann::json::object()},
                         {"optimizer_map", nlohmann::json::object()}};
    std::uint64_t total = 0;
    for (std::size_t k = 0; k < net.parameters().size(); ++k) {
      const auto &p = net.parameters()[k];
      index["weight_map"][p.name()] = model_shards[where[k].stage];
      total += p.size() * sizeof(typename Net::value_type);
    }
    for (const auto &s : state_slices(net, opt, steps)) index["optimizer_map"][s.name] = state_shards[s.stage];
    index["metadata"]["total_size"] = total;
    write_file_atomically(dir / index_file, index.dump(2) + "\n");
    std::filesystem::remove(dir / model_file, ec);
    std::filesystem::remove(dir / optimizer_file, ec);
    remove_temporaries(dir);
  });
}

template <class Net, class Opt>
void load_checkpoint(const std::filesystem::path &dir, Net &net, Opt &opt, optim::LRScheduler *sched) {
  check_owner(net, opt, "load_checkpoint");
  Ranks ranks(net, "load_checkpoint");
  std::pair<Sources, OptimizerPlan> read;
  ranks.all([&] { read = read_checkpoint(dir, net, opt, sched); });
  write_model(net, read.first);
  write_optimizer(net, opt, sched, read.first, read.second);
}

} // namespace checkpoint

// Writes the network's weights to `path` (safetensors; F32 for a float network, F64 for a double
// one; names and shapes as PyTorch's state_dict of stage0, stage1, ... nn.Sequentials). Across
// processes every rank calls it: each sends its stages' weights, and rank 0 writes the one file.
template <class Net> void save(const Net &net, const std::filesystem::path &path) {
  checkpoint::Ranks ranks(net, "save");
  const auto g = checkpoint::gather_model(net, &ranks);
  ranks.all([&] {
    if (ranks.rank() == 0) checkpoint::write_safetensors(path, g.views, checkpoint::common_metadata<Net>("model"));
  });
}

// The weights in one safetensors file per stage with parameters (model-00001-of-00002.safetensors,
// ...) and the index `dir`/model.safetensors.index.json that maps each name to its file, as sharded
// checkpoints do in the Hugging Face world. load() reads them back from the index's path. Each
// file is written atomically, the index last. Across processes every rank calls it and writes its
// own stages' files; rank 0 writes the index.
template <class Net> void save_sharded(const Net &net, const std::filesystem::path &dir) {
  checkpoint::Ranks ranks(net, "save_sharded");
  ranks.all([&] { checkpoint::make_directory(dir, "save_sharded"); });
  const auto shards = checkpoint::shard_names<Net>("model");
  ranks.all([&] {
    for (std::size_t s = 0; s < Net::num_stages; ++s) {
      if (!checkpoint::stage_sizes<Net>[s] || !net.parameter_groups()[s].size) continue;
      const auto g = checkpoint::gather_model(net, nullptr, s);
      checkpoint::write_safetensors(dir / shards[s], g.views, checkpoint::common_metadata<Net>("model"));
    }
  });
  ranks.all([&] {
    if (ranks.rank() != 0) return;
    nlohmann::json index{{"metadata", checkpoint::common_metadata<Net>("model")},
                         {"weight_map", nlohmann::json::object()}};
    const auto where = checkpoint::places(net);
    std::uint64_t total = 0;
    for (std::size_t k = 0; k < net.parameters().size(); ++k) {
      const auto &p = net.parameters()[k];
      index["weight_map"][p.name()] = shards[where[k].stage];
      total += p.size() * sizeof(typename Net::value_type);
    }
    index["metadata"]["total_size"] = total;
    checkpoint::write_file_atomically(dir / checkpoint::index_file, index.dump(2) + "\n");
  });
}

// Reads weights saved by save() or by PyTorch (or by save_sharded or save_checkpoint across
// processes: `path` is then the index). Strict: every name, shape and dtype must match, and nothing
// else may be in the file. Everything is read and checked first - across processes on every rank,
// each reading what its stages need - and a bad file throws on every rank and changes nothing.
template <class Net> void load(Net &net, const std::filesystem::path &path) {
  checkpoint::Ranks ranks(net, "load");
  checkpoint::Sources sources;
  ranks.all([&] { sources = checkpoint::read_model(net, path); });
  checkpoint::write_model(net, sources);
}

// A training run's state in directory `dir` (made if missing). In one process: model.safetensors
// and optimizer.safetensors; across processes (every rank calls it) each rank's stages in
// model-0000k-of-0000n.safetensors and optimizer-0000k-of-0000n.safetensors, and an index,
// model.safetensors.index.json, written last by rank 0. Every file is written atomically and
// carries the save's id; with a schedule, its kind, options and counters go along.
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void save_checkpoint(const std::filesystem::path &dir, const Net &net, const Opt &opt) {
  checkpoint::save_checkpoint(dir, net, opt, nullptr);
}
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void save_checkpoint(const std::filesystem::path &dir, const Net &net, const Opt &opt,
                     const optim::LRScheduler &scheduler) {
  checkpoint::save_checkpoint(dir, net, opt, &scheduler);
}

// A schedule passed as anything but an optim::LRScheduler reference (a pointer, say): one error that
// says what to pass, ahead of a list of candidates.
template <class Net, class Opt, class Sched>
requires(!std::derived_from<std::remove_cvref_t<Sched>, optim::LRScheduler>) void save_checkpoint(
    const std::filesystem::path &, const Net &, const Opt &, const Sched &) {
  static_assert(std::derived_from<std::remove_cvref_t<Sched>, optim::LRScheduler>,
                "TANDEM_SCHEDULER_TYPE: save_checkpoint(dir, net, opt, scheduler) takes the LR schedule itself (an "
                "optim::LRScheduler such as optim::CosineAnnealingLR), by reference, not a pointer to it");
}

// Resumes a run saved by save_checkpoint, on any number of ranks: the next steps are bit for bit
// those the saved run would have taken. The optimizer (and schedule) must have been built with the
// saved hyperparameters (the learning rate excepted: the saved one is restored). Every file is read
// and checked before anything changes, and files of different saves are refused.
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void load_checkpoint(const std::filesystem::path &dir, Net &net, Opt &opt) {
  checkpoint::load_checkpoint(dir, net, opt, nullptr);
}
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void load_checkpoint(const std::filesystem::path &dir, Net &net, Opt &opt, optim::LRScheduler &scheduler) {
  checkpoint::load_checkpoint(dir, net, opt, &scheduler);
}
template <class Net, class Opt, class Sched>
requires(!std::derived_from<std::remove_cvref_t<Sched>, optim::LRScheduler>) void load_checkpoint(
    const std::filesystem::path &, Net &, Opt &, Sched &&) {
  static_assert(std::derived_from<std::remove_cvref_t<Sched>, optim::LRScheduler>,
                "TANDEM_SCHEDULER_TYPE: load_checkpoint(dir, net, opt, scheduler) takes the LR schedule itself (an "
                "optim::LRScheduler such as optim::CosineAnnealingLR), by reference, not a pointer to it");
}

} // namespace tandem
