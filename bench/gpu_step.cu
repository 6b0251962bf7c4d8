// SPDX-License-Identifier: Apache-2.0
// One training step (SGD, cross-entropy) on the CUDA backend, for issue 6's workloads; the numbers
// to put beside PyTorch's (bench/torch_gpu_step.py times the same models and writes the same JSON,
// bench/compare.py puts the two side by side).
//
//   bench_gpu_step [--json PATH] [--only ID,ID] [--steps N] [--warmup N] [--seconds S]
//                  [--repeat N] [--batch-div D] [--devices SPEC] [--host-input] [--allow-host]
//                  [--profile]
//
// Workloads (IDs): seed (10-20-10-2, batch 64), seed_stages (the same with copies forced at the
// boundary, so each stage runs its own kernels instead of one whole-network step; tandem only),
// seed_gpipe4 (the seed with GPipe, 4 micro-batches), mlp256 (8 Linear 256->256, ReLU between,
// batch 1024), mlp256_serial and mlp256_tuned (the same with overlap_gradients off, or with
// tune_products on; tandem only), mlp4096 (4 Linear 4096->4096, batch 8192), mlp4096_tf32 and
// mlp4096_bf16 (mlp4096 with ContextOptions::precision tf32 or bf16). Every network is a Pipeline
// of two stages, Device<0> and Device<1>, which share the GPU on a one-GPU machine.
//
// Each step is timed on the host clock around train_step, which returns the loss and so waits for
// the step's work: the time a user's training loop sees. After the warm-up, at most --steps steps
// are timed, but no more than --seconds of them (at least 5), so a slow build cannot blow the
// caller's time limit; the median is reported with the 10th and 90th percentiles. --repeat N runs
// each variant N times (variants taking turns) and reports the run with the median median, every
// run's median beside it, so run-to-run spread is visible in one process. --batch-div divides
// every batch (a cheap smoke run); the widths are compile-time and cannot shrink.
//
// With no GPU (or TANDEM_DEVICES=host) the CUDA backend is not in use: the program says so, writes
// a JSON file with no results (if asked) and exits 0, so scripts can run it anywhere. --allow-host
// times the host backend instead, which checks the harness itself on such a machine (use a small
// --batch-div: the 4096-wide steps are slow there). Inputs are device tensors (tandem::Tensor), as
// PyTorch's are; --host-input passes pinned host memory instead, to show what its copy costs.
//
// Each workload runs twice: "tandem", every step issued (ContextOptions::graphs off), and "tandem
// graph", the default, where train_step captures the step once and replays it (issue 6, item 4);
// bench/compare.py prints a row per variant.
//
// --profile also prints where an issued seed step's time goes, task by task, from tandem's own
// timeline (see profile()): a profile that needs no Nsight tools.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {

using Seed = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;

template <std::size_t W> using L = Linear<W, W>;
// 8 Linear layers with a ReLU between each pair: four (and the ReLU after the fourth) per stage.
using Mlp256 = Pipeline<Stage<Device<0>, L<256>, ReLU, L<256>, ReLU, L<256>, ReLU, L<256>, ReLU>,
                        Stage<Device<1>, L<256>, ReLU, L<256>, ReLU, L<256>, ReLU, L<256>>>;
// 4 Linear layers, two per stage.
using Mlp4096 = Pipeline<Stage<Device<0>, L<4096>, ReLU, L<4096>, ReLU>, Stage<Device<1>, L<4096>, ReLU, L<4096>>>;

struct Options {
  std::string json, only, devices;
  int steps = 0;   // 0: each workload's own default
  int warmup = -1; // -1: each workload's own default
  double seconds = 15;
  int repeat = 1;       // runs of each variant, taking turns; the median run is reported
  bool profile = false; // also time the seed workloads' tasks (profile())
  std::size_t batch_div = 1;
  bool host_input = false;
  bool allow_host = false; // time the host backend too: checks this harness on a machine without a GPU
};

