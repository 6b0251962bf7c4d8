// SPDX-License-Identifier: Apache-2.0
// Random corruptions of valid checkpoint files, with a fixed seed: each load either succeeds or
// throws tandem::Error, and a throw leaves parameters and optimizer state bit for bit as they were.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

#include "../support/checkpoint_files.hpp"
#include "../support/random_data.hpp"

using namespace tandem;

namespace {

using Net = test::CheckpointNet<float>;

// One corruption of `b`: bit flips anywhere, JSON characters in the header, truncation, a new
// header size, an edited JSON value, bytes inserted or removed in the header, bytes appended.
std::vector<std::byte> corrupt(std::vector<std::byte> b, std::mt19937_64 &rng) {
  const auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  const std::size_t header_end = 8 + test::header_size(b);
  switch (pick(7)) {
  case 0: // bit flips anywhere
    for (std::size_t k = 1 + pick(8); k > 0; --k) b[pick(b.size())] ^= std::byte(1u << pick(8));
    break;
  case 1: { // JSON-significant characters in the header
    static constexpr std::string_view alphabet = "{}[]\",:-.e0123456789 \\/FIU8a\x01\xc3";
    for (std::size_t k = 1 + pick(3); k > 0; --k)
      b[8 + pick(header_end - 8)] = std::byte(alphabet[pick(alphabet.size())]);
    break;
  }
  case 2: // truncation
    b.resize(pick(b.size()));
    break;
  case 3: { // a header size that lies
    const std::uint64_t n = test::header_size(b);
    const std::uint64_t sizes[] = {
        0,           1,           n - 1,      n + 1, n - 8, n + 8, n + pick(64), b.size(), b.size() - 8,
        100'000'000, 100'000'001, UINT64_MAX, rng()};
    test::set_header_size(b, sizes[pick(std::size(sizes))]);
    break;
  }
  case 4: { // a JSON value replaced, removed or repeated
    auto j = test::header_of(b);
    auto it = j.begin();
    std::advance(it, pick(j.size()));
    const nlohmann::json values[] = {-1,
                                     0,
                                     1,
                                     3,
                                     4,
                                     1ull << 40,
                                     UINT64_MAX,
                                     2.5,
                                     "F32",
                                     "F64",
                                     "I32",
                                     "X",
                                     nullptr,
                                     nlohmann::json::array(),
                                     nlohmann::json::object(),
                                     {1, 2},
                                     {0, 4},
                                     {4, 0}};
    const auto value = values[pick(std::size(values))];
    std::string text;
    if (it->is_object() && !it->empty()) {
      auto field = it->begin();
      std::advance(field, pick(it->size()));
      switch (pick(4)) {
      case 0: *field = value; break;
      case 1: it->erase(field); break;
      case 2:
        if (field->is_array() && !field->empty()) (*field)[pick(field->size())] = value;
        break;
      default: text = "{\"" + it.key() + "\":" + it->dump() + "," + j.dump().substr(1); break;
      }
    } else {
      *it = value;
    }
    b = test::with_header(b, text.empty() ? j.dump() : text);
    break;
  }
  case 5: { // bytes inserted into or removed from the header (the size stays)
    const auto at = static_cast<std::ptrdiff_t>(8 + pick(header_end - 8));
    if (pick(2)) b.insert(b.begin() + at, 1 + pick(8), std::byte('x'));
    else
      b.erase(b.begin() + at, b.begin() + std::min<std::ptrdiff_t>(at + 1 + static_cast<std::ptrdiff_t>(pick(8)),
                                                                   static_cast<std::ptrdiff_t>(b.size())));
    break;
  }
  default: // bytes appended
    b.insert(b.end(), 1 + pick(16), std::byte(rng()));
    break;
  }
  return b;
}

} // namespace

TEST_CASE("checkpoint: thousands of corrupted files load or throw Error, and a throw changes nothing") {
  // On the calling thread: a case is a few small copies, each of which would otherwise wait for a
  // worker thread to wake.
  Context ctx({.devices = "host", .host_execution = HostExecution::calling_thread});
  const test::ScratchDir dir("ckpt_fuzz");
  Net net(ctx, 31);
  optim::Adam opt(net, {.lr = 1e-2f, .amsgrad = true});
  const loss::CrossEntropy ce;
  const auto x = test::uniform<float>(8 * Net::in_features, 32);
  const auto y = test::labels(8, Net::out_features, 33);
  net.train_step(x, y, ce, opt);
  save_checkpoint(dir.path, net, opt);
  const auto model = test::read_bytes(dir / "model.safetensors");
  const auto state = test::read_bytes(dir / "optimizer.safetensors");
  const test::ScratchDir good("ckpt_fuzz_good");
  test::write_bytes(good / "model.safetensors", model);
  test::write_bytes(good / "optimizer.safetensors", state);
  net.train_step(x, y, ce, opt); // what a failed load must keep differs from the files
  const auto weights = test::weights(net);
  const auto moments = test::optimizer_state(net, opt);

  std::mt19937_64 rng(20261202);
  constexpr std::size_t cases = 4000;
  std::size_t rejected = 0, loaded = 0;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < cases; ++i) {
    const bool model_file = rng() % 2;
    test::write_bytes(dir / "model.safetensors", model_file ? corrupt(model, rng) : model);
    test::write_bytes(dir / "optimizer.safetensors", model_file ? state : corrupt(state, rng));
    try {
      if (model_file && rng() % 2) load(net, dir / "model.safetensors");
      else load_checkpoint(dir.path, net, opt);
      ++loaded; // a corruption of the data alone leaves a valid file: put the state back
      load_checkpoint(good.path, net, opt);
      net.train_step(x, y, ce, opt);
    } catch (const Error &) {
      ++rejected;
    } catch (const std::exception &e) {
      FAIL("case ", i, ": not a tandem::Error: ", e.what());
    }
    // After a rejection nothing changed; after a load the state was put back the same way.
    if (!test::same_bits(weights, test::weights(net)) || !test::same_bits(moments, test::optimizer_state(net, opt)))
      FAIL("case ", i, " changed the parameters or the optimizer state");
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE(cases, " corrupted checkpoints: ", rejected, " rejected, ", loaded, " loaded (", seconds, " s)");
  CHECK(rejected + loaded == cases);
  CHECK(rejected > cases / 2); // most corruptions break the format
  CHECK(loaded > 0);           // and some only change the data, which loads
}
