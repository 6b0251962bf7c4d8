// SPDX-License-Identifier: Apache-2.0
// Checkpoints: round trips, resuming bit for bit, every kind of bad file, and safe writes.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

#include "../support/checkpoint_files.hpp"
#include "../support/random_data.hpp"

using namespace tandem;
namespace fs = std::filesystem;

namespace {

using Net = test::CheckpointNet<float>;
constexpr std::size_t in = Net::in_features, classes = Net::out_features;

struct Batch {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};
std::vector<Batch> batches(std::size_t n, std::uint64_t seed) {
  std::vector<Batch> b;
  for (std::size_t k = 0; k < n; ++k)
    b.push_back({test::uniform<float>(10 * in, seed + 2 * k), test::labels(10, classes, seed + 2 * k + 1)});
  return b;
}

template <class Msg> bool contains(const Msg &message, const std::string &part) {
  return std::string(message).find(part) != std::string::npos;
}

} // namespace

TEST_CASE_TEMPLATE("checkpoint: save and load round-trip every layer's weights, float as F32 and double as F64", T,
                   float, double) {
  using N = test::CheckpointNet<T>;
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_roundtrip");
  N a(ctx, 1), b(ctx, 2);
  const auto x = test::uniform<T>(5 * N::in_features, 3);
  REQUIRE_FALSE(test::same_bits(test::weights(a), test::weights(b)));
  save(a, dir / "w.safetensors");
  load(b, dir / "w.safetensors");
  CHECK(test::same_bits(test::weights(a), test::weights(b)));
  CHECK(test::same_bits(a.forward(std::span<const T>(x)), b.forward(std::span<const T>(x))));

  // The file itself: PyTorch's names, shapes (out, in) and (out), the dtype, and the metadata.
  const auto f = checkpoint::SafetensorsFile::read(dir / "w.safetensors");
  CHECK(f.tensors().size() == a.parameters().size());
  for (const auto &p : a.parameters()) {
    const auto *t = f.find(p.name());
    REQUIRE(t);
    CHECK(t->dtype == (std::is_same_v<T, float> ? "F32" : "F64"));
    CHECK(t->shape ==
          (p.cols() == 1 ? std::vector<std::uint64_t>{p.rows()} : std::vector<std::uint64_t>{p.rows(), p.cols()}));
  }
  CHECK(f.find("stage2.1.weight")->shape == std::vector<std::uint64_t>{8, 12});
  CHECK(f.find("stage2.1.bias")->shape == std::vector<std::uint64_t>{8});
  CHECK(f.meta("format") == "pt");
  CHECK(f.meta("tandem.version") == std::string(tandem::version));
  CHECK(f.meta("tandem.network") == checkpoint::signature<N>());
  CHECK(contains(*f.meta("tandem.network"),
                 "Stage<Device<2>, GELU, Linear<12, 8>, GELUTanh, Linear<8, 4>, Identity> 12 -> 4"));
  // The header is padded so the data starts 8-byte aligned; no temporary file is left behind.
  CHECK(test::header_size(test::read_bytes(dir / "w.safetensors")) % 8 == 0);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
}

namespace {

// Trains `before` steps, saves (the last of them still in flight), trains `after` more; then a network
// built with another seed and a fresh optimizer loads the checkpoint and trains the same `after`
// steps. Every loss, parameter and state tensor must agree bit for bit.
template <class Opt, class Sched> void check_resume(typename Opt::Options options, const Sched &sched, bool change_lr) {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_resume");
  const loss::CrossEntropy ce;
  constexpr std::size_t before = 3, after = 4;
  const auto data = batches(before + after, 77);

  Net a(ctx, 11);
  Opt opt_a(a, options);
  for (std::size_t k = 0; k + 1 < before; ++k) a.train_step(data[k].x, data[k].y, ce, opt_a, sched);
  if (change_lr) opt_a.set_lr(options.lr * 0.5f); // as a schedule would: the checkpoint keeps it
  auto pending = a.train_step_async(data[before - 1].x, data[before - 1].y, ce, opt_a, sched);
  save_checkpoint(dir.path, a, opt_a); // completes the step in flight first
  pending.get();
  std::vector<float> losses_a;
  for (std::size_t k = before; k < before + after; ++k)
    losses_a.push_back(a.train_step(data[k].x, data[k].y, ce, opt_a, sched));

  Net b(ctx, 99);
  Opt opt_b(b, options);
  load_checkpoint(dir.path, b, opt_b);
  CHECK(opt_b.options().lr == opt_a.options().lr);
  std::vector<float> losses_b;
  for (std::size_t k = before; k < before + after; ++k)
    losses_b.push_back(b.train_step(data[k].x, data[k].y, ce, opt_b, sched));
  CHECK(test::same_bits(losses_a, losses_b));
  CHECK(test::same_bits(test::weights(a), test::weights(b)));
  CHECK(test::same_bits(test::optimizer_state(a, opt_a), test::optimizer_state(b, opt_b)));

  // The weights alone with a fresh optimizer do not resume: the optimizer's state matters here.
  Net c(ctx, 5);
  Opt opt_c(c, options);
  load(c, dir / "model.safetensors");
  if (change_lr) opt_c.set_lr(options.lr * 0.5f);
  for (std::size_t k = before; k < before + after; ++k) c.train_step(data[k].x, data[k].y, ce, opt_c, sched);
  CHECK_FALSE(test::same_bits(test::weights(a), test::weights(c)));
}

} // namespace

