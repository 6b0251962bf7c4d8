// SPDX-License-Identifier: Apache-2.0
// A network's weights in files: gathered from the ranks, written as one file or as shards with
// Hugging Face's index, read back and checked before any parameter changes.
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
#include "tandem/checkpoint/ranks.hpp"
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

} // namespace tandem::checkpoint