struct Result {
  std::string id, label, variant, input;
  std::string error; // why the workload did not run; the timings are then 0
  std::size_t batch = 0;
  int steps = 0, warmup = 0;
  double median_us = 0, p10_us = 0, p90_us = 0;
  std::vector<double> run_medians_us; // every run's median, in run order (--repeat)
  double flop = 0; // nominal: 6 * batch * sum of in*out over the Linear layers (forward 2, backward 4)
  float loss = 0;  // of the last step, to show the step computed something finite
};

// Page-locked host memory: a large cudaMemcpyAsync from it is a real asynchronous DMA, while one
// from pageable memory is staged by the driver. The best a host-side input can do. Ordinary memory
// where there is no CUDA driver (--allow-host runs on a machine without a GPU).
template <class T> class Pinned {
public:
  explicit Pinned(std::size_t n) : n_(n) {
    void *p = nullptr;
    if (cudaMallocHost(&p, std::max<std::size_t>(n, 1) * sizeof(T)) == cudaSuccess) {
      p_ = static_cast<T *>(p);
    } else {
      (void)cudaGetLastError();
      fallback_.resize(n);
      p_ = fallback_.data();
    }
  }
  Pinned(const Pinned &) = delete;
  Pinned &operator=(const Pinned &) = delete;
  ~Pinned() {
    if (fallback_.empty()) (void)cudaFreeHost(p_);
  }
  std::span<T> span() { return {p_, n_}; }
  bool pinned() const { return fallback_.empty(); }

private:
  T *p_ = nullptr;
  std::size_t n_ = 0;
  std::vector<T> fallback_;
};

template <class Net> constexpr double nominal_flop(std::size_t batch) {
  // Parameters count in*out + out per Linear; the biases' share of the FLOPs is negligible and
  // PyTorch's count (the issue's TFLOP/s) leaves it out too. Widths here are uniform per network.
  double macs = 0;
  if constexpr (std::is_same_v<Net, Seed>) macs = 10.0 * 20 + 20.0 * 10 + 10.0 * 2;
  if constexpr (std::is_same_v<Net, Mlp256>) macs = 8.0 * 256 * 256;
  if constexpr (std::is_same_v<Net, Mlp4096>) macs = 4.0 * 4096 * 4096;
  return 6.0 * static_cast<double>(batch) * macs;
}

// The batch a workload runs at: its nominal batch divided by --batch-div, at least 8.
std::size_t batch_of(std::size_t nominal_batch, const Options &o) {
  return std::max<std::size_t>(nominal_batch / std::max<std::size_t>(o.batch_div, 1), 8);
}

// Every workload's data, the same in every run: features uniform in [-1, 1], labels uniform
// over the classes.
template <class Net> void fill_inputs(std::span<float> x, std::span<std::int32_t> y) {
  Random rng(3);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-1, 1));
  for (auto &v : y) v = static_cast<std::int32_t>(rng.next() % Net::out_features);
}

// The inputs as device tensors, each on the stage that reads it (the first stage's device for
// x, the last's for the labels), as PyTorch's inputs are on the GPU.
template <class Net> struct DeviceInputs {
  Tensor<float> x;
  Tensor<std::int32_t> y;
  DeviceInputs(Context &ctx, std::size_t batch, std::span<const float> xs, std::span<const std::int32_t> ys)
      : x(ctx, Net::template stage<0>::device_index, batch, Net::in_features, xs),
        y(ctx, Net::template stage<Net::num_stages - 1>::device_index, batch, std::size_t{1}, ys) {}
};

