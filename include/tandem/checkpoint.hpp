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
#include "tandem/checkpoint/optimizer_state.hpp"
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