TEST_CASE("checkpoint: training resumes bit for bit under GPipe and 1F1B") {
  const schedule::GPipe gpipe{.micro_batches = 3};
  const schedule::OneFOneB one_f_one_b{.micro_batches = 4};
  SUBCASE("SGD with momentum") {
    check_resume<optim::SGD>({.lr = 0.05f, .momentum = 0.9f, .dampening = 0.1f, .weight_decay = 1e-3f}, gpipe, false);
    check_resume<optim::SGD>({.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-3f}, one_f_one_b, true);
  }
  SUBCASE("SGD, Nesterov") {
    check_resume<optim::SGD>({.lr = 0.05f, .momentum = 0.8f, .nesterov = true}, gpipe, true);
    check_resume<optim::SGD>({.lr = 0.05f, .momentum = 0.8f, .nesterov = true}, one_f_one_b, false);
  }
  SUBCASE("Adam, AMSGrad") {
    check_resume<optim::Adam>({.lr = 1e-2f, .weight_decay = 1e-2f, .amsgrad = true}, gpipe, false);
    check_resume<optim::Adam>({.lr = 1e-2f, .betas = {0.8f, 0.99f}, .amsgrad = true}, one_f_one_b, true);
    check_resume<optim::Adam>({.lr = 1e-2f}, one_f_one_b, false);
  }
  SUBCASE("AdamW") {
    check_resume<optim::AdamW>({.lr = 1e-2f, .weight_decay = 0.1f}, gpipe, true);
    check_resume<optim::AdamW>({.lr = 1e-2f, .amsgrad = true}, one_f_one_b, false);
  }
}

