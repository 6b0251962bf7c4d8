// SPDX-License-Identifier: Apache-2.0
// Checkpoints across processes, under mpiexec on 1..4 ranks: a checkpoint saved on N ranks resumes
// on fewer ranks and in one process, and one process's on N ranks, bit for bit the run that was
// never interrupted (LR schedule included); save() gathers one file; a bad shard throws on every
// rank and changes nothing anywhere.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <tandem/checkpoint.hpp>
#include <tandem/distributed.hpp>
#include <tandem/tandem.hpp>

#include "../support/random_data.hpp"

namespace {

using namespace tandem;
namespace fs = std::filesystem;

using Net = Pipeline<Stage<Device<0>, Linear<5, 8>, Tanh>, Stage<Device<1>, Linear<8, 8>, ReLU>,
                     Stage<Device<2>, Linear<8, 6>, GELU>, Stage<Device<3>, Linear<6, 3>>>;

constexpr std::size_t batch = 9, before = 3, after = 3;

struct Batch {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};
std::vector<Batch> make_batches() {
  std::vector<Batch> b;
  for (std::size_t k = 0; k < before + after; ++k)
    b.push_back({test::uniform<float>(batch * Net::in_features, 100 + 2 * k),
                 test::labels(batch, Net::out_features, 101 + 2 * k)});
  return b;
}

// What a rank passes: the input where it runs the first stage, the labels where it runs the last.
template <class U> std::span<const U> if_local(const Net &net, const char *name, const std::vector<U> &v) {
  return net.parameter(name).is_local() ? std::span<const U>(v) : std::span<const U>();
}

// A network, its optimizer and its schedule, trained step by step (the schedule steps after each).
struct Run {
  Net net;
  optim::Adam opt;
  optim::CosineAnnealingLR sched;
  Run(Context &ctx, std::uint64_t seed) : net(ctx, seed), opt(net, {.lr = 1e-2f}), sched(opt, {.T_max = 4}) {}
  float step(const Batch &b) {
    const loss::CrossEntropy ce;
    const float l = net.train_step(if_local(net, "stage0.0.weight", b.x), if_local(net, "stage3.0.weight", b.y), ce,
                                   opt, schedule::GPipe{.micro_batches = 3});
    sched.step();
    return l;
  }
};

// The run that is never interrupted, in one process: its losses after the checkpoint, and its
// parameters at the end.
struct Reference {
  std::vector<float> losses;
  Context ctx{ContextOptions{.devices = "host", .quiet = true}};
  Run run{ctx, 42};
  explicit Reference(const std::vector<Batch> &data) {
    for (std::size_t k = 0; k < before + after; ++k) {
      const float l = run.step(data[k]);
      if (k >= before) losses.push_back(l);
    }
  }
};

// Resumes from `dir` on `ctx` and checks the rest of the run against the reference bit for bit.
void check_resume(Context &ctx, const fs::path &dir, const std::vector<Batch> &data, const Reference &ref) {
  Run run(ctx, 7); // another seed: everything comes from the checkpoint
  load_checkpoint(dir, run.net, run.opt, run.sched);
  std::vector<float> losses;
  for (std::size_t k = before; k < before + after; ++k) losses.push_back(run.step(data[k]));
  CHECK(losses == ref.losses);
  CHECK(run.opt.lr() == ref.run.opt.lr());
  for (const auto &p : run.net.parameters())
    if (p.is_local()) CHECK(p.to_host() == ref.run.net.parameter(p.name()).to_host());
}

// A folder every rank names alike: rank 0 picks it.
fs::path shared_dir(const distributed::Environment &env, const char *name) {
  std::string path;
  if (env.rank() == 0) {
    std::random_device rd;
    path = (fs::temp_directory_path() / ("tandem_mpi_" + std::string(name) + "_" + std::to_string(rd()))).string();
  }
  std::uint64_t n = path.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, env.communicator());
  path.resize(n);
  MPI_Bcast(path.data(), static_cast<int>(n), MPI_CHAR, 0, env.communicator());
  return path;
}

struct Cleanup {
  const distributed::Environment &env;
  fs::path dir;
  ~Cleanup() {
    MPI_Barrier(env.communicator());
    std::error_code ec;
    if (env.rank() == 0) fs::remove_all(dir, ec);
  }
};

// The first `m` ranks as a program of their own (a transport over a communicator of theirs); the
// other ranks get null and wait.
std::shared_ptr<backend::Transport> first_ranks(const distributed::Environment &env, int m) {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(env.communicator(), env.rank() < m ? 0 : MPI_UNDEFINED, env.rank(), &sub);
  if (sub == MPI_COMM_NULL) return nullptr;
  auto t = std::make_shared<distributed::MpiTransport>(std::make_shared<distributed::detail::Session>(nullptr, nullptr),
                                                       sub); // duplicates it
  MPI_Comm_free(&sub);
  return t;
}

} // namespace

