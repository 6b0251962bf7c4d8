// SPDX-License-Identifier: Apache-2.0
// Real data, end to end: the 1,797 handwritten digits (8x8 pixels, 10 classes) that scikit-learn
// ships, read with zlib; a two-stage MLP trained with GPipe's micro-batches and Adam; the test
// accuracy; a checkpoint saved, loaded into a network built from another seed, and evaluated again.
//
//   example_04_digits [--data digits.csv.gz] [--out directory]
//
// The data is found in Debian's python3-sklearn (or any Python's sklearn/datasets/data under
// /usr/lib and /usr/local/lib), or where --data or TANDEM_DIGITS says. --out keeps the checkpoint
// and the test set with tandem's predictions (digits_test.safetensors) for the PyTorch check
// (tests/reference); by default they go to a temporary folder that is removed. Exits non-zero if
// the test accuracy is below 95 % or the loaded network disagrees with the trained one.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <zlib.h>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;
namespace fs = std::filesystem;

constexpr std::size_t pixels = 64, classes = 10, test_size = 360, batch = 64, epochs = 20;

using Net = Pipeline<Stage<Device<0>, Linear<pixels, 128>, ReLU>, // (b, 64) -> (b, 128)
                     Stage<Device<1>, Linear<128, classes>>>;     // (b, 128) -> (b, 10)

struct Digits {
  std::vector<float> x;            // (n, 64), pixels scaled from 0..16 to 0..1
  std::vector<std::int32_t> label; // (n)
  std::size_t size() const { return label.size(); }
};

std::optional<fs::path> find_digits() {
  if (const char *env = std::getenv("TANDEM_DIGITS")) return fs::path(env);
  const fs::path inside = "sklearn/datasets/data/digits.csv.gz";
  for (const fs::path root : {"/usr/lib", "/usr/local/lib"}) {
    std::error_code ec;
    for (const auto &python : fs::directory_iterator(root, ec)) {
      if (!python.path().filename().string().starts_with("python3")) continue;
      for (const char *packages : {"dist-packages", "site-packages"})
        if (fs::exists(python.path() / packages / inside)) return python.path() / packages / inside;
    }
  }
  return std::nullopt;
}

// digits.csv.gz: one image a line, 64 pixel values then the label, comma-separated.
Digits read_digits(const fs::path &path) {
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) throw std::runtime_error("cannot open " + path.string());
  std::string text;
  char chunk[1 << 16];
  int n = 0;
  while ((n = gzread(gz, chunk, sizeof chunk)) > 0) text.append(chunk, static_cast<std::size_t>(n));
  const bool failed = n < 0;
  gzclose(gz);
  if (failed) throw std::runtime_error("cannot decompress " + path.string());

  Digits d;
  const char *p = text.c_str();
  std::size_t line = 0;
  while (*p) {
    ++line;
    for (std::size_t i = 0; i <= pixels; ++i) {
      char *end = nullptr;
      const double v = std::strtod(p, &end);
      if (end == p || v < 0 || v > (i < pixels ? 16 : 9))
        throw std::runtime_error(path.string() + ": line " + std::to_string(line) + ", value " + std::to_string(i + 1) +
                                 " is not a pixel (0..16) or a label (0..9)");
      if (i < pixels) d.x.push_back(static_cast<float>(v / 16));
      else d.label.push_back(static_cast<std::int32_t>(v));
      p = end;
      if (*p == ',' || *p == '\r' || *p == '\n') ++p;
      if (*p == '\n') ++p;
    }
  }
  return d;
}

// The rows of `d` at `rows`, in that order.
Digits take(const Digits &d, std::span<const std::size_t> rows) {
  Digits out;
  for (const std::size_t r : rows) {
    out.x.insert(out.x.end(), d.x.begin() + r * pixels, d.x.begin() + (r + 1) * pixels);
    out.label.push_back(d.label[r]);
  }
  return out;
}