template <class Net, class Sched>
Result measure(const char *id, const char *label, std::size_t nominal_batch, int default_steps, int default_warmup,
               ContextOptions options, bool graphs, const Sched &sched, const Options &o) {
  options.devices = o.devices;
  options.graphs = graphs;
  Context ctx(options);
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.01f});
  loss::CrossEntropy loss;

  Result r;
  r.id = id;
  r.label = label;
  r.variant = graphs ? "tandem graph" : "tandem";
  r.batch = batch_of(nominal_batch, o);
  r.steps = o.steps > 0 ? o.steps : default_steps;
  r.warmup = o.warmup >= 0 ? o.warmup : default_warmup;
  r.flop = nominal_flop<Net>(r.batch);

  Pinned<float> x(r.batch * Net::in_features);
  Pinned<std::int32_t> y(r.batch);
  fill_inputs<Net>(x.span(), y.span());

  // Device-resident inputs by default: the PyTorch side keeps its inputs on the GPU, so this is the
  // like-for-like number; --host-input adds the copy a host-side input costs in every step.
  std::function<float()> step;
  if (!o.host_input) {
    auto in = std::make_shared<DeviceInputs<Net>>(ctx, r.batch, x.span(), y.span());
    step = [&, in] { return net.train_step(in->x, in->y, loss, opt, sched); };
    r.input = "device tensors";
  } else {
    step = [&] {
      return net.train_step(std::span<const float>(x.span()), std::span<const std::int32_t>(y.span()), loss, opt,
                            sched);
    };
    r.input = x.pinned() ? "pinned host memory, copied in every step" : "host memory";
  }

  for (int i = 0; i < r.warmup; ++i) r.loss = step();
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(r.steps));
  const auto began = std::chrono::steady_clock::now();
  for (int i = 0; i < r.steps; ++i) {
    if (i >= 5 && std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count() > o.seconds) break;
    const auto start = std::chrono::steady_clock::now();
    r.loss = step();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  if (graphs) // a graph variant that never replayed would time issued steps under its name
    std::printf("bench_gpu_step: %s, graph variant: %zu of %d steps replayed%s%s\n", id, net.replayed_steps(),
                r.warmup + static_cast<int>(us.size()),
                net.graph_error().empty() ? "" : "; capture failed: ", net.graph_error().c_str());
  // Which fused paths cuBLASLt took for this workload's shapes (a refused epilogue falls back to
  // kernels, which the step time alone would not tell).
  for (std::size_t logical = 0; logical < Net::num_stages; ++logical)
    if (auto *cx = dynamic_cast<backend::cuda::Executor *>(&ctx.executor(logical)))
      std::printf("bench_gpu_step: %s, %s, Device<%zu> cuBLASLt plans: %s\n", id, r.variant.c_str(), logical,
                  cx->lt_summary().c_str());
  std::sort(us.begin(), us.end());
  r.steps = static_cast<int>(us.size());
  if (!us.empty()) {
    r.median_us = us[us.size() / 2];
    r.p10_us = us[us.size() / 10];
    r.p90_us = us[us.size() * 9 / 10];
  }
  return r;
}

// Of several runs of one variant: the run with the median median (its percentiles with it), and
// every run's median beside it. A failed run is the result.
Result median_run(std::vector<Result> runs) {
  for (const auto &r : runs)
    if (!r.error.empty()) return r;
  std::vector<double> medians;
  for (const auto &r : runs) medians.push_back(r.median_us);
  std::sort(runs.begin(), runs.end(), [](const Result &a, const Result &b) { return a.median_us < b.median_us; });
  Result r = runs[runs.size() / 2];
  r.run_medians_us = medians;
  return r;
}