TEST_CASE("checkpoint: saved on N ranks, resumed on fewer and in one process, and back, bit for bit") {
  distributed::Environment env; // shares MPI with main's
  const auto data = make_batches();
  const Reference ref(data);
  const fs::path dir = shared_dir(env, "ckpt");
  const Cleanup cleanup{env, dir};
  {
    Context ctx(env, {.quiet = true});
    Run run(ctx, 42);
    for (std::size_t k = 0; k < before; ++k) run.step(data[k]);
    save_checkpoint(dir, run.net, run.opt, run.sched);
  }
  MPI_Barrier(env.communicator());
  // Across processes: each stage's shards and one index, and no single-process pair.
  CHECK(fs::exists(dir / "model.safetensors.index.json") == (env.size() > 1));
  CHECK(fs::exists(dir / "model.safetensors") == (env.size() == 1));
  if (env.size() > 1) {
    CHECK(fs::exists(dir / "model-00004-of-00004.safetensors"));
    CHECK(fs::exists(dir / "optimizer-00004-of-00004.safetensors"));
  }
  // On every smaller number of ranks (the others wait), then in one process on every rank.
  for (int m = env.size() - 1; m >= 2; --m) {
    CAPTURE(m);
    if (auto t = first_ranks(env, m)) {
      Context ctx(t, {.quiet = true});
      check_resume(ctx, dir, data, ref);
    }
    MPI_Barrier(env.communicator());
  }
  {
    Context single({.devices = "host", .quiet = true});
    check_resume(single, dir, data, ref);
  }
  MPI_Barrier(env.communicator());

  // One process's checkpoint (rank 0's) on every rank.
  const fs::path one = dir / "one_process";
  if (env.rank() == 0) {
    Context single({.devices = "host", .quiet = true});
    Run run(single, 42);
    for (std::size_t k = 0; k < before; ++k) run.step(data[k]);
    save_checkpoint(one, run.net, run.opt, run.sched);
  }
  MPI_Barrier(env.communicator());
  Context ctx(env, {.quiet = true});
  check_resume(ctx, one, data, ref);
}

TEST_CASE("checkpoint: save() across processes writes one file with every weight; load() reads it on N ranks") {
  distributed::Environment env;
  const fs::path dir = shared_dir(env, "save");
  const Cleanup cleanup{env, dir};
  Context ctx(env, {.quiet = true}), single({.devices = "host", .quiet = true});
  if (env.rank() == 0) fs::create_directories(dir);
  MPI_Barrier(env.communicator());
  Net net(ctx, 5), ref(single, 5);
  save(net, dir / "w.safetensors");
  MPI_Barrier(env.communicator());
  Net read(single, 6), spread(ctx, 6);
  load(read, dir / "w.safetensors"); // every rank, in one process
  for (const auto &p : ref.parameters()) CHECK(p.to_host() == read.parameter(p.name()).to_host());
  load(spread, dir / "w.safetensors");
  for (const auto &p : spread.parameters())
    if (p.is_local()) CHECK(p.to_host() == ref.parameter(p.name()).to_host());
}

TEST_CASE("checkpoint: a shard that one rank finds bad throws on every rank, and no rank changes anything") {
  distributed::Environment env;
  if (env.size() < 2) return;
  const fs::path dir = shared_dir(env, "bad");
  const Cleanup cleanup{env, dir};
  Context ctx(env, {.quiet = true});
  Net net(ctx, 5);
  optim::Adam opt(net, {.lr = 1e-2f});
  save_checkpoint(dir, net, opt);
  save_sharded(net, dir / "weights");
  MPI_Barrier(env.communicator());
  // The last stage's shards, which only its rank reads, are cut short.
  const int owner = net.parameter("stage3.0.weight").rank();
  if (env.rank() == 0)
    for (const auto &f : {dir / "model-00004-of-00004.safetensors", dir / "weights/model-00004-of-00004.safetensors"})
      fs::resize_file(f, fs::file_size(f) - 4);
  MPI_Barrier(env.communicator());
  Net other(ctx, 6);
  optim::Adam other_opt(other, {.lr = 1e-2f});
  std::vector<std::vector<float>> before_load;
  for (const auto &p : other.parameters())
    if (p.is_local()) before_load.push_back(p.to_host());
  const std::string expected =
      env.rank() == owner ? "not a valid safetensors file" : "rank " + std::to_string(owner) + " failed";
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, other, other_opt), doctest::Contains(expected.c_str()), Error);
  CHECK_THROWS_WITH_AS(load(other, dir / "weights/model.safetensors.index.json"), doctest::Contains(expected.c_str()),
                       Error);
  std::vector<std::vector<float>> after_load;
  for (const auto &p : other.parameters())
    if (p.is_local()) after_load.push_back(p.to_host());
  CHECK(before_load == after_load);
  // A whole file of another network: every rank finds it out, and none writes.
  if (env.rank() == 0) {
    Context single({.devices = "host", .quiet = true});
    using Short = Pipeline<Stage<Device<0>, Linear<5, 8>, Tanh>, Stage<Device<1>, Linear<8, 8>, ReLU>,
                           Stage<Device<2>, Linear<8, 6>, GELU>, Stage<Device<3>, Linear<6, 4>>>;
    Short wrong(single, 1);
    save(wrong, dir / "wrong.safetensors");
  }
  MPI_Barrier(env.communicator());
  CHECK_THROWS_WITH_AS(load(other, dir / "wrong.safetensors"), doctest::Contains("has shape [4, 6], expected [3, 6]"),
                       Error);
  after_load.clear();
  for (const auto &p : other.parameters())
    if (p.is_local()) after_load.push_back(p.to_host());
  CHECK(before_load == after_load);
}
