// SPDX-License-Identifier: Apache-2.0
// A character-level GPT on real text, split over two stages: the English fortunes Debian's
// `fortunes` package ships, a fixed held-out tenth, AdamW and GPipe's micro-batches, a progress
// line, the held-out loss in bits per character, sampled text and a checkpoint PyTorch loads.
//
//   example_06_char_gpt [--steps N] [--text file ...] [--out directory]
//
// The text is every plain file of /usr/share/games/fortunes (or the --text files), characters
// outside printable ASCII and newline dropped. Training batch k reads the sequences that start
// at (k * batch + b) * 61 modulo the training text: tests/reference/char_gpt_reference.py trains
// PyTorch on the same batches from the same initial weights. --out keeps init.safetensors,
// model.safetensors and run.json (the run's settings, vocabulary, held-out sequences and
// predictions) there for that check. Exits
// non-zero if training did not lower the held-out loss below that of uniform guessing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;
namespace fs = std::filesystem;

// The model: 4 blocks of width 128 with 4 heads over 64 characters, two blocks a stage.
constexpr std::size_t V = 96, T = 64, D = 128, H = 4, batch = 16;
constexpr std::size_t stride = 61; // training sequence k starts at k * stride (mod the training text)
using Attn = Residual<LayerNorm<D>, CausalSelfAttention<D, H, T>>;
using Mlp = Residual<LayerNorm<D>, Linear<D, 4 * D>, GELU, Linear<4 * D, D>>;
using CharGpt =
    Pipeline<Stage<Device<0>, Embedding<V, D>, PositionalEmbedding<T, D>, Attn, Mlp, Attn, Mlp>, // ids -> (b*T, D)
             Stage<Device<1>, Attn, Mlp, Attn, Mlp, LayerNorm<D>, Linear<D, V>>>;                // -> (b*T, V)

struct Corpus {
  std::string alphabet;          // the vocabulary: the characters that occur, in byte order
  std::vector<std::int32_t> ids; // the text as ids
  std::size_t training = 0;      // the first 90 % train; the rest is held out
};