// --profile: where an issued step's time goes, from tandem's own timeline (events around every
// task on its stream, so GPU time, not issue time): each task's median duration and how often it
// runs per step, beside the median wall time of the whole step (the rest is launch and wait).
// Captured steps cannot be timed task by task: these steps are issued.
template <class Net, class Sched>
void profile(const char *label, std::size_t nominal_batch, ContextOptions options, const Sched &sched,
             const Options &o) {
  options.devices = o.devices;
  options.timeline = true;
  Context ctx(options);
  Net net(ctx, 42);
  optim::SGD opt(net, {.lr = 0.01f});
  loss::CrossEntropy loss;
  const std::size_t batch = batch_of(nominal_batch, o);
  std::vector<float> xs(batch * Net::in_features);
  std::vector<std::int32_t> ys(batch);
  fill_inputs<Net>(xs, ys);
  const DeviceInputs<Net> in(ctx, batch, xs, ys);
  const auto &x = in.x;
  const auto &y = in.y;
  for (int i = 0; i < 20; ++i) net.train_step(x, y, loss, opt, sched);
  ctx.timeline().clear();
  const int steps = 200;
  std::vector<double> wall;
  for (int i = 0; i < steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    net.train_step(x, y, loss, opt, sched);
    wall.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(wall.begin(), wall.end());
  std::printf("profile: %s, batch %zu, issued steps with the timeline on: step %.1f us (median wall time)\n", label,
              batch, wall[wall.size() / 2]);
  // Per task: its track and kind (micro-batches together).
  std::vector<std::pair<std::string, std::vector<double>>> tasks;
  for (const auto &span : ctx.timeline().spans()) {
    const std::string name = ctx.timeline().tracks().at(span.track) + " " + to_string(span.kind);
    auto it = std::find_if(tasks.begin(), tasks.end(), [&](const auto &t) { return t.first == name; });
    if (it == tasks.end()) it = tasks.insert(tasks.end(), {name, {}});
    it->second.push_back(span.duration_us);
  }
  for (auto &[name, us] : tasks) {
    const double per_step = static_cast<double>(us.size()) / steps;
    std::sort(us.begin(), us.end());
    std::printf("  %-36s %8.1f us median  x %.1f per step\n", name.c_str(), us[us.size() / 2], per_step);
  }
}

std::string escape(const std::string &s) {
  std::string out;
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// The schema bench/compare.py reads, shared with torch_gpu_step.py, host_seed_step and
// torch_seed_step.py: {"schema", "impl", "device", "machine": {...}, "skipped", "results": [...]}.
bool write_json(const std::string &path, const std::string &device, const std::string &machine,
                const std::string &skipped, const std::vector<Result> &results) {
  std::ofstream f(path);
  if (!f) return false;
  f << "{\n  \"schema\": \"tandem-bench/1\",\n  \"impl\": \"tandem\",\n  \"device\": \"" << escape(device)
    << "\",\n  \"machine\": " << machine << ",\n  \"skipped\": ";
  if (skipped.empty()) f << "null";
  else f << '"' << escape(skipped) << '"';
  f << ",\n  \"results\": [";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto &r = results[i];
    char nums[512];
    std::snprintf(nums, sizeof nums,
                  "\"batch\": %zu, \"steps\": %d, \"warmup\": %d, \"median_us\": %.3f, \"p10_us\": %.3f, "
                  "\"p90_us\": %.3f, \"flop\": %.6g, \"loss\": %.7g",
                  r.batch, r.steps, r.warmup, r.median_us, r.p10_us, r.p90_us, r.flop, static_cast<double>(r.loss));
    f << (i ? "," : "") << "\n    {\"workload\": \"" << escape(r.id) << "\", \"label\": \"" << escape(r.label)
      << "\", \"variant\": \"" << escape(r.variant) << "\", \"input\": \"" << escape(r.input) << "\", " << nums;
    if (!r.error.empty()) f << ", \"error\": \"" << escape(r.error) << '"';
    f << ", \"run_medians_us\": [";
    for (std::size_t k = 0; k < r.run_medians_us.size(); ++k) {
      char num[32];
      std::snprintf(num, sizeof num, "%s%.3f", k ? ", " : "", r.run_medians_us[k]);
      f << num;
    }
    f << "]}";
  }
  f << "\n  ]\n}\n";
  return static_cast<bool>(f);
}

void usage(std::FILE *to) {
  std::fputs("usage: bench_gpu_step [--json PATH] [--only ID,ID] [--steps N] [--warmup N] [--seconds S]\n"
             "                      [--repeat N] [--batch-div D] [--devices SPEC] [--host-input] [--allow-host]\n"
             "                      [--profile]\n"
             "IDs: seed seed_stages seed_gpipe4 mlp256 mlp4096 mlp4096_tf32 mlp4096_bf16\n",
             to);
}

std::optional<Options> parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
    const char *v = nullptr;
    if (a == "--host-input") o.host_input = true;
    else if (a == "--profile") o.profile = true;
    else if (a == "--allow-host") o.allow_host = true;
    else if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (!(v = value())) return std::nullopt;
    else if (a == "--json") o.json = v;
    else if (a == "--only") o.only = v;
    else if (a == "--devices") o.devices = v;
    else if (a == "--steps") o.steps = std::atoi(v);
    else if (a == "--warmup") o.warmup = std::atoi(v);
    else if (a == "--seconds") o.seconds = std::atof(v);
    else if (a == "--repeat") o.repeat = std::max(1, std::atoi(v));
    else if (a == "--batch-div") o.batch_div = static_cast<std::size_t>(std::max(1, std::atoi(v)));
    else return std::nullopt;
  }
  return o;
}