TEST_CASE("checkpoint: the optimizer file holds PyTorch-like names, step counts and hyperparameters") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_names");
  const loss::CrossEntropy ce;
  const auto data = batches(2, 5);
  Net net(ctx, 3);
  SUBCASE("SGD: no momentum buffer before the first step, one after it") {
    optim::SGD opt(net, {.lr = 0.1f, .momentum = 0.9f});
    save_checkpoint(dir.path, net, opt);
    auto f = checkpoint::SafetensorsFile::read(dir / "optimizer.safetensors");
    CHECK(f.tensors().empty());
    CHECK(f.meta("stage0.step") == "0");
    net.train_step(data[0].x, data[0].y, ce, opt);
    save_checkpoint(dir.path, net, opt);
    f = checkpoint::SafetensorsFile::read(dir / "optimizer.safetensors");
    CHECK(f.tensors().size() == net.parameters().size());
    CHECK(f.find("stage2.3.bias.momentum_buffer"));
    CHECK(f.meta("tandem.optimizer") == "SGD");
    CHECK(f.meta("momentum") == "0.899999976");
    CHECK(f.meta("stage2.step") == "1");
    CHECK_FALSE(f.meta("stage1.step").has_value()); // no parameters, no state
    // The buffer is the group's, split by the parameters' offsets: stage0.2.bias is its last slice.
    const auto &g = net.parameter_groups()[0];
    std::vector<float> whole(g.size);
    opt.visit_state(0, [&](const char *, float *data, bool) {
      g.executor->download(whole.data(), data, g.size * sizeof(float));
      g.executor->synchronize();
    });
    const auto bytes = f.data(*f.find("stage0.2.bias.momentum_buffer"));
    CHECK(std::memcmp(bytes.data(), whole.data() + g.size - 12, bytes.size()) == 0);
    CHECK(bytes.size() == 12 * sizeof(float));
  }
  SUBCASE("Adam with AMSGrad") {
    optim::Adam opt(net, {.lr = 1e-3f, .amsgrad = true});
    net.train_step(data[0].x, data[0].y, ce, opt);
    net.train_step(data[1].x, data[1].y, ce, opt);
    save_checkpoint(dir.path, net, opt);
    const auto f = checkpoint::SafetensorsFile::read(dir / "optimizer.safetensors");
    CHECK(f.tensors().size() == 3 * net.parameters().size());
    for (const char *s : {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"})
      CHECK(f.find(std::string("stage0.0.weight.") + s));
    CHECK(f.find("stage0.0.weight.exp_avg")->shape == std::vector<std::uint64_t>{12, 6});
    CHECK(f.meta("tandem.optimizer") == "Adam");
    CHECK(f.meta("amsgrad") == "true");
    CHECK(f.meta("stage0.step") == "2");
    CHECK(f.meta("format") == "pt");
  }
}

namespace {

// Saves a checkpoint of a trained network, lets `corrupt` spoil a file of it, and checks that
// load_checkpoint (and load, for the model file) throw an Error that names the file and says
// `what`, and that parameters and optimizer state stay bit for bit as they were.
struct BadFileCase {
  Context ctx{ContextOptions{.devices = "host"}};
  test::ScratchDir dir{"ckpt_bad"};
  Net net{ctx, 21};
  optim::Adam opt{net, {.lr = 1e-2f, .amsgrad = true}};
  std::vector<std::byte> model, state;

  BadFileCase() {
    const loss::CrossEntropy ce;
    const auto data = batches(2, 9);
    for (const auto &b : data) net.train_step(b.x, b.y, ce, opt);
    save_checkpoint(dir.path, net, opt);
    model = test::read_bytes(dir / "model.safetensors");
    state = test::read_bytes(dir / "optimizer.safetensors");
    // One step more: what the failed loads must leave alone differs from what the files hold.
    net.train_step(data[0].x, data[0].y, ce, opt);
  }

  void expect_rejected(const std::string &file, const std::vector<std::byte> &bytes, const std::string &what) {
    test::write_bytes(dir / "model.safetensors", file == "model" ? bytes : model);
    test::write_bytes(dir / "optimizer.safetensors", file == "optimizer" ? bytes : state);
    const auto w = test::weights(net);
    const auto s = test::optimizer_state(net, opt);
    const std::string path = (dir / (file + ".safetensors")).string();
    auto check = [&](const std::function<void()> &call) {
      try {
        call();
        FAIL("no Error for ", what);
      } catch (const Error &e) {
        INFO(std::string(e.what()));
        CHECK(contains(e.what(), path));
        CHECK(contains(e.what(), what));
      }
      CHECK(test::same_bits(w, test::weights(net)));
      CHECK(test::same_bits(s, test::optimizer_state(net, opt)));
    };
    check([&] { load_checkpoint(dir.path, net, opt); });
    if (file == "model") check([&] { load(net, path); });
  }
  void expect_rejected(const std::string &file, const std::string &header, const std::string &what) {
    expect_rejected(file, test::with_header(file == "model" ? model : state, header), what);
  }
};

} // namespace

TEST_CASE("checkpoint: a bad file is an Error that names it and changes nothing") {
  BadFileCase c;
  const auto h = test::header_of(c.model);
  const auto hs = test::header_of(c.state);
  const auto dump = [](const nlohmann::json &j) { return j.dump(); };

  SUBCASE("missing") {
    fs::remove(c.dir / "model.safetensors");
    const auto w = test::weights(c.net);
    CHECK_THROWS_WITH_AS(load_checkpoint(c.dir.path, c.net, c.opt), doctest::Contains("cannot open"), Error);
    CHECK(test::same_bits(w, test::weights(c.net)));
  }
  SUBCASE("empty") { c.expect_rejected("model", std::vector<std::byte>{}, "fewer than the 8 of its header size"); }
  SUBCASE("truncated") {
    auto b = c.model;
    b.resize(b.size() - 10);
    c.expect_rejected("model", b, "not a range within");
    b.resize(20);
    c.expect_rejected("model", b, "bytes that follow");
    auto s = c.state;
    s.resize(s.size() / 2);
    c.expect_rejected("optimizer", s, "not a valid safetensors file");
  }
  SUBCASE("a header size that lies") {
    auto b = c.model;
    test::set_header_size(b, 0);
    c.expect_rejected("model", b, "header size is 0");
    test::set_header_size(b, b.size()); // more than the file holds after the size
    c.expect_rejected("model", b, "bytes that follow");
    test::set_header_size(b, 100'000'001);
    c.expect_rejected("model", b, "more than the 100000000 bytes allowed");
    test::set_header_size(b, UINT64_MAX);
    c.expect_rejected("model", b, "more than the 100000000 bytes allowed");
    test::set_header_size(b, test::header_size(c.model) - 8); // cuts the JSON short
    c.expect_rejected("model", b, "not valid JSON");
    test::set_header_size(b, test::header_size(c.model) + 8); // takes data for header
    c.expect_rejected("model", b, "not valid JSON");
  }
  SUBCASE("JSON that is not an object, or not JSON") {
    c.expect_rejected("model", std::string("[1, 2, 3]"), "does not start with '{'");
    c.expect_rejected("model", std::string("\"stage0.0.weight\""), "does not start with '{'");
    c.expect_rejected("model", dump(h).substr(0, dump(h).size() - 1), "not valid JSON");
    c.expect_rejected("model", dump(h) + "}", "not valid JSON");
    c.expect_rejected("model", std::string("{\"a\": \"\xff\"}"), "not valid JSON"); // not UTF-8
    auto j = h;
    j["stage0.0.bias"] = 3;
    c.expect_rejected("model", dump(j), "'stage0.0.bias' is not described by an object");
    j = h;
    j["__metadata__"]["format"] = 1;
    c.expect_rejected("model", dump(j), "__metadata__ 'format' is not a string");
  }
  SUBCASE("a name given twice") {
    std::string text = dump(h);
    const std::string entry = "\"stage0.0.bias\":" + dump(h["stage0.0.bias"]);
    text.insert(1, entry + ",");
    c.expect_rejected("model", text, "names 'stage0.0.bias' twice");
  }
  SUBCASE("offsets that overlap, leave a gap or fall outside the data") {
    auto j = h;
    auto &o = j["stage0.0.bias"]["data_offsets"];
    o = {o[0].get<std::uint64_t>() - 4, o[1].get<std::uint64_t>() - 4};
    c.expect_rejected("model", dump(j), "without gaps or overlaps");
    j = h;
    j["stage0.0.bias"]["data_offsets"] = {h["stage0.0.bias"]["data_offsets"][0].get<std::uint64_t>() + 4,
                                          h["stage0.0.bias"]["data_offsets"][1].get<std::uint64_t>() + 4};
    c.expect_rejected("model", dump(j), "without gaps or overlaps");
    j = h;
    j["stage2.3.bias"]["data_offsets"][1] = 1u << 30;
    c.expect_rejected("model", dump(j), "not a range within");
    j = h;
    j["stage2.3.bias"]["data_offsets"] = {8, 4};
    c.expect_rejected("model", dump(j), "not a range within");
    j = h;
    j["stage2.3.bias"]["data_offsets"] = {-4, 12};
    c.expect_rejected("model", dump(j), "no data_offsets [begin, end] of whole numbers");
    j = h;
    j["stage2.3.bias"]["shape"] = {1ull << 62, 1ull << 62};
    c.expect_rejected("model", dump(j), "more bytes than 64 bits count");
    j = h;
    j["stage2.3.bias"]["shape"] = {5};
    c.expect_rejected("model", dump(j), "needs 20 bytes, but its data_offsets");
    j = h;
    j["stage2.3.bias"]["shape"] = {2.5};
    c.expect_rejected("model", dump(j), "not a whole number");
  }
  SUBCASE("a wrong or unknown dtype") {
    auto j = h;
    j["stage0.0.weight"]["dtype"] = "I32";
    c.expect_rejected("model", dump(j), "'stage0.0.weight' is I32, expected F32");
    j["stage0.0.weight"]["dtype"] = "F33";
    c.expect_rejected("model", dump(j), "unknown dtype 'F33'");
    j = hs;
    j["stage0.0.weight.exp_avg"]["dtype"] = "U32";
    c.expect_rejected("optimizer", dump(j), "'stage0.0.weight.exp_avg' is U32, expected F32");
  }
  SUBCASE("a missing or an extra name") {
    auto j = h;
    j["stage0.9.weight"] = j["stage0.2.weight"];
    j.erase("stage0.2.weight");
    c.expect_rejected("model", dump(j), "no tensor 'stage0.2.weight'");
    c.expect_rejected("model", dump(j), "unexpected tensor 'stage0.9.weight'");
    j = h;
    const auto end = j["stage2.3.bias"]["data_offsets"][1];
    j["extra"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {end, end}}};
    c.expect_rejected("model", dump(j), "unexpected tensor 'extra'");
    j = hs;
    j.erase("stage2.3.weight.max_exp_avg_sq");
    j["stage2.3.weight.other"] = hs["stage2.3.weight.max_exp_avg_sq"];
    c.expect_rejected("optimizer", dump(j), "no tensor 'stage2.3.weight.max_exp_avg_sq'");
  }
  SUBCASE("the weights of another network") {
    using Other = Pipeline<Stage<Device<0>, Linear<6, 10>, Tanh, Linear<10, 12>, ReLU>, Stage<Device<1>, Sigmoid>,
                           Stage<Device<2>, GELU, Linear<12, 8>, GELUTanh, Linear<8, 4>, Identity>>;
    Other other(c.ctx, 1);
    save(other, c.dir / "other.safetensors");
    c.expect_rejected("model", test::read_bytes(c.dir / "other.safetensors"), "has shape [10, 6], expected [12, 6]");
    c.expect_rejected("model", test::read_bytes(c.dir / "other.safetensors"),
                      "It was saved from the network Stage<Device<0>, Linear<6, 10>");
    test::CheckpointNet<double> wide(c.ctx, 1);
    save(wide, c.dir / "double.safetensors");
    c.expect_rejected("model", test::read_bytes(c.dir / "double.safetensors"), "is F64, expected F32");
  }
  SUBCASE("the optimizer file of another optimizer, other hyperparameters or steps, or the wrong file") {
    optim::SGD sgd(c.net, {.lr = 0.1f, .momentum = 0.5f});
    save_checkpoint(c.dir / "sgd", c.net, sgd);
    c.expect_rejected("optimizer", test::read_bytes(c.dir / "sgd/optimizer.safetensors"),
                      "it holds the state of optimizer SGD, not of Adam");
    auto j = hs;
    j["__metadata__"]["tandem.optimizer"] = "AdamW";
    c.expect_rejected("optimizer", dump(j), "it holds the state of optimizer AdamW, not of Adam");
    j = hs;
    j["__metadata__"]["eps"] = "1e-06";
    c.expect_rejected("optimizer", dump(j), "its eps is 1e-06, this optimizer's is 9.99999994e-09");
    j = hs;
    j["__metadata__"]["stage2.step"] = "-1";
    c.expect_rejected("optimizer", dump(j), "its stage2.step is -1, not a step count");
    j = hs;
    j["__metadata__"]["lr"] = "nan";
    c.expect_rejected("optimizer", dump(j), "its lr 'nan' is not a finite number >= 0");
    c.expect_rejected("optimizer", c.model, "does not fit this optimizer");
    c.expect_rejected("model", c.state, "holds tandem's optimizer state, not a network's weights");
  }
}

