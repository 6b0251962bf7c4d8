// SPDX-License-Identifier: Apache-2.0
// Checkpoints on a GPU: a run trained on CUDA saves (with its Adam state and LR schedule) and a
// second network resumes it bit for bit; its weights load into a host network, whose outputs agree
// within the tolerance of the two backends (float32, TF32 off: relative error <= 1e-4).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "support.hpp"
#include "tandem/checkpoint.hpp"
#include "tandem/context.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/layers/relu.hpp"
#include "tandem/loss/cross_entropy.hpp"
#include "tandem/optim/adam.hpp"
#include "tandem/optim/lr_scheduler.hpp"
#include "tandem/pipeline.hpp"
#include "tandem/schedule/gpipe.hpp"

namespace {

using namespace tandem;

using Net = Pipeline<Stage<Device<0>, Linear<10, 32>, ReLU>, Stage<Device<1>, Linear<32, 16>, ReLU, Linear<16, 4>>>;

struct Scratch {
  std::filesystem::path path;
  Scratch() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("tandem_cuda_ckpt_" + std::to_string(rd()));
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

} // namespace

TEST_SUITE("gpu") {
  TEST_CASE("checkpoints on a GPU: resume bit for bit, and the weights load on the host") {
    TANDEM_SKIP_WITHOUT_GPU();
    const Scratch dir;
    const auto x = test::uniform<float>(48 * Net::in_features, 3);
    const auto y = test::labels(48, Net::out_features, 4);
    const loss::CrossEntropy ce;
    const schedule::GPipe gpipe{.micro_batches = 3};

    Context gpu({.devices = "0,0", .force_copies = true});
    Net a(gpu, 42);
    optim::Adam opt_a(a, {.lr = 1e-2f, .amsgrad = true});
    optim::CosineAnnealingLR sched_a(opt_a, {.T_max = 5});
    for (int k = 0; k < 3; ++k) {
      a.train_step(x, y, ce, opt_a, gpipe);
      sched_a.step();
    }
    save_checkpoint(dir.path, a, opt_a, sched_a);
    save(a, dir.path / "weights.safetensors");

    Net b(gpu, 7);
    optim::Adam opt_b(b, {.lr = 1e-2f, .amsgrad = true});
    optim::CosineAnnealingLR sched_b(opt_b, {.T_max = 5});
    load_checkpoint(dir.path, b, opt_b, sched_b);
    for (int k = 0; k < 3; ++k) {
      CHECK(a.train_step(x, y, ce, opt_a, gpipe) == b.train_step(x, y, ce, opt_b, gpipe));
      sched_a.step();
      sched_b.step();
      CHECK(opt_a.lr() == opt_b.lr());
    }
    for (const auto &p : a.parameters()) CHECK(p.to_host() == b.parameter(p.name()).to_host());

    Context host({.devices = "host"});
    Net on_host(host, 9);
    load(on_host, dir.path / "weights.safetensors");
    Net saved(gpu, 9);
    load(saved, dir.path / "weights.safetensors");
    test::check_close(saved.forward(std::span<const float>(x)), on_host.forward(std::span<const float>(x)), 1e-4,
                      "outputs");
  }
}
