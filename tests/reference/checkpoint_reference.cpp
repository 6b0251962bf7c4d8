// SPDX-License-Identifier: Apache-2.0
// Checkpoints and PyTorch, both ways, with the official safetensors package (checkpoint_reference.py):
//   to_torch    tandem saves a network's weights; PyTorch loads them (load_file, load_state_dict with
//               strict=True into stage0, stage1, ... nn.Sequentials) and gives tandem's outputs;
//   from_torch  PyTorch saves such a module's state_dict; tandem loads it and gives PyTorch's outputs;
//   digits      PyTorch loads example 04_digits' checkpoint and agrees on every test prediction.
// Outputs agree within a relative error of 1e-5 (max |a - b| / max |b|, float32 on the host).
//
//   usage: tandem_checkpoint_reference <case> <python with torch> <checkpoint_reference.py> [folder]
// Exit status 77 (CTest SKIP_RETURN_CODE) when no Python with torch was found at configure time,
// or the script finds no safetensors package and TANDEM_REQUIRE_SAFETENSORS is not set.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;
namespace fs = std::filesystem;

namespace {

constexpr int skip_status = 77;
constexpr double tolerance = 1e-5;

// Every layer, an activation-only stage among them.
using Net = Pipeline<Stage<Device<0>, Linear<6, 12>, Tanh, Linear<12, 12>, ReLU>, Stage<Device<1>, Sigmoid>,
                     Stage<Device<2>, GELU, Linear<12, 8>, GELUTanh, Linear<8, 4>, Identity>>;

// The script's exit status (77 passes through as a skip).
int run_python(const std::string &python, const std::string &script, const std::string &args) {
  const std::string command = "'" + python + "' '" + script + "' " + args;
  const int status = std::system(command.c_str());
  if (status == -1 || !WIFEXITED(status)) return 1;
  return WEXITSTATUS(status);
}

double relative_error(const std::vector<float> &got, std::span<const std::byte> want_bytes) {
  std::vector<float> want(want_bytes.size() / sizeof(float));
  std::memcpy(want.data(), want_bytes.data(), want_bytes.size());
  if (want.size() != got.size()) return INFINITY;
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(double(got[i]) - double(want[i]));
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return diff / scale;
}

int to_torch(Context &ctx, const std::string &python, const std::string &script, const fs::path &dir) {
  Net net(ctx, 99);
  Random rng(5);
  std::vector<float> x(16 * Net::in_features);
  for (auto &v : x) v = static_cast<float>(rng.uniform(-2, 2));
  const auto y = net.forward(std::span<const float>(x));
  save(net, dir / "weights.safetensors");
  const std::vector<checkpoint::TensorView> data{{"x", "F32", {16, Net::in_features}, std::as_bytes(std::span(x))},
                                                 {"y", "F32", {16, Net::out_features}, std::as_bytes(std::span(y))}};
  checkpoint::write_safetensors(dir / "data.safetensors", data, {{"format", "pt"}});
  return run_python(python, script, "to_torch '" + dir.string() + "'");
}

int from_torch(Context &ctx, const std::string &python, const std::string &script, const fs::path &dir) {
  const int status =
      run_python(python, script, "from_torch '" + dir.string() + "' '" + checkpoint::signature<Net>() + "'");
  if (status != 0) return status;
  Net net(ctx, 99);
  load(net, dir / "torch.safetensors");
  const auto data = checkpoint::SafetensorsFile::read(dir / "torch_data.safetensors");
  const auto xb = data.data(*data.find("x"));
  std::vector<float> x(xb.size() / sizeof(float));
  std::memcpy(x.data(), xb.data(), xb.size());
  const double error = relative_error(net.forward(std::span<const float>(x)), data.data(*data.find("y")));
  std::printf("tandem loaded PyTorch's state_dict (strict): output relative error %.3e (tolerance %.0e)\n", error,
              tolerance);
  return error <= tolerance ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr,
                 "usage: %s to_torch|from_torch|digits <python with torch> <checkpoint_reference.py> [folder]\n",
                 argv[0]);
    return 2;
  }
  const std::string name = argv[1], python = argv[2], script = argv[3];
  if (python.empty() || python.ends_with("NOTFOUND")) {
    std::printf("SKIPPED: no Python with torch was found when CMake configured this build; install python3-torch "
                "and reconfigure to run the checkpoint reference tests\n");
    return skip_status;
  }
  if (name == "digits") {
    if (argc != 5) {
      std::fprintf(stderr, "digits needs the folder that example_04_digits --out wrote\n");
      return 2;
    }
    return run_python(python, script, "digits '" + std::string(argv[4]) + "'");
  }
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("tandem_checkpoint_reference_" + name + "_" + std::to_string(rd()));
  fs::create_directories(dir);
  int status = 2;
  try {
    Context ctx({.devices = "host"});
    if (name == "to_torch") status = to_torch(ctx, python, script, dir);
    else if (name == "from_torch") status = from_torch(ctx, python, script, dir);
    else std::fprintf(stderr, "unknown case '%s'\n", name.c_str());
  } catch (const std::exception &e) {
    std::printf("FAILED: %s\n", e.what());
    status = 1;
  }
  if (status == 0 || status == skip_status) fs::remove_all(dir);
  else std::printf("(files kept in %s)\n", dir.c_str());
  return status;
}