TEST_CASE("checkpoint: load_checkpoint takes only the optimizer of the same network") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_owner");
  Net a(ctx, 1), b(ctx, 2);
  optim::SGD opt_a(a, {.lr = 0.1f});
  save_checkpoint(dir.path, a, opt_a);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir.path, b, opt_a), doctest::Contains("built for another network"), Error);
  CHECK_THROWS_WITH_AS(save_checkpoint(dir.path, b, opt_a), doctest::Contains("built for another network"), Error);
}

TEST_CASE("checkpoint: a failed save leaves no file, and no temporary one, under any name") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_write");
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.1f});
  const auto entries = [&] {
    std::vector<std::string> names;
    for (const auto &e : fs::recursive_directory_iterator(dir.path)) names.push_back(e.path().filename().string());
    return names;
  };
  // A directory that does not exist, and one that cannot exist (its parent is a file): root may
  // write anywhere, so these stand for a folder that is not writable.
  CHECK_THROWS_WITH_AS(save(net, dir / "missing/w.safetensors"), doctest::Contains("cannot write"), Error);
  test::write_bytes(dir / "file", {std::byte{1}});
  CHECK_THROWS_WITH_AS(save(net, dir / "file/w.safetensors"), doctest::Contains("Not a directory"), Error);
  CHECK_THROWS_WITH_AS(save_checkpoint(dir / "file/ckpt", net, opt), doctest::Contains("cannot make the directory"),
                       Error);
  CHECK(entries() == std::vector<std::string>{"file"});
  // The rename fails after the temporary file is written (the final name is a directory): the
  // temporary file goes, the directory stays as it was.
  fs::create_directory(dir / "taken");
  CHECK_THROWS_WITH_AS(save(net, dir / "taken"), doctest::Contains("renaming"), Error);
  CHECK(entries().size() == 2);
  CHECK(fs::is_directory(dir / "taken"));
  // A save over an existing file replaces it whole.
  save(net, dir / "w.safetensors");
  Net other(ctx, 2);
  save(other, dir / "w.safetensors");
  load(net, dir / "w.safetensors");
  CHECK(test::same_bits(test::weights(net), test::weights(other)));
  CHECK(entries().size() == 3);
}