std::vector<fs::path> default_texts() {
  std::vector<fs::path> files;
  const fs::path dir = "/usr/share/games/fortunes";
  std::error_code ec;
  for (const auto &entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file() && !entry.path().has_extension()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

Corpus read_corpus(const std::vector<fs::path> &files) {
  std::string text;
  for (const auto &file : files) {
    std::ifstream in(file, std::ios::binary);
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::erase_if(text, [](char c) { return c != '\n' && (c < 32 || c > 126); });
  Corpus c;
  std::vector<bool> seen(128, false);
  for (const char ch : text) seen[static_cast<unsigned char>(ch)] = true;
  for (int ch = 0; ch < 128; ++ch)
    if (seen[ch]) c.alphabet += static_cast<char>(ch);
  if (c.alphabet.size() > V) detail::fail("the text has ", c.alphabet.size(), " characters, more than V = ", V);
  std::vector<std::int32_t> id_of(128, 0);
  for (std::size_t i = 0; i < c.alphabet.size(); ++i)
    id_of[static_cast<unsigned char>(c.alphabet[i])] = std::int32_t(i);
  for (const char ch : text) c.ids.push_back(id_of[static_cast<unsigned char>(ch)]);
  c.training = c.ids.size() / 10 * 9;
  return c;
}

// Sequences starting at `starts` (inputs) and the characters after them (targets).
void gather(const Corpus &c, std::span<const std::size_t> starts, std::vector<std::int32_t> &x,
            std::vector<std::int32_t> &y) {
  x.clear(), y.clear();
  for (const std::size_t s : starts) {
    x.insert(x.end(), c.ids.begin() + std::ptrdiff_t(s), c.ids.begin() + std::ptrdiff_t(s + T));
    y.insert(y.end(), c.ids.begin() + std::ptrdiff_t(s + 1), c.ids.begin() + std::ptrdiff_t(s + T + 1));
  }
}

// Mean cross-entropy in nats of the logits (rows, V) against the targets.
double cross_entropy(std::span<const float> logits, std::span<const std::int32_t> targets) {
  double total = 0;
  for (std::size_t r = 0; r < targets.size(); ++r) {
    const float *row = logits.data() + r * V;
    const float top = *std::max_element(row, row + V);
    double sum = 0;
    for (std::size_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - top);
    total += std::log(sum) + top - row[targets[r]];
  }
  return total / double(targets.size());
}

// The held-out sequences: every T characters of the held-out tenth, at most 64 of them.
std::vector<std::size_t> held_out_starts(const Corpus &c) {
  std::vector<std::size_t> starts;
  for (std::size_t s = c.training; s + T + 1 <= c.ids.size() && starts.size() < 64; s += T) starts.push_back(s);
  return starts;
}

int main(int argc, char **argv) {
  std::size_t steps = 300;
  std::vector<fs::path> texts;
  fs::path out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--steps" && i + 1 < argc) steps = std::stoul(argv[++i]);
    else if (a == "--text" && i + 1 < argc) texts.emplace_back(argv[++i]);
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--steps N] [--text file ...] [--out directory]\n", argv[0]);
      return 2;
    }
  }
  try {
    if (texts.empty()) texts = default_texts();
    const Corpus corpus = read_corpus(texts);
    if (corpus.training < (batch + 1) * T)
      detail::fail("the text is too short: ", corpus.ids.size(), " characters (install Debian's fortunes package)");
    std::printf("text: %zu files, %zu characters, a vocabulary of %zu; %zu train, %zu held out\n", texts.size(),
                corpus.ids.size(), corpus.alphabet.size(), corpus.training, corpus.ids.size() - corpus.training);

    Context ctx;
    CharGpt net(ctx, /*seed=*/2026);
    if (!out.empty()) {
      fs::create_directories(out);
      save(net, out / "init.safetensors");
    }
    const optim::AdamWOptions options{.lr = 2e-3f, .weight_decay = 0.01f};
    optim::AdamW opt(net, options);
    const schedule::GPipe gpipe{.micro_batches = 4};
    std::printf("%s%zu parameters on 2 stages, GPipe with 4 micro-batches of %zu sequences of %zu\n",
                ctx.describe().c_str(), CharGpt::parameter_count, batch / 4, T);
    // What each device holds for this network, optimizer and step shape, known before the run.
    std::printf("%s", CharGpt::describe_memory(batch * T, gpipe, options).c_str());

    std::vector<std::int32_t> x, y;
    std::vector<std::size_t> starts(batch);
    const auto begin = std::chrono::steady_clock::now();
    auto last = begin;
    float loss = 0;
    for (std::size_t step = 0; step < steps; ++step) {
      for (std::size_t b = 0; b < batch; ++b) starts[b] = (step * batch + b) * stride % (corpus.training - T - 1);
      gather(corpus, starts, x, y);
      loss = net.train_step(x, y, loss::CrossEntropy{}, opt, gpipe);
      if ((step + 1) % 25 == 0 || step + 1 == steps) {
        const auto now = std::chrono::steady_clock::now();
        const double seconds = std::chrono::duration<double>(now - last).count();
        const std::size_t done = (step + 1) % 25 ? (step + 1) % 25 : 25;
        std::printf("step %4zu  loss %.4f  %.0f tokens/s\n", step + 1, loss, double(done * batch * T) / seconds);
        std::fflush(stdout);
        last = now;
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();

    // Held-out loss: forward is inference (no dropout, no gradients).
    const auto held = held_out_starts(corpus);
    gather(corpus, held, x, y);
    const auto logits = net.forward(std::span<const std::int32_t>(x), gpipe);
    const double nats = cross_entropy(logits, y), bits = nats / std::log(2.0);
    std::printf("trained %zu steps in %.1f s; held-out loss %.4f bits per character (%.4f nats) on %zu characters; "
                "uniform guessing: %.4f\n",
                steps, seconds, bits, nats, y.size(), std::log2(double(corpus.alphabet.size())));

    // A few lines of text, sampled one character at a time from a fixed seed.
    Random rng(7);
    std::vector<std::int32_t> context(x.begin(), x.begin() + T);
    std::string sample;
    for (int i = 0; i < 240; ++i) {
      const auto l = net.forward(std::span<const std::int32_t>(context));
      const float *row = l.data() + (T - 1) * V;
      std::vector<double> p(corpus.alphabet.size());
      const float top = *std::max_element(row, row + p.size());
      double sum = 0;
      for (std::size_t v = 0; v < p.size(); ++v) sum += p[v] = std::exp((double(row[v]) - top) / 0.8);
      double u = rng.uniform(0, sum);
      std::size_t next = 0;
      while (next + 1 < p.size() && u >= p[next]) u -= p[next++];
      sample += corpus.alphabet[next];
      context.erase(context.begin());
      context.push_back(std::int32_t(next));
    }
    std::printf("sampled:\n%s\n", sample.c_str());

    if (!out.empty()) { // what tests/reference/char_gpt_reference.py needs to train and check the same
      save(net, out / "model.safetensors");
      std::ofstream run(out / "run.json");
      auto list = [&](const auto &v) {
        std::string t = "[";
        for (std::size_t i = 0; i < v.size(); ++i) {
          if (i) t += ',';
          t += std::to_string(v[i]);
        }
        return t + "]";
      };
      std::vector<int> alphabet(corpus.alphabet.begin(), corpus.alphabet.end());
      std::vector<std::size_t> predictions; // tandem's next character at each held-out position
      for (std::size_t r = 0; r < y.size(); ++r) {
        const float *row = logits.data() + r * V;
        predictions.push_back(std::size_t(std::max_element(row, row + corpus.alphabet.size()) - row));
      }
      run << "{\"steps\":" << steps << ",\"batch\":" << batch << ",\"seq\":" << T << ",\"stride\":" << stride
          << ",\"lr\":" << options.lr << ",\"weight_decay\":" << options.weight_decay << ",\"texts\":[";
      for (std::size_t i = 0; i < texts.size(); ++i) run << (i ? "," : "") << '"' << texts[i].string() << '"';
      run << "],\"alphabet\":" << list(alphabet) << ",\"held_out\":" << list(held)
          << ",\"predictions\":" << list(predictions) << ",\"held_out_nats\":" << nats << "}\n";
      std::printf("saved the checkpoint and %zu held-out predictions to %s\n", y.size(), out.c_str());
    }
    return bits < std::log2(double(corpus.alphabet.size())) ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "example_06_char_gpt: %s\n", e.what());
    return 1;
  }
}
