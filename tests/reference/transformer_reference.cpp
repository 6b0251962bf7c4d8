// SPDX-License-Identifier: Apache-2.0
// The transformer layers against PyTorch (label `reference`).
//
// Layer cases, in float64 on both sides: one layer's forward, input gradient and parameter
// gradients for random weights, input and output gradient, against the same module of torch.nn
// (transformer_reference.py). Error per tensor norm-wise (exchange.hpp); tolerance 1e-10.
//
// GPT cases: a two-stage character-level GPT (embeddings, attention and MLP blocks, LayerNorm, a
// head) trained four steps with AdamW under a schedule, tandem in float32 against PyTorch in
// float64 from the same weights: losses, outputs, parameters and gradients within 1e-4.
//
//   usage: tandem_transformer_reference <case> <python with torch> <transformer_reference.py>
//          tandem_transformer_reference --expect <cases...>
// Exit status 77 when no Python with torch was found at configure time.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <tandem/tandem.hpp>
#ifdef TANDEM_REFERENCE_CHECKPOINTS
#include <tandem/checkpoint.hpp>
#endif

#include "exchange.hpp"

using namespace tandem;
using reference::array;
using reference::number;
namespace fs = std::filesystem;

namespace {

constexpr int skip_status = 77;

// ---- a layer, described for torch.nn (transformer_reference.py builds it) ----

template <class L> struct Describe;
template <std::size_t I, std::size_t O> struct Describe<Linear<I, O>> {
  static std::string json() {
    return "{\"type\":\"linear\",\"in\":" + std::to_string(I) + ",\"out\":" + std::to_string(O) + "}";
  }
};
template <> struct Describe<GELU> {
  static std::string json() { return "{\"type\":\"gelu\"}"; }
};
template <> struct Describe<ReLU> {
  static std::string json() { return "{\"type\":\"relu\"}"; }
};
template <std::size_t V, std::size_t D> struct Describe<Embedding<V, D>> {
  static std::string json() {
    return "{\"type\":\"embedding\",\"vocab\":" + std::to_string(V) + ",\"dim\":" + std::to_string(D) + "}";
  }
};
template <std::size_t T, std::size_t D> struct Describe<PositionalEmbedding<T, D>> {
  static std::string json() {
    return "{\"type\":\"positional\",\"seq\":" + std::to_string(T) + ",\"dim\":" + std::to_string(D) + "}";
  }
};
template <std::size_t D> struct Describe<LayerNorm<D>> {
  static std::string json() { return "{\"type\":\"layer_norm\",\"dim\":" + std::to_string(D) + "}"; }
};
template <std::size_t D, std::size_t H, std::size_t T> struct Describe<CausalSelfAttention<D, H, T>> {
  static std::string json() {
    return "{\"type\":\"attention\",\"dim\":" + std::to_string(D) + ",\"heads\":" + std::to_string(H) +
           ",\"seq\":" + std::to_string(T) + "}";
  }
};
template <class... Ls> std::string list_json() {
  std::string s = "[";
  ((s += (s.size() > 1 ? "," : "") + Describe<Ls>::json()), ...);
  return s + "]";
}
template <class... Ls> struct Describe<Residual<Ls...>> {
  static std::string json() { return "{\"type\":\"residual\",\"layers\":" + list_json<Ls...>() + "}"; }
};
template <class St, std::size_t... J> std::string stage_json(std::index_sequence<J...>) {
  return list_json<typename St::template layer<J>...>();
}
template <class Net, std::size_t... I> std::string stages_json(std::index_sequence<I...>) {
  std::string s = "[";
  ((s += (I ? "," : "") +
         stage_json<typename Net::template stage<I>>(std::make_index_sequence<Net::template stage<I>::num_layers>{})),
   ...);
  return s + "]";
}

// ---- running the PyTorch side ----

struct Exchange {
  fs::path dir;
  explicit Exchange(const std::string &name) {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("tandem_transformer_" + name + "_" + std::to_string(rd()));
    fs::create_directories(dir);
  }
  fs::path input() const { return dir / "input.json"; }
  // Runs the script on input.json and reads its tensors; empty on failure.
  std::optional<reference::Tensors> run(const std::string &python, const std::string &script) const {
    const std::string command =
        "'" + python + "' '" + script + "' '" + input().string() + "' '" + (dir / "output.txt").string() + "'";
    if (std::system(command.c_str()) != 0) {
      std::printf("FAILED: the PyTorch side failed: %s\n(inputs kept in %s)\n", command.c_str(), dir.c_str());
      return std::nullopt;
    }
    return reference::read_tensors(dir / "output.txt");
  }
};

// Compares every tensor tandem computed with PyTorch's; prints each error; true when all pass.
bool compare(const std::string &name, const reference::Tensors &got, const reference::Tensors &want, double tolerance,
             const Exchange &exchange) {
  bool ok = want.size() == got.size();
  if (!ok) std::printf("FAILED: PyTorch wrote %zu tensors, tandem %zu\n", want.size(), got.size());
  double worst = 0;
  for (const auto &[key, mine] : got) {
    const auto it = want.find(key);
    if (it == want.end() || it->second.size() != mine.size()) {
      std::printf("FAILED: PyTorch gave no tensor '%s' of %zu values\n", key.c_str(), mine.size());
      ok = false;
      continue;
    }
    const double e = reference::norm_wise_error(mine, it->second);
    worst = std::max(worst, e);
    ok = ok && e <= tolerance;
    std::printf("  %-36s %.3e%s\n", key.c_str(), e, e <= tolerance ? "" : "  <- exceeds tolerance");
  }
  std::printf("reference case '%s': max relative error %.3e, tolerance %.0e: %s\n", name.c_str(), worst, tolerance,
              ok ? "passed" : "FAILED");
  if (ok) fs::remove_all(exchange.dir);
  else std::printf("(exchange files kept in %s)\n", exchange.dir.c_str());
  return ok;
}

// ---- layer cases: one layer in float64 ----

// L's forward on `samples` samples (sequences where it reads them), then its backward for a random
// output gradient, on a host executor, against the same torch.nn module.
template <class L>
int layer_case(const std::string &name, const std::string &python, const std::string &script, std::size_t width = 0) {
  constexpr std::size_t per_sample = sequence_length<L>() ? sequence_length<L>() : 1;
  constexpr bool tokens = std::is_same_v<layer_input_t<L, double>, std::int32_t>;
  const std::size_t samples = 3, rows = samples * per_sample;
  const std::size_t in = L::in_features ? L::in_features : width, out = L::out_features ? L::out_features : in;
  Random rng(std::hash<std::string>{}(name) | 1);
  std::vector<float> init(parameter_count_v<L>);
  L::init(std::span<float>(init), in, rng);
  std::vector<double> params(init.size()), x(rows * in), dy(rows * out);
  // Away from the initial constants (LayerNorm's ones and zeros, attention's zero biases).
  for (std::size_t i = 0; i < params.size(); ++i) params[i] = init[i] + rng.uniform(-0.5, 0.5);
  std::vector<std::int32_t> ids(rows);
  if constexpr (tokens) {
    for (auto &t : ids) t = static_cast<std::int32_t>(rng.next() % L::vocabulary);
    std::copy(ids.begin(), ids.end(), reinterpret_cast<std::int32_t *>(x.data()));
  } else {
    for (auto &v : x) v = rng.uniform(-2, 2);
  }
  for (auto &v : dy) v = rng.uniform(-1, 1);

  Exchange exchange(name);
  {
    std::ofstream js(exchange.input());
    js << "{\"case\":\"" << name << "\",\"kind\":\"layer\",\"layer\":" << Describe<L>::json()
       << ",\"samples\":" << samples << ",\"seq\":" << per_sample << ",\"in\":" << in << ",\"out\":" << out
       << ",\"x\":" << (tokens ? array(ids) : array(x)) << ",\"dy\":" << array(dy) << ",\"parameters\":{";
    std::size_t at = 0;
    for (std::size_t k = 0; k < L::parameters.size(); ++k) {
      const ParameterSpec &p = L::parameters[k];
      std::vector<double> values(params.begin() + at, params.begin() + at + p.size());
      js << (k ? "," : "") << "\"" << p.name << "\":{\"shape\":[" << p.rows << (p.cols > 1 ? "," : "")
         << (p.cols > 1 ? std::to_string(p.cols) : "") << "],\"values\":" << array(values) << "}";
      at += p.size();
    }
    js << "}}\n";
  }
  const auto want = exchange.run(python, script);
  if (!want) return 1;

  backend::host::Executor ex(0);
  std::vector<double> y(rows * out), dx(rows * in), grads(params.size()), saved(rows * saved_values<L>(in)),
      scratch(rows * scratch_values<L>(in));
  ex.submit([&] {
    L::forward(ex, LayerForward<double>{.rows = rows,
                                        .in = in,
                                        .out = out,
                                        .params = params.data(),
                                        .x = x.data(),
                                        .y = y.data(),
                                        .saved = saved.data(),
                                        .scratch = scratch.data()});
    L::backward(ex, LayerBackward<double>{.rows = rows,
                                          .in = in,
                                          .out = out,
                                          .params = params.data(),
                                          .grads = grads.data(),
                                          .x = x.data(),
                                          .y = y.data(),
                                          .dy = dy.data(),
                                          .dx = tokens ? nullptr : dx.data(),
                                          .saved = saved.data(),
                                          .scratch = scratch.data()});
  });
  ex.synchronize();
  reference::Tensors got;
  got["output"] = y;
  if (!tokens) got["grad.input"] = dx;
  std::size_t at = 0;
  for (const ParameterSpec &p : L::parameters) {
    got["grad." + std::string(p.name)].assign(grads.begin() + at, grads.begin() + at + p.size());
    at += p.size();
  }
  return compare(name, got, *want, 1e-10, exchange) ? 0 : 1;
}

// ---- GPT cases: a pipeline in float32 against PyTorch in float64 ----

constexpr std::size_t V = 29, T = 8, D = 32, H = 4;
using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, H, T>>;
using Mlp = Residual<LayerNorm<D>, Linear<D, 4 * D>, GELU, Linear<4 * D, D>>;
using GPT = Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn, Mlp>,
                     Stage<Device<1>, Attn, Mlp, LayerNorm<D>, Linear<D, V>>>;

template <class Sched>
int gpt_case(const std::string &name, const std::string &python, const std::string &script, Sched sched) {
  Context ctx;
  GPT net(ctx, 7);
  const optim::AdamWOptions options{.lr = 3e-3f, .weight_decay = 0.05f};
  optim::AdamW opt(net, options);
  const std::size_t sequences = 5, steps = 4;
  Random rng(std::hash<std::string>{}(name) | 1);
  std::vector<std::vector<std::int32_t>> xs(steps), ys(steps);
  for (std::size_t k = 0; k < steps; ++k) {
    xs[k].resize(sequences * T), ys[k].resize(sequences * T);
    for (auto &t : xs[k]) t = static_cast<std::int32_t>(rng.next() % V);
    for (auto &t : ys[k]) t = static_cast<std::int32_t>(rng.next() % V);
  }
  std::vector<std::int32_t> eval_x(2 * T);
  for (auto &t : eval_x) t = static_cast<std::int32_t>(rng.next() % V);

  Exchange exchange(name);
  {
    std::ofstream js(exchange.input());
    js << "{\"case\":\"" << name << "\",\"kind\":\"gpt\",\"seq\":" << T
       << ",\"stages\":" << stages_json<GPT>(std::make_index_sequence<GPT::num_stages>{})
       << ",\"optimizer\":{\"lr\":" << number(options.lr) << ",\"betas\":[" << number(options.betas.first) << ","
       << number(options.betas.second) << "],\"eps\":" << number(options.eps)
       << ",\"weight_decay\":" << number(options.weight_decay) << "},\"parameters\":{";
    bool first = true;
    for (const auto &p : net.parameters()) {
      js << (first ? "" : ",") << "\"" << p.name() << "\":{\"shape\":[" << p.rows();
      if (p.cols() > 1) js << "," << p.cols();
      js << "],\"values\":" << array(p.to_host()) << "}";
      first = false;
    }
    js << "},\"steps\":[";
    for (std::size_t k = 0; k < steps; ++k)
      js << (k ? "," : "") << "{\"x\":" << array(xs[k]) << ",\"y\":" << array(ys[k]) << "}";
    js << "],\"eval_x\":" << array(eval_x) << "}\n";
  }
  const auto want = exchange.run(python, script);
  if (!want) return 1;

  reference::Tensors got;
  for (std::size_t k = 0; k < steps; ++k)
    got["loss." + std::to_string(k)] = {net.train_step(xs[k], ys[k], loss::CrossEntropy{}, opt, sched)};
  const auto eval = net.forward(std::span<const std::int32_t>(eval_x));
  got["output"].assign(eval.begin(), eval.end());
  for (const auto &p : net.parameters()) {
    const auto v = p.to_host(), g = p.grad_to_host();
    got["param." + p.name()].assign(v.begin(), v.end());
    got["grad." + p.name()].assign(g.begin(), g.end());
  }
  return compare(name, got, *want, 1e-4, exchange) ? 0 : 1;
}

#ifdef TANDEM_REFERENCE_CHECKPOINTS
// PyTorch's own module tree, initialised by PyTorch and saved with safetensors, loaded by tandem:
// tandem's logits on a batch equal PyTorch's (float32 both) within 1e-5.
int gpt_from_torch(const std::string &name, const std::string &python, const std::string &script) {
  Exchange exchange(name);
  std::vector<std::int32_t> x(3 * T);
  Random rng(11);
  for (auto &t : x) t = static_cast<std::int32_t>(rng.next() % V);
  {
    std::ofstream js(exchange.input());
    js << "{\"case\":\"" << name << "\",\"kind\":\"init\",\"seq\":" << T
       << ",\"stages\":" << stages_json<GPT>(std::make_index_sequence<GPT::num_stages>{}) << ",\"x\":" << array(x)
       << ",\"file\":\"" << (exchange.dir / "torch.safetensors").string() << "\"}\n";
  }
  const auto want = exchange.run(python, script);
  if (!want) return 1;
  Context ctx;
  GPT net(ctx, 1);
  load(net, exchange.dir / "torch.safetensors");
  reference::Tensors got;
  const auto out = net.forward(std::span<const std::int32_t>(x));
  got["output"].assign(out.begin(), out.end());
  return compare(name, got, *want, 1e-5, exchange) ? 0 : 1;
}
#endif

using Run = int (*)(const std::string &, const std::string &, const std::string &);
const std::map<std::string, Run> cases = {
    {"embedding", [](const std::string &n, const std::string &py,
                     const std::string &s) { return layer_case<Embedding<11, 6>>(n, py, s); }},
    {"positional", [](const std::string &n, const std::string &py,
                      const std::string &s) { return layer_case<PositionalEmbedding<5, 6>>(n, py, s); }},
    {"layer_norm", [](const std::string &n, const std::string &py,
                      const std::string &s) { return layer_case<LayerNorm<7>>(n, py, s); }},
    {"attention", [](const std::string &n, const std::string &py,
                     const std::string &s) { return layer_case<CausalSelfAttention<12, 3, 5>>(n, py, s); }},
    {"residual_attention",
     [](const std::string &n, const std::string &py, const std::string &s) {
       return layer_case<Residual<LayerNorm<8>, CausalSelfAttention<8, 2, 4>>>(n, py, s);
     }},
    {"residual_mlp",
     [](const std::string &n, const std::string &py, const std::string &s) {
       return layer_case<Residual<LayerNorm<6>, Linear<6, 24>, GELU, Linear<24, 6>>>(n, py, s);
     }},
    {"gpt_naive", [](const std::string &n, const std::string &py,
                     const std::string &s) { return gpt_case(n, py, s, schedule::Naive{}); }},
    {"gpt_gpipe", [](const std::string &n, const std::string &py,
                     const std::string &s) { return gpt_case(n, py, s, schedule::GPipe{.micro_batches = 3}); }},
    {"gpt_1f1b", [](const std::string &n, const std::string &py,
                    const std::string &s) { return gpt_case(n, py, s, schedule::OneFOneB{.micro_batches = 3}); }},
#ifdef TANDEM_REFERENCE_CHECKPOINTS
    {"gpt_from_torch", gpt_from_torch},
#endif
};

} // namespace

int main(int argc, char **argv) {
  if (argc >= 2 && std::string(argv[1]) == "--expect") {
    const std::set<std::string> expected(argv + 2, argv + argc);
    std::set<std::string> have;
    for (const auto &[name, run] : cases) have.insert(name);
    if (expected == have) return 0;
    std::printf("tests/reference/CMakeLists.txt and the program list different transformer cases\n");
    return 1;
  }
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <case> <python with torch> <transformer_reference.py>\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1], python = argv[2], script = argv[3];
  const auto it = cases.find(name);
  if (it == cases.end()) {
    std::fprintf(stderr, "unknown case '%s'\n", name.c_str());
    return 2;
  }
  if (python.empty() || python.ends_with("NOTFOUND")) {
    std::printf("SKIPPED: no Python with torch was found when CMake configured this build\n");
    return skip_status;
  }
  try {
    return it->second(name, python, script);
  } catch (const std::exception &e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