TEST_CASE("checkpoint: save_sharded writes a file per stage and an index; load reads them back, or rejects them") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_sharded");
  Net a(ctx, 1), b(ctx, 2);
  save_sharded(a, dir.path);
  const auto index = dir / "model.safetensors.index.json";
  // Stage 1 has no parameters: two shards, numbered over the stages that have some.
  const auto first = checkpoint::SafetensorsFile::read(dir / "model-00001-of-00002.safetensors");
  const auto second = checkpoint::SafetensorsFile::read(dir / "model-00002-of-00002.safetensors");
  CHECK(first.tensors().size() == 4);
  CHECK(second.tensors().size() == 4);
  CHECK(first.find("stage0.2.weight"));
  CHECK(second.find("stage2.3.bias"));
  const auto bytes = test::read_bytes(index);
  const auto json = nlohmann::json::parse(reinterpret_cast<const char *>(bytes.data()),
                                          reinterpret_cast<const char *>(bytes.data() + bytes.size()));
  CHECK(json["weight_map"]["stage2.1.weight"] == "model-00002-of-00002.safetensors");
  CHECK(json["metadata"]["total_size"] == Net::parameter_count * sizeof(float));
  load(b, index);
  CHECK(test::same_bits(test::weights(a), test::weights(b)));

  Net c(ctx, 3);
  const auto w = test::weights(c);
  const auto good_index = test::read_bytes(index);
  const auto rejects = [&](const std::string &what) {
    CHECK_THROWS_WITH_AS(load(c, index), doctest::Contains(what.c_str()), Error);
    CHECK(test::same_bits(w, test::weights(c)));
    test::write_bytes(index, good_index);
  };
  const auto write_json = [&](const nlohmann::json &k) {
    const std::string text = k.dump();
    const auto *p = reinterpret_cast<const std::byte *>(text.data());
    test::write_bytes(index, std::vector<std::byte>(p, p + text.size()));
  };
  auto j = json;
  j["weight_map"].erase("stage0.0.bias");
  write_json(j);
  rejects("no entry for 'stage0.0.bias'");
  j = json;
  j["weight_map"]["stage0.0.bias"] = "../model-00001-of-00002.safetensors";
  write_json(j);
  rejects("not a file name beside the index");
  j = json;
  j["weight_map"]["stage0.0.bias"] = "model-00002-of-00002.safetensors"; // the wrong shard
  write_json(j);
  try {
    load(c, index);
  } catch (const Error &e) { // the hint names this network once
    CHECK(contains(e.what(), ". This network is Stage<Device<0>, Linear<6, 12>"));
    CHECK_FALSE(contains(e.what(), "This network is This"));
  }
  rejects("unexpected tensor 'stage0.0.bias'");
  write_json(nlohmann::json::array());
  rejects("no \"weight_map\" object");
  test::write_bytes(index, {std::byte{'{'}});
  rejects("not valid JSON");
  fs::remove(dir / "model-00002-of-00002.safetensors");
  rejects("cannot open");
}