// A Fisher-Yates shuffle on mt19937_64's raw numbers: the same order with every standard library.
void shuffle(std::vector<std::size_t> &v, std::mt19937_64 &rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

std::vector<std::int32_t> predict(Net &net, const Digits &d, std::vector<float> *logits = nullptr) {
  const auto out = net.forward(std::span<const float>(d.x)); // (n, 10)
  std::vector<std::int32_t> p(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) {
    const auto row = out.begin() + static_cast<std::ptrdiff_t>(i * classes);
    p[i] = static_cast<std::int32_t>(std::max_element(row, row + classes) - row);
  }
  if (logits) *logits = out;
  return p;
}
double accuracy(const std::vector<std::int32_t> &p, const Digits &d) {
  std::size_t right = 0;
  for (std::size_t i = 0; i < d.size(); ++i) right += p[i] == d.label[i];
  return 100.0 * static_cast<double>(right) / static_cast<double>(d.size());
}

int main(int argc, char **argv) {
  std::optional<fs::path> data_path, out_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--data") data_path = argv[i + 1];
    else if (flag == "--out") out_dir = argv[i + 1];
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "usage: %s [--data digits.csv.gz] [--out directory]\n", argv[0]);
    return 2;
  }
  if (!data_path) data_path = find_digits();
  if (!data_path) {
    std::fprintf(stderr, "digits.csv.gz not found: install python3-sklearn, or pass --data or set TANDEM_DIGITS\n");
    return 1;
  }

  try {
    const Digits all = read_digits(*data_path);
    if (all.size() != 1797)
      throw std::runtime_error(data_path->string() + " holds " + std::to_string(all.size()) +
                               " digits, not scikit-learn's 1,797");
    // A fixed split: the last 360 of one fixed shuffle are the test set.
    std::mt19937_64 rng(2026);
    std::vector<std::size_t> order(all.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    shuffle(order, rng);
    const std::size_t train_size = all.size() - test_size;
    const Digits train = take(all, std::span(order).first(train_size));
    const Digits test = take(all, std::span(order).subspan(train_size));
    std::printf("%zu digits from %s: %zu to train on, %zu to test\n", all.size(), data_path->c_str(), train_size,
                test_size);

    Context ctx;
    Net net(ctx, /*seed=*/7);
    optim::Adam opt(net, {.lr = 5e-3f});
    const loss::CrossEntropy loss;
    const schedule::GPipe sched{.micro_batches = 4};

    std::vector<std::size_t> rows(train_size);
    for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = i;
    double test_accuracy = 0;
    for (std::size_t epoch = 1; epoch <= epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      shuffle(rows, rng);
      double total = 0;
      for (std::size_t first = 0; first < train_size; first += batch) {
        const std::size_t n = std::min(batch, train_size - first); // the last batch is smaller
        const Digits b = take(train, std::span(rows).subspan(first, n));
        total += static_cast<double>(net.train_step(b.x, b.label, loss, opt, sched)) * static_cast<double>(n);
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      test_accuracy = accuracy(predict(net, test), test);
      std::printf("epoch %2zu  loss %.4f  train accuracy %5.1f %%  test accuracy %5.1f %%  %6.1f ms\n", epoch,
                  total / static_cast<double>(train_size), accuracy(predict(net, train), train), test_accuracy, ms);
    }
    if (test_accuracy < 95) {
      std::printf("FAILED: test accuracy %.1f %% is below 95 %%\n", test_accuracy);
      return 1;
    }

    // The checkpoint, and a network from another seed that resumes from it.
    const bool keep = out_dir.has_value();
    const fs::path dir =
        keep ? *out_dir : fs::temp_directory_path() / ("tandem_digits_" + std::to_string(std::random_device{}()));
    save_checkpoint(dir, net, opt);
    std::vector<float> logits;
    const auto trained = predict(net, test, &logits);
    Net fresh(ctx, /*seed=*/8);
    optim::Adam fresh_opt(fresh, {.lr = 5e-3f});
    const double before = accuracy(predict(fresh, test), test);
    load_checkpoint(dir, fresh, fresh_opt);
    const auto loaded = predict(fresh, test);
    std::printf("saved %s (%s, %s); a network from another seed (test accuracy %.1f %%) loads it: test accuracy "
                "%.1f %%, %s predictions\n",
                dir.c_str(), checkpoint::model_file, checkpoint::optimizer_file, before, accuracy(loaded, test),
                loaded == trained ? "the same" : "DIFFERENT");
    if (keep) {
      // The test set, tandem's outputs and predictions, for PyTorch to check against.
      const auto bytes = [](const auto &v) { return std::as_bytes(std::span(v)); };
      const std::vector<checkpoint::TensorView> tensors{{"x", "F32", {test_size, pixels}, bytes(test.x)},
                                                        {"label", "I32", {test_size}, bytes(test.label)},
                                                        {"logits", "F32", {test_size, classes}, bytes(logits)},
                                                        {"prediction", "I32", {test_size}, bytes(trained)}};
      checkpoint::write_safetensors(dir / "digits_test.safetensors", tensors, {{"format", "pt"}});
    } else {
      fs::remove_all(dir);
    }
    return loaded == trained ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "FAILED: %s\n", e.what());
    return 1;
  }
}
