// SPDX-License-Identifier: Apache-2.0
// Checkpoints in the safetensors format: a network's weights (save / load), and with its optimizer's
// state a resumable training run (save_checkpoint / load_checkpoint). Needs nlohmann-json (CMake
// target tandem::checkpoint), so <tandem/tandem.hpp> does not include it.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tandem/checkpoint/safetensors.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/optim/adam.hpp"
#include "tandem/optim/adamw.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/parameter.hpp"
#include "tandem/version.hpp"

namespace tandem {

namespace checkpoint {

inline constexpr const char *model_file = "model.safetensors";
inline constexpr const char *optimizer_file = "optimizer.safetensors";
inline constexpr const char *index_file = "model.safetensors.index.json";

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

// The stages, their layers and widths, as the type spells them: written into every file, so that
// a file that does not fit a network can say which network it came from.
template <class Net> std::string signature() {
  std::array<std::size_t, Net::num_stages + 1> widths{};
  std::string s;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((widths[I] = Net::template stage_in_features<I>), ...);
    widths[Net::num_stages] = Net::out_features;
    (
        [&] {
          using St = typename Net::template stage<I>;
          s += std::string(I ? " | " : "") + "Stage<Device<" + std::to_string(St::device_index) + ">";
          [&]<std::size_t... J>(std::index_sequence<J...>) {
            ((s += ", " + layer_name<typename St::template layer<J>>()), ...);
          }
          (std::make_index_sequence<St::num_layers>{});
          s += "> " + std::to_string(widths[I]) + " -> " + std::to_string(widths[I + 1]);
        }(),
        ...);
  }
  (std::make_index_sequence<Net::num_stages>{});
  return s + "; " + std::string(dtype_of<typename Net::value_type>());
}

// A parameter's shape in a file: (out, in) for a matrix, (out) for a column (a bias), as PyTorch.
template <class T> std::vector<std::uint64_t> shape_of(const Parameter<T> &p) {
  if (p.cols() == 1) return {p.rows()};
  return {p.rows(), p.cols()};
}

inline std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v)); // 9 digits: every float round-trips
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