namespace {

// Trains `epochs` epochs of two steps, the schedule stepping after each; saves with the schedule
// after `saved` of them. A network built with another seed, a fresh optimizer and a fresh schedule
// of the same options then loads the checkpoint and trains the rest: losses, parameters, optimizer
// state, rates and the schedule's counters agree bit for bit. Without the schedule in the file (a
// fresh schedule after a three-argument load) the rates differ, so the check can fail.
template <class MakeSchedule> void check_schedule_resume(MakeSchedule make) {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_schedule");
  const loss::CrossEntropy ce;
  constexpr std::size_t saved = 3, epochs = 7;
  const auto data = batches(2 * epochs, 31);
  const auto train_epoch = [&](Net &net, optim::Adam &opt, auto &sched, std::size_t e) {
    std::vector<float> losses;
    for (std::size_t k = 2 * e; k < 2 * e + 2; ++k) losses.push_back(net.train_step(data[k].x, data[k].y, ce, opt));
    sched.step();
    losses.push_back(opt.lr());
    return losses;
  };

  Net a(ctx, 11);
  optim::Adam opt_a(a, {.lr = 1e-2f});
  auto sched_a = make(opt_a);
  for (std::size_t e = 0; e < saved; ++e) train_epoch(a, opt_a, *sched_a.back(), e);
  save_checkpoint(dir.path, a, opt_a, *sched_a.back());
  std::vector<float> losses_a;
  for (std::size_t e = saved; e < epochs; ++e) {
    const auto l = train_epoch(a, opt_a, *sched_a.back(), e);
    losses_a.insert(losses_a.end(), l.begin(), l.end());
  }

  Net b(ctx, 99);
  optim::Adam opt_b(b, {.lr = 1e-2f});
  auto sched_b = make(opt_b);
  load_checkpoint(dir.path, b, opt_b, *sched_b.back());
  CHECK(sched_b.back()->last_epoch() == static_cast<int>(saved));
  std::vector<float> losses_b;
  for (std::size_t e = saved; e < epochs; ++e) {
    const auto l = train_epoch(b, opt_b, *sched_b.back(), e);
    losses_b.insert(losses_b.end(), l.begin(), l.end());
  }
  CHECK(test::same_bits(losses_a, losses_b));
  CHECK(test::same_bits(test::weights(a), test::weights(b)));
  CHECK(test::same_bits(test::optimizer_state(a, opt_a), test::optimizer_state(b, opt_b)));
  const auto sa = sched_a.back()->state(), sb = sched_b.back()->state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].last_epoch == sb[i].last_epoch);
    CHECK(test::same_bits(std::vector<double>{sa[i].base_lr, sa[i].group_lr},
                          std::vector<double>{sb[i].base_lr, sb[i].group_lr}));
  }

  // The three-argument load restores the rate but not the schedule: its next rates differ.
  Net c(ctx, 5);
  optim::Adam opt_c(c, {.lr = 1e-2f});
  auto sched_c = make(opt_c);
  load_checkpoint(dir.path, c, opt_c);
  std::vector<float> rates_a, rates_c;
  for (std::size_t e = saved; e < epochs; ++e) {
    sched_c.back()->step();
    rates_c.push_back(opt_c.lr());
    rates_a.push_back(losses_a[3 * (e - saved) + 2]);
  }
  CHECK_FALSE(test::same_bits(rates_a, rates_c));
}

using Schedules = std::vector<std::unique_ptr<optim::LRScheduler>>;

} // namespace

TEST_CASE("checkpoint: a run with an LR schedule resumes bit for bit, for every schedule") {
  SUBCASE("CosineAnnealingLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::CosineAnnealingLR>(opt, optim::CosineAnnealingLROptions{.T_max = 5}));
      return s;
    });
  }
  SUBCASE("SequentialLR of LinearLR and CosineAnnealingLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::LinearLR>(opt, optim::LinearLROptions{.total_iters = 2}));
      s.push_back(std::make_unique<optim::CosineAnnealingLR>(opt, optim::CosineAnnealingLROptions{.T_max = 4}));
      auto *warm = s[0].get(), *cosine = s[1].get();
      s.push_back(std::make_unique<optim::SequentialLR>(
          opt, optim::SequentialLROptions{.schedulers = {warm, cosine}, .milestones = {2}}));
      return s;
    });
  }
  SUBCASE("StepLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::StepLR>(opt, optim::StepLROptions{.step_size = 2, .gamma = 0.5}));
      return s;
    });
  }
  SUBCASE("MultiStepLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::MultiStepLR>(opt, optim::MultiStepLROptions{.milestones = {1, 4, 5}}));
      return s;
    });
  }
  SUBCASE("ExponentialLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::ExponentialLR>(opt, optim::ExponentialLROptions{.gamma = 0.7}));
      return s;
    });
  }
  SUBCASE("LinearLR") {
    check_schedule_resume([](optim::Adam &opt) {
      Schedules s;
      s.push_back(std::make_unique<optim::LinearLR>(opt, optim::LinearLROptions{.total_iters = 6}));
      return s;
    });
  }
}

