// SPDX-License-Identifier: Apache-2.0
// An optimizer's state (and its LR schedule's) in files: the state's names, hyperparameters and
// step counts, gathered, written, read back and checked before anything changes.
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
#include "tandem/checkpoint/model_state.hpp"
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

} // namespace tandem::checkpoint