template <class Net> std::string network_hint(const SafetensorsFile &f) {
  const auto saved = f.meta("tandem.network");
  const std::string mine = signature<Net>();
  if (saved && *saved != mine) return "It was saved from the network " + *saved + "; this network is " + mine;
  return "This network is " + mine;
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

// Writes checked weights into the network: `file_of(name)` is the checked file that holds them.
template <class Net, class FileOf> void write_model(const Net &net, FileOf &&file_of) {
  using T = typename Net::value_type;
  std::vector<T> values;
  for (const auto &p : net.parameters()) {
    const SafetensorsFile &f = file_of(p.name());
    const auto bytes = f.data(*f.find(p.name()));
    values.resize(p.size());
    std::memcpy(values.data(), bytes.data(), bytes.size());
    p.copy_from(values);
  }
}
template <class Net> void write_model(const Net &net, const SafetensorsFile &f) {
  write_model(net, [&](const std::string &) -> const SafetensorsFile & { return f; });
}

// ---- weights in shards, one file per stage with parameters, and an index ----

// The shard of each stage ("" for a stage without parameters), as Hugging Face numbers them.
template <class Net> std::vector<std::string> shard_names(const Net &net) {
  std::vector<std::string> names;
  std::size_t count = 0;
  for (const auto &g : net.parameter_groups()) count += g.size != 0;
  std::size_t k = 0;
  for (const auto &g : net.parameter_groups()) {
    char name[64] = "";
    if (g.size) std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", ++k, count);
    names.emplace_back(name);
  }
  return names;
}

// The stage whose group holds parameter p.
template <class Net, class P> std::size_t stage_of(const Net &net, const P &p) {
  const auto groups = net.parameter_groups();
  for (std::size_t i = 0; i < groups.size(); ++i)
    if (p.data() >= groups[i].params && p.data() < groups[i].params + groups[i].size) return i;
  tandem::detail::fail("checkpoint: parameter '", p.name(), "' lies in no stage's group");
}

// Reads and checks an index and every shard it names; nothing is written.
template <class Net>
std::map<std::string, SafetensorsFile> read_sharded(const Net &net, const std::filesystem::path &index,
                                                    std::map<std::string, std::string> &weight_map) {
  const auto bytes = read_file(index);
  const std::string file = index.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(reinterpret_cast<const char *>(bytes.data()),
                              reinterpret_cast<const char *>(bytes.data()) + bytes.size());
  } catch (const nlohmann::json::exception &e) {
    tandem::detail::fail("'", file, "' is not a valid index: not JSON (", e.what(), ")");
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    tandem::detail::fail("'", file, "' is not a valid index: no \"weight_map\" object");
  const nlohmann::json &map = j["weight_map"];
  for (auto it = map.begin(); it != map.end(); ++it) {
    // A shard lies beside the index: a path elsewhere is refused.
    const std::string shard = it.value().is_string() ? it.value().get<std::string>() : "";
    if (shard.empty() || shard.find_first_of("/\\") != std::string::npos || shard == "." || shard == "..")
      tandem::detail::fail("'", file, "' is not a valid index: '", it.key(), "' maps to ", it.value().dump(),
                           ", not a file name beside the index");
    weight_map[it.key()] = shard;
  }
  Problems problems;
  std::set<std::string> names;
  for (const auto &p : net.parameters()) {
    names.insert(p.name());
    if (!weight_map.count(p.name())) problems.add("no entry for '", p.name(), "'");
  }
  for (const auto &[name, shard] : weight_map)
    if (!names.count(name)) problems.add("unexpected entry '", name, "'");
  problems.raise(file, "does not fit this network", "This network is " + signature<Net>());

  std::map<std::string, SafetensorsFile> shards;
  std::map<std::string, std::vector<Expected>> expected;
  for (const auto &e : expected_model(net)) expected[weight_map.at(e.name)].push_back(e);
  for (const auto &[shard, tensors] : expected) {
    const auto path = index.parent_path() / shard;
    auto f = SafetensorsFile::read(path);
    check_tensors(f, tensors, "does not fit this network", network_hint<Net>(f));
    shards.emplace(shard, std::move(f));
  }
  return shards;
}

// Every parameter's values (its to_host: steps in flight complete first), with views for the writer.
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

template <class Net> Gathered<typename Net::value_type> gather_model(const Net &net) {
  Gathered<typename Net::value_type> g;
  g.values.reserve(net.parameters().size()); // the views point into these vectors
  for (const auto &p : net.parameters()) g.add(p.name(), shape_of(p), p.to_host());
  return g;
}

// ---- optimizer state ----

inline const char *optimizer_name(const optim::SGD &) { return "SGD"; }
inline const char *optimizer_name(const optim::Adam &) { return "Adam"; }
inline const char *optimizer_name(const optim::AdamW &) { return "AdamW"; }

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
  hyperparameters(o.options());
  { o.steps(i) } -> std::convertible_to<std::size_t>;
  m.restore_steps(i, i);
  m.set_lr(0.0f);
};

// One state tensor of one parameter: `of` the group's buffer, `offset` the parameter's place in it.
struct StateSlice {
  std::string name;
  std::size_t group, offset, size;
  std::vector<std::uint64_t> shape;
  float *buffer;
};

// The state tensors that exist when group i has taken `steps(i)` steps: SGD's momentum buffer is
// seeded by the first step, Adam's moments start at zero. Named "<parameter>.<state>".
template <class Net, class Opt>
std::vector<StateSlice> state_slices(const Net &net, const Opt &opt, const std::vector<std::size_t> &steps) {
  std::vector<StateSlice> out;
  const auto groups = net.parameter_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const auto &g = groups[i];
    if (!g.size) continue;
    opt.visit_state(i, [&](const char *state, float *buffer, bool after_first_step) {
      if (after_first_step && steps[i] == 0) return;
      for (const auto &p : net.parameters()) {
        if (p.data() < g.params || p.data() >= g.params + g.size) continue;
        out.push_back(
            {p.name() + "." + state, i, static_cast<std::size_t>(p.data() - g.params), p.size(), shape_of(p), buffer});
      }
    });
  }
  return out;
}

template <class Net, class Opt> std::vector<std::size_t> steps_of(const Net &net, const Opt &opt) {
  std::vector<std::size_t> steps;
  for (std::size_t i = 0; i < net.parameter_groups().size(); ++i) steps.push_back(opt.steps(i));
  return steps;
}