TEST_CASE("checkpoint: a schedule of another kind or options, or none in the file, is an Error naming both") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_schedule_bad");
  Net net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.1f});
  optim::CosineAnnealingLR saved(opt, {.T_max = 10});
  saved.step();
  save_checkpoint(dir.path, net, opt, saved);
  const auto w = test::weights(net);
  const auto rejects = [&](optim::LRScheduler &sched, const char *what) {
    const auto state = sched.state();
    CHECK_THROWS_WITH_AS(load_checkpoint(dir.path, net, opt, sched), doctest::Contains(what), Error);
    CHECK(test::same_bits(w, test::weights(net)));
    CHECK(sched.state().front().last_epoch == state.front().last_epoch);
  };
  optim::CosineAnnealingLR longer(opt, {.T_max = 20});
  rejects(longer, "holds the LR schedule CosineAnnealingLR{T_max=10, eta_min=0}, but this run has "
                  "CosineAnnealingLR{T_max=20, eta_min=0}");
  optim::StepLR step(opt, {.step_size = 3});
  rejects(step, "but this run has StepLR{step_size=3, gamma=0.10000000000000001}");
  save_checkpoint(dir.path, net, opt); // without a schedule
  rejects(longer, "holds no LR schedule, and this run has CosineAnnealingLR{T_max=20");
  load_checkpoint(dir.path, net, opt); // the three-argument form still reads it
}

TEST_CASE("checkpoint: all or nothing - files of different saves are refused, stale temporary files ignored") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_torn");
  const loss::CrossEntropy ce;
  const auto data = batches(2, 41);
  Net net(ctx, 1);
  optim::Adam opt(net, {.lr = 1e-2f});
  net.train_step(data[0].x, data[0].y, ce, opt);
  save_checkpoint(dir.path, net, opt);
  const auto old_state = test::read_bytes(dir / "optimizer.safetensors");
  const auto model_id = checkpoint::SafetensorsFile::read(dir / "model.safetensors").meta("tandem.checkpoint");
  REQUIRE(model_id);
  CHECK(checkpoint::SafetensorsFile::read(dir / "optimizer.safetensors").meta("tandem.checkpoint") == model_id);

  // The second file of a save cannot be written (its name is taken by a directory): the new
  // weights stand beside the old optimizer state, which a load must refuse.
  net.train_step(data[1].x, data[1].y, ce, opt);
  fs::remove(dir / "optimizer.safetensors");
  fs::create_directory(dir / "optimizer.safetensors");
  CHECK_THROWS_WITH_AS(save_checkpoint(dir.path, net, opt), doctest::Contains("renaming"), Error);
  fs::remove(dir / "optimizer.safetensors");
  test::write_bytes(dir / "optimizer.safetensors", old_state);
  Net other(ctx, 2);
  optim::Adam other_opt(other, {.lr = 1e-2f});
  const auto w = test::weights(other);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir.path, other, other_opt), doctest::Contains("belong to different saves"),
                       Error);
  CHECK(test::same_bits(w, test::weights(other)));

  // A save that was killed leaves a temporary file: loads never read it, the next save removes it.
  save_checkpoint(dir.path, net, opt);
  test::write_bytes(dir / ".model.safetensors.tmp.1.2", {std::byte{7}});
  load_checkpoint(dir.path, other, other_opt);
  CHECK(test::same_bits(test::weights(net), test::weights(other)));
  save_checkpoint(dir.path, net, opt);
  CHECK_FALSE(fs::exists(dir / ".model.safetensors.tmp.1.2"));
}

TEST_CASE("checkpoint: step counts beyond 2^53 are refused") {
  BadFileCase c;
  auto j = test::header_of(c.state);
  for (const char *count : {"18446744073709551615", "9223372036854775807", "9007199254740993"}) {
    j["__metadata__"]["stage0.step"] = count;
    c.expect_rejected("optimizer", j.dump(), std::string("its stage0.step is ") + count + ", more than the");
  }
}