bool selected(const Options &o, const std::string &id) {
  if (o.only.empty()) return true;
  std::stringstream ss(o.only);
  for (std::string item; std::getline(ss, item, ',');)
    if (item == id) return true;
  return false;
}

} // namespace

int main(int argc, char **argv) {
  const auto parsed = parse(argc, argv);
  if (!parsed) {
    usage(stderr);
    return 2;
  }
  const Options &o = *parsed;

  // The mapping the workloads will get; also tells whether the CUDA backend is in use at all.
  Context probe({.devices = o.devices});
  std::string device = "host", machine = "{}";
  if (probe.backend() != backend::Kind::cuda && !o.allow_host) {
    const char *why = "no CUDA GPU in use (none found, or TANDEM_DEVICES=host): the CUDA backend is not "
                      "running, so there is nothing to time";
    std::printf("bench_gpu_step: %s\n", why);
    if (!o.json.empty() && !write_json(o.json, device, machine, why, {})) {
      std::fprintf(stderr, "bench_gpu_step: cannot write %s\n", o.json.c_str());
      return 1;
    }
    return 0;
  }
  int gpu = -1, runtime = 0, driver = 0;
  if (auto *cx = dynamic_cast<backend::cuda::Executor *>(&probe.executor(0))) gpu = cx->device();
  (void)probe.executor(1);
  cudaDeviceProp prop{};
  if (gpu >= 0 && cudaGetDeviceProperties(&prop, gpu) == cudaSuccess) device = prop.name;
  (void)cudaRuntimeGetVersion(&runtime);
  (void)cudaDriverGetVersion(&driver);
  {
    std::ostringstream m;
    m << "{\"gpu\": " << gpu << ", \"cuda_runtime\": " << runtime << ", \"cuda_driver\": " << driver << ", \"sm\": \""
      << prop.major << prop.minor << "\", \"mapping\": \"" << escape(probe.describe()) << "\"}";
    machine = m.str();
  }
  std::printf("bench_gpu_step: %s (device %d), CUDA runtime %d, driver %d; one SGD training step, fp32 unless "
              "said\n",
              device.c_str(), gpu, runtime, driver);
  std::fputs(probe.describe().c_str(), stdout);

  std::vector<Result> results;
  int failed = 0;
  // Each variant runs --repeat times, the variants taking turns, so that a drift of the machine
  // (clocks, a neighbour) shows as spread rather than as a difference between variants.
  auto add = [&](const char *id, const char *label, auto &&run) {
    if (!selected(o, id)) return;
    std::vector<Result> runs[2];
    for (int rep = 0; rep < o.repeat; ++rep)
      for (const bool graphs : {false, true}) {
        if (!runs[graphs].empty() && !runs[graphs].back().error.empty()) continue; // failed once: not again
        try {
          runs[graphs].push_back(run(id, label, graphs));
        } catch (const std::exception &e) {
          // One workload failing (out of memory on a small card, say) should not cost the others;
          // the JSON says which failed and why.
          std::fprintf(stderr, "bench_gpu_step: %s failed: %s\n", id, e.what());
          Result failure;
          failure.id = id;
          failure.label = label;
          failure.variant = graphs ? "tandem graph" : "tandem";
          failure.error = e.what();
          runs[graphs].push_back(failure);
          ++failed;
        }
      }
    for (auto &r : runs) results.push_back(median_run(r));
  };
  // id, label, nominal batch, default timed steps and warm-up steps, precision, schedule.
  add("seed", "seed model 10-20-10-2", [&](const char *id, const char *label, bool graphs) {
    return measure<Seed>(id, label, 64, 2000, 200, {}, graphs, schedule::Naive{}, o);
  });
  // The seed step as two GPUs would take it: each stage's fused kernels and a copy at the boundary,
  // instead of one whole-network kernel (beside "seed", it shows what that fusion buys).
  add("seed_stages", "seed model, stage by stage (copies forced)", [&](const char *id, const char *label, bool graphs) {
    return measure<Seed>(id, label, 64, 2000, 200, {.force_copies = true}, graphs, schedule::Naive{}, o);
  });
  add("seed_gpipe4", "seed model 10-20-10-2, GPipe m=4", [&](const char *id, const char *label, bool graphs) {
    return measure<Seed>(id, label, 64, 2000, 200, {}, graphs, schedule::GPipe{.micro_batches = 4}, o);
  });
  add("mlp256", "MLP 256 wide, 8 Linear", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp256>(id, label, 1024, 1000, 100, {}, graphs, schedule::Naive{}, o);
  });
  // The same with every weight gradient after its input gradient on one stream: beside "mlp256",
  // it shows what running the two products side by side buys (ContextOptions::overlap_gradients).
  add("mlp256_serial", "MLP 256 wide, gradients in series", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp256>(id, label, 1024, 1000, 100, {.overlap_gradients = false}, graphs, schedule::Naive{}, o);
  });
  // With cuBLASLt's candidate algorithms timed once per shape (ContextOptions::tune_products).
  add("mlp256_tuned", "MLP 256 wide, products tuned", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp256>(id, label, 1024, 1000, 100, {.tune_products = true}, graphs, schedule::Naive{}, o);
  });
  add("mlp4096", "MLP 4096 wide, 4 Linear", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp4096>(id, label, 8192, 100, 5, {}, graphs, schedule::Naive{}, o);
  });
  add("mlp4096_tf32", "MLP 4096 wide, 4 Linear, TF32", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp4096>(id, label, 8192, 100, 5, {.precision = Precision::tf32}, graphs, schedule::Naive{}, o);
  });
  add("mlp4096_bf16", "MLP 4096 wide, 4 Linear, bf16", [&](const char *id, const char *label, bool graphs) {
    return measure<Mlp4096>(id, label, 8192, 100, 5, {.precision = Precision::bf16}, graphs, schedule::Naive{}, o);
  });

  if (o.profile) {
    if (selected(o, "seed")) profile<Seed>("seed model 10-20-10-2", 64, {}, schedule::Naive{}, o);
    if (selected(o, "seed_stages"))
      profile<Seed>("seed model, stage by stage (copies forced)", 64, {.force_copies = true}, schedule::Naive{}, o);
    if (selected(o, "seed_gpipe4"))
      profile<Seed>("seed model 10-20-10-2, GPipe m=4", 64, {}, schedule::GPipe{.micro_batches = 4}, o);
  }

  std::printf("%-44s %-12s %6s %6s %11s %10s %10s %8s %11s %s\n", "workload", "variant", "batch", "steps", "median us",
              "p10", "p90", "TFLOP/s", "loss", "run medians (us)");
  for (const auto &r : results) {
    if (!r.error.empty()) {
      std::printf("%-44s %-12s FAILED: %s\n", r.label.c_str(), r.variant.c_str(), r.error.c_str());
      continue;
    }
    std::string medians;
    for (const double m : r.run_medians_us) {
      char num[32];
      std::snprintf(num, sizeof num, "%s%.1f", medians.empty() ? "" : " ", m);
      medians += num;
    }
    std::printf("%-44s %-12s %6zu %6d %11.1f %10.1f %10.1f %8.2f %11.5g %s\n", r.label.c_str(), r.variant.c_str(),
                r.batch, r.steps, r.median_us, r.p10_us, r.p90_us, r.median_us > 0 ? r.flop / r.median_us / 1e6 : 0.0,
                static_cast<double>(r.loss), medians.c_str());
  }
  for (const auto &r : results)
    if (!r.input.empty()) {
      std::printf("input: %s\n", r.input.c_str());
      break;
    }
  if (!o.json.empty() && !write_json(o.json, device, machine, "", results)) {
    std::fprintf(stderr, "bench_gpu_step: cannot write %s\n", o.json.c_str());
    return 1;
  }
  return failed ? 1 : 0;
}