template <class Net, class Opt> std::map<std::string, std::string> optimizer_metadata(const Net &net, const Opt &opt) {
  auto meta = common_metadata<Net>("optimizer");
  meta["tandem.optimizer"] = optimizer_name(opt);
  for (const auto &[key, value] : hyperparameters(opt.options())) meta[key] = value;
  for (std::size_t i = 0; i < net.parameter_groups().size(); ++i)
    if (net.parameter_groups()[i].size) meta["stage" + std::to_string(i) + ".step"] = std::to_string(opt.steps(i));
  return meta;
}

template <class Net, class Opt> Gathered<float> gather_optimizer(const Net &net, const Opt &opt) {
  // Steps in flight complete first (their counts and state are then final), as Parameter::to_host does.
  for (const auto &g : net.parameter_groups())
    if (g.executor) g.executor->complete_steps_in_flight();
  Gathered<float> out;
  const auto slices = state_slices(net, opt, steps_of(net, opt));
  out.values.reserve(slices.size());
  std::map<const float *, std::vector<float>> buffers; // each group's buffer read once
  for (const auto &s : slices) {
    auto &host = buffers[s.buffer];
    if (host.empty()) {
      const auto &g = net.parameter_groups()[s.group];
      host.resize(g.size);
      g.executor->download(host.data(), s.buffer, g.size * sizeof(float));
      g.executor->synchronize();
    }
    out.add(s.name, s.shape, std::vector<float>(host.begin() + s.offset, host.begin() + s.offset + s.size));
  }
  return out;
}

inline std::optional<std::size_t> parse_count(const std::string &s) {
  std::size_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// What a checked optimizer file restores: the step counts and the learning rate.
struct OptimizerPlan {
  std::vector<std::size_t> steps;
  float lr = 0;
};

template <class Net, class Opt>
OptimizerPlan check_optimizer(const Net &net, const Opt &opt, const SafetensorsFile &f) {
  Problems problems;
  const auto meta = [&](const std::string &key) { return f.meta(key).value_or("(none)"); };
  if (meta("tandem.format") != "optimizer")
    problems.add("its metadata tandem.format is ", meta("tandem.format"), ", expected optimizer");
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
  const auto groups = net.parameter_groups();
  plan.steps.assign(groups.size(), 0);
  for (std::size_t i = 0; i < groups.size(); ++i) {
    if (!groups[i].size) continue;
    const std::string key = "stage" + std::to_string(i) + ".step";
    const auto n = parse_count(meta(key));
    if (!n) problems.add("its ", key, " is ", meta(key), ", not a step count");
    else plan.steps[i] = *n;
  }
  problems.raise(f.file(), "does not fit this optimizer", network_hint<Net>(f));

  std::vector<Expected> expected;
  for (const auto &s : state_slices(net, opt, plan.steps)) expected.push_back({s.name, s.shape, "F32"});
  check_tensors(f, expected, "does not fit this optimizer", network_hint<Net>(f));
  return plan;
}

template <class Net, class Opt>
void write_optimizer(const Net &net, Opt &opt, const SafetensorsFile &f, const OptimizerPlan &plan) {
  for (const auto &g : net.parameter_groups())
    if (g.executor) g.executor->complete_steps_in_flight();
  std::map<float *, std::vector<float>> buffers;
  for (const auto &s : state_slices(net, opt, plan.steps)) {
    auto &host = buffers[s.buffer];
    host.resize(net.parameter_groups()[s.group].size);
    const auto bytes = f.data(*f.find(s.name));
    std::memcpy(host.data() + s.offset, bytes.data(), bytes.size());
  }
  // Every slice of a buffer is present (the check above), so each buffer is written whole.
  for (const auto &s : state_slices(net, opt, plan.steps)) {
    auto it = buffers.find(s.buffer);
    if (it == buffers.end()) continue;
    const auto &g = net.parameter_groups()[s.group];
    g.executor->upload(s.buffer, it->second.data(), it->second.size() * sizeof(float));
    g.executor->synchronize();
    buffers.erase(it);
  }
  for (std::size_t i = 0; i < plan.steps.size(); ++i)
    if (net.parameter_groups()[i].size) opt.restore_steps(i, plan.steps[i]);
  opt.set_lr(plan.lr);
}

template <class Net, class Opt> void check_owner(const Net &net, const Opt &opt, const char *call) {
  if (opt.owner() != &net)
    tandem::detail::fail(call, ": the optimizer was built for another network (or moved from); a checkpoint "
                               "belongs to one network and its optimizer");
}

} // namespace checkpoint