TEST_CASE("checkpoint: hostile headers - deep nesting, many entries, a NUL byte, a FIFO, a sparse 1 TB file") {
  BadFileCase c;
  const auto h = test::header_of(c.model);
  SUBCASE("brackets nested 100000 deep in a shape or in an index are an Error, not a stack overflow") {
    std::string text = h.dump();
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    const std::string shape = "\"shape\":" + h["stage0.0.bias"]["shape"].dump();
    const auto at = text.find(shape, text.find("\"stage0.0.bias\""));
    REQUIRE(at != std::string::npos);
    text.replace(at, shape.size(), "\"shape\":" + deep);
    c.expect_rejected("model", text, "nests deeper than 128 levels");
    save_sharded(c.net, c.dir / "sharded");
    const std::string index = "{\"weight_map\": {\"stage0.0.bias\": " + deep + "}}";
    const auto *p = reinterpret_cast<const std::byte *>(index.data());
    test::write_bytes(c.dir / "sharded/model.safetensors.index.json", std::vector<std::byte>(p, p + index.size()));
    CHECK_THROWS_WITH_AS(load(c.net, c.dir / "sharded/model.safetensors.index.json"),
                         doctest::Contains("nests deeper than 128 levels"), Error);
  }
  SUBCASE("a NUL byte and bytes after it are refused; trailing spaces (the format's padding) are not") {
    c.expect_rejected("model", h.dump() + std::string("\0garbage\xff", 9), "holds a NUL byte");
    test::write_bytes(c.dir / "model.safetensors", test::with_header(c.model, h.dump() + "        "));
    Net other(c.ctx, 3);
    load(other, c.dir / "model.safetensors");
  }
  SUBCASE("40000 entries parse in linear time") {
    std::vector<float> values(40000, 1.0f);
    std::vector<checkpoint::TensorView> views;
    for (std::size_t i = 0; i < values.size(); ++i)
      views.push_back({"t" + std::to_string(i), "F32", {1}, std::as_bytes(std::span<const float>(&values[i], 1))});
    checkpoint::write_safetensors(c.dir / "many.safetensors", views, {});
    const auto start = std::chrono::steady_clock::now();
    const auto f = checkpoint::SafetensorsFile::read(c.dir / "many.safetensors");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(f.tensors().size() == values.size());
    CHECK(seconds < 5); // quadratic, it took 17 s and more
  }
  SUBCASE("a FIFO is refused at once, without waiting for a writer") {
    const auto fifo = c.dir / "fifo.safetensors";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto result = std::async(std::launch::async, [&] {
      try {
        load(c.net, fifo);
        return std::string("no Error");
      } catch (const Error &e) {
        return std::string(e.what());
      }
    });
    if (result.wait_for(std::chrono::seconds(20)) == std::future_status::timeout) {
      FAIL_CHECK("load of a FIFO blocks");
      const int fd = ::open(fifo.c_str(), O_WRONLY); // lets the blocked open return
      ::close(fd);
    }
    CHECK(contains(result.get(), "is not a regular file"));
  }
  SUBCASE("a sparse 1 TB file is an Error, not std::bad_alloc, and is not read") {
    const auto path = c.dir / "model.safetensors";
    test::write_bytes(path, c.model);
    fs::resize_file(path, 1ull << 40);
    const auto w = test::weights(c.net);
    CHECK_THROWS_WITH_AS(load(c.net, path), doctest::Contains("but the data has"), Error);
    // A header that claims the terabyte for one tensor: the network's shapes refuse it unread, and a
    // plain read is an Error (allocation capped here, as memory would be).
    auto j = h;
    const auto data_bytes = (1ull << 40) - 8 - test::header_size(c.model);
    for (auto &[name, info] : j.items())
      if (name != "__metadata__") info = {{"dtype", "U8"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
    j["stage0.0.weight"] = {{"dtype", "U8"}, {"shape", {data_bytes}}, {"data_offsets", {0, data_bytes}}};
    auto bytes = test::with_header(c.model, j.dump());
    bytes.resize(8 + test::header_size(bytes));
    test::write_bytes(path, bytes);
    fs::resize_file(path, 8 + test::header_size(bytes) + data_bytes);
    CHECK_THROWS_WITH_AS(load(c.net, path), doctest::Contains("is U8, expected F32"), Error);
    CHECK(test::same_bits(w, test::weights(c.net)));
    const backend::ScopedAllocationLimit limit(std::size_t{1} << 30);
    const std::string reading = "reading '" + path.string() + "'";
    CHECK_THROWS_WITH_AS(checkpoint::SafetensorsFile::read(path), doctest::Contains(reading.c_str()), Error);
  }
}

TEST_CASE("checkpoint: an index of weights alone (save_sharded's) beside a checkpoint's pair leaves the pair in use") {
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_index_beside");
  Net a(ctx, 1), b(ctx, 2);
  optim::SGD opt_a(a, {.lr = 0.1f}), opt_b(b, {.lr = 0.1f});
  save_sharded(b, dir.path);
  save_checkpoint(dir.path, a, opt_a);
  CHECK(fs::exists(dir / "model.safetensors.index.json")); // not a checkpoint's: it stays
  load_checkpoint(dir.path, b, opt_b);
  CHECK(test::same_bits(test::weights(a), test::weights(b)));
}

TEST_CASE("checkpoint: a Recompute network and its Sequential twin read each other's files") {
  using Block = Residual<LayerNorm<8>, Linear<8, 16>, GELU, Linear<16, 8>>;
  using Kept = Pipeline<Stage<Device<0>, Linear<5, 8>, Sequential<Block, Block>>, Stage<Device<1>, Linear<8, 3>>>;
  using Recomputed = Pipeline<Stage<Device<0>, Linear<5, 8>, Recompute<Block, Block>>, Stage<Device<1>, Linear<8, 3>>>;
  CHECK(checkpoint::signature<Kept>() == checkpoint::signature<Recomputed>());
  Context ctx({.devices = "host"});
  const test::ScratchDir dir("ckpt_recompute");
  Kept a(ctx, 1);
  Recomputed b(ctx, 2);
  REQUIRE_FALSE(test::same_bits(test::weights(a), test::weights(b)));
  save(a, dir / "w.safetensors");
  load(b, dir / "w.safetensors");
  CHECK(test::same_bits(test::weights(a), test::weights(b)));
  CHECK(b.parameter("stage0.1.1.0.weight").to_host() == a.parameter("stage0.1.1.0.weight").to_host());
  const auto x = test::uniform<float>(4 * 5, 3);
  CHECK(test::same_bits(a.forward(x), b.forward(x)));
}
