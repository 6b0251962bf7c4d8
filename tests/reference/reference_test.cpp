// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch. For one named case this program draws a network's initial weights (tandem's
// own init) and the training data, writes them to a temporary folder, and has
// torch_reference.py build the same network with torch.nn from those weights, train it the same
// way, and write back its losses, outputs, parameters and gradients. Then it trains its own copy
// and compares every tensor.
//
// Error, per tensor, norm-wise: max_i |tandem_i - torch_i| / max(max_i |torch_i|, 1e-30). A case
// passes when every tensor's error is <= 1e-5 on the host backend (1e-4 on a GPU, TF32 off).
//
//   usage: tandem_reference <case> <python with torch> <torch_reference.py>
//          tandem_reference --list             the cases, one a line
//          tandem_reference --expect <cases...> fails unless exactly these cases exist (CMake's list)
// Exit status 77 (CTest SKIP_RETURN_CODE) when no Python with torch was found at configure time.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <tandem/tandem.hpp>

#include "exchange.hpp"

using namespace tandem;
namespace fs = std::filesystem;

namespace {

constexpr int skip_status = 77;

using reference::array;
using reference::number;

// ---- the network, described for torch.nn ----

template <class L> struct is_linear : std::false_type {};
template <std::size_t I, std::size_t O> struct is_linear<Linear<I, O>> : std::true_type {};

template <class L> std::string layer_json() {
  if constexpr (is_linear<L>::value) {
    return "{\"type\":\"linear\",\"in\":" + std::to_string(L::in_features) +
           ",\"out\":" + std::to_string(L::out_features) + "}";
  } else {
    static_assert(
        requires { L::activation; }, "reference tests know Linear and the activation layers only");
    const char *names[] = {"identity", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh"};
    return std::string("{\"type\":\"") + names[static_cast<int>(L::activation)] + "\"}";
  }
}

template <class St, std::size_t... J> std::string stage_json(std::index_sequence<J...>) {
  std::string s = "[";
  ((s += (J ? "," : "") + layer_json<typename St::template layer<J>>()), ...);
  return s + "]";
}

template <class Net, std::size_t... I> std::string stages_json(std::index_sequence<I...>) {
  std::string s = "[";
  using Stages = std::tuple<typename Net::template stage<I>...>;
  ((s += (I ? "," : "") + stage_json<std::tuple_element_t<I, Stages>>(
                              std::make_index_sequence<std::tuple_element_t<I, Stages>::num_layers>{})),
   ...);
  return s + "]";
}

std::string optimizer_json(const optim::SGDOptions &o) {
  return "{\"type\":\"sgd\",\"lr\":" + number(o.lr) + ",\"momentum\":" + number(o.momentum) +
         ",\"dampening\":" + number(o.dampening) + ",\"weight_decay\":" + number(o.weight_decay) +
         ",\"nesterov\":" + (o.nesterov ? "true" : "false") + "}";
}
template <class O> std::string adam_json(const char *type, const O &o) {
  return std::string("{\"type\":\"") + type + "\",\"lr\":" + number(o.lr) + ",\"betas\":[" + number(o.betas.first) +
         "," + number(o.betas.second) + "],\"eps\":" + number(o.eps) + ",\"weight_decay\":" + number(o.weight_decay) +
         ",\"amsgrad\":" + (o.amsgrad ? "true" : "false") + "}";
}
std::string optimizer_json(const optim::AdamOptions &o) { return adam_json("adam", o); }
std::string optimizer_json(const optim::AdamWOptions &o) { return adam_json("adamw", o); }

const char *loss_name(const loss::CrossEntropy &) { return "cross_entropy"; }
const char *loss_name(const loss::MSE &) { return "mse"; }

// ---- data ----

std::vector<float> draw(Random &rng, std::size_t n, double lo, double hi) {
  std::vector<float> v(n);
  for (auto &x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}
template <class Loss> auto targets(Random &rng, std::size_t batch, std::size_t outputs) {
  if constexpr (std::is_same_v<Loss, loss::CrossEntropy>) {
    std::vector<std::int32_t> y(batch);
    for (auto &v : y) v = static_cast<std::int32_t>(rng.next() % outputs);
    return y;
  } else {
    return draw(rng, batch * outputs, -1, 1);
  }
}

// ---- comparison ----

using reference::read_tensors;
using reference::Tensors;

struct Comparison {
  std::string name;
  double error;
};

using reference::norm_wise_error;

// Trains Net with options `opt_options` and Loss for len(batches) steps (batch k of size
// batches[k], fresh data each step unless `repeat`), in tandem and in PyTorch, and compares.
template <class Net, class Loss, class OptOptions, class Sched = schedule::Naive>
int run_case(Context &given, const std::string &name, const std::string &python, const std::string &script,
             std::vector<std::size_t> batches, OptOptions opt_options, bool repeat = false, Sched sched = {},
             Precision precision = Precision::fp32) {
  // Reduced precision needs a context of its own (on the same backend: TANDEM_DEVICES applies).
  std::optional<Context> own;
  if (precision != Precision::fp32) own.emplace(ContextOptions{.precision = precision});
  Context &ctx = own ? *own : given;
  using Opt =
      std::conditional_t<std::is_same_v<OptOptions, optim::SGDOptions>, optim::SGD,
                         std::conditional_t<std::is_same_v<OptOptions, optim::AdamOptions>, optim::Adam, optim::AdamW>>;
  constexpr std::size_t in = Net::in_features, out = Net::out_features;
  Net net(ctx, /*seed=*/1234);
  Opt opt(net, opt_options);
  Loss loss;

  // Data: each step its own batch (or the first one again, as the seed trains on one batch).
  Random rng(std::hash<std::string>{}(name) | 1);
  using Target = typename Loss::template target_type<float>;
  std::vector<std::vector<float>> xs;
  std::vector<std::vector<Target>> ys;
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (repeat && k > 0) {
      xs.push_back(xs[0]);
      ys.push_back(ys[0]);
      continue;
    }
    xs.push_back(draw(rng, batches[k] * in, -2, 2));
    ys.push_back(targets<Loss>(rng, batches[k], out));
  }
  const std::vector<float> eval_x = draw(rng, 16 * in, -2, 2);

  // The exchange folder: ours, new, and removed when the case passes.
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("tandem_reference_" + name + "_" + std::to_string(rd()));
  fs::create_directories(dir);
  {
    std::ofstream js(dir / "input.json");
    js << "{\"case\":\"" << name << "\",\"in_features\":" << in << ",\"out_features\":" << out
       << ",\"stages\":" << stages_json<Net>(std::make_index_sequence<Net::num_stages>{}) << ",\"loss\":\""
       << loss_name(loss) << "\",\"optimizer\":" << optimizer_json(opt_options) << ",\"precision\":\""
       << tandem::name(precision) << "\",\"parameters\":{";
    bool first = true;
    for (const auto &p : net.parameters()) {
      js << (first ? "" : ",") << "\"" << p.name() << "\":{\"shape\":[" << p.rows();
      if (p.cols() > 1) js << "," << p.cols();
      js << "],\"values\":" << array(p.to_host()) << "}";
      first = false;
    }
    js << "},\"steps\":[";
    for (std::size_t k = 0; k < xs.size(); ++k)
      js << (k ? "," : "") << "{\"x\":" << array(xs[k]) << ",\"y\":" << array(ys[k]) << "}";
    js << "],\"eval_x\":" << array(eval_x) << "}\n";
    if (!js) throw std::runtime_error("cannot write " + (dir / "input.json").string());
  }

  const std::string command = "'" + python + "' '" + script + "' '" + (dir / "input.json").string() + "' '" +
                              (dir / "output.txt").string() + "'";
  if (std::system(command.c_str()) != 0) {
    std::printf("FAILED: the PyTorch side failed: %s\n(inputs kept in %s)\n", command.c_str(), dir.c_str());
    return 1;
  }
  const Tensors want = read_tensors(dir / "output.txt");

  // tandem's run.
  Tensors got;
  for (std::size_t k = 0; k < xs.size(); ++k)
    got["loss." + std::to_string(k)] = {net.train_step(xs[k], ys[k], loss, opt, sched)};
  const auto eval = net.forward(std::span<const float>(eval_x));
  got["output"].assign(eval.begin(), eval.end());
  for (const auto &p : net.parameters()) {
    const auto v = p.to_host(), g = p.grad_to_host();
    got["param." + p.name()].assign(v.begin(), v.end());
    got["grad." + p.name()].assign(g.begin(), g.end());
  }

  // bf16: PyTorch's autocast also rounds each Linear's output (and so the next one's input and
  // the gradients flowing back) to bfloat16, where tandem keeps float32; eight of bf16's units
  // in the last place (2^-8 each) cover the few roundings between the two along the network.
  const double tolerance =
      precision == Precision::bf16 ? 8 * 0x1p-8 : (ctx.backend() == backend::Kind::host ? 1e-5 : 1e-4);
  std::vector<Comparison> results;
  bool ok = true;
  for (const auto &[key, mine] : got) {
    const auto it = want.find(key);
    if (it == want.end() || it->second.size() != mine.size()) {
      std::printf("FAILED: PyTorch gave no tensor '%s' of %zu values\n", key.c_str(), mine.size());
      ok = false;
      continue;
    }
    results.push_back({key, norm_wise_error(mine, it->second)});
  }
  if (want.size() != got.size()) {
    std::printf("FAILED: PyTorch wrote %zu tensors, tandem %zu\n", want.size(), got.size());
    ok = false;
  }
  for (const auto &r : results) {
    const bool pass = r.error <= tolerance;
    ok = ok && pass;
    std::printf("  %-28s %.3e%s\n", r.name.c_str(), r.error, pass ? "" : "  <- exceeds tolerance");
  }
  const auto worst =
      std::max_element(results.begin(), results.end(), [](const auto &a, const auto &b) { return a.error < b.error; });
  std::printf("reference case '%s' on %s: max relative error %.3e (%s), tolerance %.0e: %s\n", name.c_str(),
              net.parameters()[0].executor().name().c_str(), worst == results.end() ? 0.0 : worst->error,
              worst == results.end() ? "-" : worst->name.c_str(), tolerance, ok ? "passed" : "FAILED");
  std::printf("losses (tandem / torch):");
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const std::string key = "loss." + std::to_string(k);
    std::printf(" %.6f/%.6f", got[key][0], want.count(key) ? want.at(key)[0] : NAN);
  }
  std::printf("\n");
  if (ok) fs::remove_all(dir);
  else std::printf("(exchange files kept in %s)\n", dir.c_str());
  return ok ? 0 : 1;
}

// The seed: 10-20-10-2 over two devices.
using SeedNet = Pipeline<Stage<Device<0>, Linear<10, 20>, ReLU>, Stage<Device<1>, Linear<20, 10>, ReLU, Linear<10, 2>>>;
// Every activation, three stages.
using ActivationsNet = Pipeline<Stage<Device<0>, Linear<8, 16>, ReLU, Linear<16, 16>, Sigmoid>,
                                Stage<Device<1>, Linear<16, 12>, Tanh, Linear<12, 12>, GELU>,
                                Stage<Device<2>, Linear<12, 10>, GELUTanh, Linear<10, 4>, Identity>>;
// A wider net for the optimizers, with an activation-first stage (in-place boundary).
using OptimNet = Pipeline<Stage<Device<0>, Linear<12, 24>, Tanh>, Stage<Device<1>, GELU, Linear<24, 16>, ReLU>,
                          Stage<Device<2>, Linear<16, 5>>>;

using CE = loss::CrossEntropy;
using MSE = loss::MSE;
using Run = int (*)(Context &, const std::string &, const std::string &, const std::string &);

const std::map<std::string, Run> cases = {
    {"seed",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<SeedNet, CE>(c, n, py, s, {64, 64, 64, 64, 64}, optim::SGDOptions{.lr = 0.01f}, true);
     }},
    {"activations",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<ActivationsNet, CE>(c, n, py, s, {32, 32, 32, 32, 32}, optim::SGDOptions{.lr = 0.1f});
     }},
    {"activations_mse",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<ActivationsNet, MSE>(c, n, py, s, {32, 32, 32, 32, 32}, optim::SGDOptions{.lr = 0.1f});
     }},
    {"sgd_nesterov",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, CE>(
           c, n, py, s, {48, 48, 48, 48, 48},
           optim::SGDOptions{.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-2f, .nesterov = true});
     }},
    {"sgd_dampening",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, MSE>(
           c, n, py, s, {48, 48, 48, 48, 48},
           optim::SGDOptions{.lr = 0.05f, .momentum = 0.8f, .dampening = 0.3f, .weight_decay = 1e-3f});
     }},
    {"adam",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, CE>(c, n, py, s, {48, 48, 48, 48, 48}, optim::AdamOptions{.lr = 1e-2f});
     }},
    {"adam_l2",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, MSE>(
           c, n, py, s, {48, 48, 48, 48, 48},
           optim::AdamOptions{.lr = 1e-2f, .betas = {0.8f, 0.99f}, .eps = 1e-6f, .weight_decay = 0.1f});
     }},
    {"adam_amsgrad",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, CE>(c, n, py, s, {48, 48, 48, 48, 48},
                                     optim::AdamOptions{.lr = 1e-2f, .betas = {0.9f, 0.9f}, .amsgrad = true});
     }},
    {"adamw",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, MSE>(c, n, py, s, {48, 48, 48, 48, 48}, optim::AdamWOptions{.lr = 1e-2f});
     }},
    {"adamw_amsgrad",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, CE>(c, n, py, s, {48, 48, 48, 48, 48},
                                     optim::AdamWOptions{.lr = 1e-2f, .weight_decay = 0.1f, .amsgrad = true});
     }},
    {"batch_change",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<SeedNet, CE>(c, n, py, s, {64, 64, 37, 1, 64},
                                    optim::SGDOptions{.lr = 0.05f, .momentum = 0.9f, .nesterov = true});
     }},
    {"batch_change_adam",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<ActivationsNet, MSE>(c, n, py, s, {64, 64, 37, 1, 64},
                                            optim::AdamOptions{.lr = 1e-2f});
     }},
    // Schedules change speed and memory, never the result: micro-batches that do not divide the
    // batch evenly still give PyTorch's whole-batch numbers.
    {"gpipe",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<ActivationsNet, CE>(c, n, py, s, {64, 37, 64}, optim::AdamOptions{.lr = 1e-2f}, false,
                                           schedule::GPipe{.micro_batches = 4});
     }},
    // Precision::bf16 against torch.autocast(dtype=bfloat16) on the CPU: the seed's network and
    // data, with GPipe's micro-batches, at the tolerance bfloat16 allows.
    {"autocast_bf16",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<SeedNet, CE>(c, n, py, s, {64, 64, 64, 64, 64}, optim::SGDOptions{.lr = 0.01f}, false,
                                    schedule::GPipe{.micro_batches = 2}, Precision::bf16);
     }},
    {"one_f_one_b",
     [](Context &c, const std::string &n, const std::string &py, const std::string &s) {
       return run_case<OptimNet, MSE>(c, n, py, s, {64, 37, 64},
                                      optim::SGDOptions{.lr = 0.05f, .momentum = 0.9f}, false,
                                      schedule::OneFOneB{.micro_batches = 5});
     }},
};

} // namespace