// Writes the network's weights to `path` (safetensors; F32 for a float network, F64 for a double
// one; names and shapes as PyTorch's state_dict of stage0, stage1, ... nn.Sequentials).
template <class Net> void save(const Net &net, const std::filesystem::path &path) {
  const auto g = checkpoint::gather_model(net);
  checkpoint::write_safetensors(path, g.views, checkpoint::common_metadata<Net>("model"));
}

// The weights in one safetensors file per stage with parameters (model-00001-of-00002.safetensors,
// ...) and the index `dir`/model.safetensors.index.json that maps each name to its file, as sharded
// checkpoints do in the Hugging Face world. load() reads them back from the index's path. Each
// file is written atomically, the index last.
template <class Net> void save_sharded(const Net &net, const std::filesystem::path &dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) tandem::detail::fail("save_sharded: cannot make the directory '", dir.string(), "': ", ec.message());
  const auto shards = checkpoint::shard_names(net);
  const auto g = checkpoint::gather_model(net);
  nlohmann::json index{{"metadata", checkpoint::common_metadata<Net>("model")},
                       {"weight_map", nlohmann::json::object()}};
  std::size_t total = 0;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    if (shards[s].empty()) continue;
    std::vector<checkpoint::TensorView> views;
    for (std::size_t k = 0; k < g.views.size(); ++k)
      if (checkpoint::stage_of(net, net.parameters()[k]) == s) {
        views.push_back(g.views[k]);
        index["weight_map"][g.views[k].name] = shards[s];
        total += g.views[k].data.size();
      }
    checkpoint::write_safetensors(dir / shards[s], views, checkpoint::common_metadata<Net>("model"));
  }
  index["metadata"]["total_size"] = total;
  const std::string text = index.dump(2) + "\n";
  const std::span<const std::byte> part = std::as_bytes(std::span(text));
  checkpoint::write_file_atomically(dir / checkpoint::index_file, std::span(&part, 1));
}

// Reads weights saved by save() or by PyTorch (or by save_sharded: `path` is then the index). Strict: every name, shape
// and dtype must match, and nothing else may be in the file. The whole file is read and checked first: a bad one throws
// and changes nothing.
template <class Net> void load(Net &net, const std::filesystem::path &path) {
  if (path.filename().string().ends_with(".index.json")) { // save_sharded's index
    std::map<std::string, std::string> weight_map;
    const auto shards = checkpoint::read_sharded(net, path, weight_map);
    checkpoint::write_model(net, [&](const std::string &name) -> const checkpoint::SafetensorsFile & {
      return shards.at(weight_map.at(name));
    });
    return;
  }
  const auto f = checkpoint::SafetensorsFile::read(path);
  checkpoint::check_model(net, f);
  checkpoint::write_model(net, f);
}

// A training run's state in directory `dir` (made if missing): model.safetensors and
// optimizer.safetensors, each written atomically.
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void save_checkpoint(const std::filesystem::path &dir, const Net &net, const Opt &opt) {
  checkpoint::check_owner(net, opt, "save_checkpoint");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) tandem::detail::fail("save_checkpoint: cannot make the directory '", dir.string(), "': ", ec.message());
  const auto model = checkpoint::gather_model(net);
  const auto state = checkpoint::gather_optimizer(net, opt);
  checkpoint::write_safetensors(dir / checkpoint::model_file, model.views, checkpoint::common_metadata<Net>("model"));
  checkpoint::write_safetensors(dir / checkpoint::optimizer_file, state.views,
                                checkpoint::optimizer_metadata(net, opt));
}

// Resumes a run saved by save_checkpoint: the next steps are bit for bit those the saved run would
// have taken. The optimizer must have been built with the saved hyperparameters (the learning rate
// excepted: the saved one is restored). Both files are read and checked before anything changes.
template <class Net, checkpoint::CheckpointableOptimizer Opt>
void load_checkpoint(const std::filesystem::path &dir, Net &net, Opt &opt) {
  checkpoint::check_owner(net, opt, "load_checkpoint");
  const auto model = checkpoint::SafetensorsFile::read(dir / checkpoint::model_file);
  const auto state = checkpoint::SafetensorsFile::read(dir / checkpoint::optimizer_file);
  checkpoint::check_model(net, model);
  const auto plan = checkpoint::check_optimizer(net, opt, state);
  checkpoint::write_model(net, model);
  checkpoint::write_optimizer(net, opt, state, plan);
}

} // namespace tandem