int main(int argc, char **argv) {
  if (argc == 2 && std::string(argv[1]) == "--list") {
    for (const auto &[name, run] : cases) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (argc >= 2 && std::string(argv[1]) == "--expect") {
    std::set<std::string> expected(argv + 2, argv + argc);
    bool same = expected.size() == cases.size();
    for (const auto &[name, run] : cases)
      if (!expected.count(name)) {
        std::printf("case '%s' is not registered in tests/reference/CMakeLists.txt\n", name.c_str());
        same = false;
      }
    for (const auto &name : expected)
      if (!cases.count(name)) {
        std::printf("tests/reference/CMakeLists.txt registers '%s', which is no case\n", name.c_str());
        same = false;
      }
    return same ? 0 : 1;
  }
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <case> <python with torch> <torch_reference.py> | --list\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1], python = argv[2], script = argv[3];
  const auto it = cases.find(name);
  if (it == cases.end()) {
    std::fprintf(stderr, "unknown case '%s' (see --list)\n", name.c_str());
    return 2;
  }
  if (python.empty() || python.ends_with("NOTFOUND")) {
    std::printf("SKIPPED: no Python with torch was found when CMake configured this build; install python3-torch "
                "(or set -DTANDEM_TORCH_PYTHON=/path/to/python) and reconfigure to run the PyTorch reference "
                "tests\n");
    return skip_status;
  }
  try {
    Context ctx;
#ifdef __CUDACC__
    // The .cuda build is the GPU variant (label gpu): on the host it would only repeat the host test.
    if (ctx.backend() != backend::Kind::cuda) {
      std::printf("SKIPPED: no CUDA GPU in use; this is the GPU variant of reference case '%s'\n", name.c_str());
      return skip_status;
    }
#endif
    return it->second(ctx, name, python, script);
  } catch (const std::exception &e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
