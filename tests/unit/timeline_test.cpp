// SPDX-License-Identifier: Apache-2.0
// The timeline: what it records and the Chrome trace it writes. Only structure and same-clock
// ordering are asserted; whether stages overlap depends on the machine's load, so that claim is
// shown by example 02 and the benchmark, not tested here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <tandem/tandem.hpp>

using namespace tandem;

namespace {

using Net = Pipeline<Stage<Device<0>, Linear<8, 16>, ReLU>, Stage<Device<1>, Linear<16, 4>>>;

// A strict little JSON reader: enough to prove the trace parses and to read its events back.
struct Json {
  enum Kind { null, boolean, number, string, array, object } kind = null;
  double num = 0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
  const Json *find(const std::string &key) const {
    for (const auto &[k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
};

class JsonReader {
public:
  explicit JsonReader(const std::string &text) : s_(text) {}
  // Throws on anything that is not exactly one JSON value (surrounded by whitespace).
  Json document() {
    Json v = value();
    skip();
    if (at_ != s_.size()) fail("trailing characters");
    return v;
  }

private:
  [[noreturn]] void fail(const char *what) {
    throw std::runtime_error(std::string("invalid JSON at ") + std::to_string(at_) + ": " + what);
  }
  void skip() {
    while (at_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[at_]))) ++at_;
  }
  bool eat(char c) {
    skip();
    if (at_ < s_.size() && s_[at_] == c) return ++at_, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail("unexpected character");
  }
  Json value() {
    skip();
    if (at_ >= s_.size()) fail("unexpected end");
    Json v;
    const char c = s_[at_];
    if (c == '{') {
      v.kind = Json::object;
      ++at_;
      if (eat('}')) return v;
      do {
        skip();
        std::string key = text();
        expect(':');
        v.members.emplace_back(std::move(key), value());
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      v.kind = Json::array;
      ++at_;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::string;
      v.str = text();
    } else if (s_.compare(at_, 4, "true") == 0 || s_.compare(at_, 5, "false") == 0) {
      v.kind = Json::boolean;
      at_ += s_[at_] == 't' ? 4 : 5;
    } else if (s_.compare(at_, 4, "null") == 0) {
      at_ += 4;
    } else {
      v.kind = Json::number;
      std::size_t used = 0;
      const std::string rest = s_.substr(at_, 32);
      if (!(c == '-' || std::isdigit(static_cast<unsigned char>(c)))) fail("not a value");
      v.num = std::stod(rest, &used);
      at_ += used;
    }
    return v;
  }
  std::string text() {
    if (at_ >= s_.size() || s_[at_] != '"') fail("expected a string");
    std::string out;
    for (++at_; at_ < s_.size() && s_[at_] != '"'; ++at_) {
      if (static_cast<unsigned char>(s_[at_]) < 0x20) fail("control character in a string");
      if (s_[at_] == '\\') {
        if (++at_ >= s_.size()) fail("unfinished escape");
        if (s_[at_] == 'u') at_ += 4; // kept out of the result: tests only compare plain names
        else out += s_[at_];
      } else out += s_[at_];
    }
    if (at_ >= s_.size()) fail("unfinished string");
    ++at_;
    return out;
  }
  const std::string &s_;
  std::size_t at_ = 0;
};

struct Recorded {
  Context ctx{ContextOptions{.timeline = true}};
  std::unique_ptr<Net> net = std::make_unique<Net>(ctx, 1);
};

float run_gpipe(Recorded &r, std::size_t batch, std::size_t m) {
  std::vector<float> x(batch * Net::in_features);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 13) / 13.0f - 0.5f;
  std::vector<std::int32_t> y(batch);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<std::int32_t>(i % Net::out_features);
  optim::SGD opt(*r.net, {.lr = 0.1f});
  return r.net->train_step(std::span<const float>(x), std::span<const std::int32_t>(y), loss::CrossEntropy{}, opt,
                           schedule::GPipe{.micro_batches = m});
}

std::vector<TimelineSpan> on_track(const Timeline &tl, const std::string &name) {
  const auto &tracks = tl.tracks();
  const auto it = std::find(tracks.begin(), tracks.end(), name);
  REQUIRE(it != tracks.end());
  std::vector<TimelineSpan> out;
  for (const auto &s : tl.spans())
    if (s.track == std::size_t(it - tracks.begin())) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const auto &a, const auto &b) { return a.start_us < b.start_us; });
  return out;
}

std::string describe(const TimelineSpan &s) {
  return std::string(to_string(s.kind)) + (s.micro_batch >= 0 ? " " + std::to_string(s.micro_batch) : "");
}

} // namespace

TEST_SUITE("timeline") {
  TEST_CASE("off by default: nothing is recorded") {
    Context ctx;
    CHECK_FALSE(ctx.timeline().enabled());
    Net net(ctx, 1);
    std::vector<float> x(4 * Net::in_features, 0.25f);
    net.forward(std::span<const float>(x), schedule::GPipe{.micro_batches = 2});
    CHECK(ctx.timeline().spans().empty());
  }

  TEST_CASE("GPipe m=4 on two stages: every task once, in schedule order, never overlapping on a track") {
    Recorded r;
    run_gpipe(r, 16, 4);
    const Timeline &tl = r.ctx.timeline();
    const auto d0 = on_track(tl, "Device<0>"), d1 = on_track(tl, "Device<1>");
    const auto down = on_track(tl, "Device<0> -> Device<1>"), up = on_track(tl, "Device<1> -> Device<0>");
    CHECK(tl.tracks().size() == 4);

    // Each worker runs its tasks in issue order, so the order by start time is the schedule's.
    std::vector<std::string> got0, got1;
    for (const auto &s : d0) got0.push_back(describe(s));
    for (const auto &s : d1) got1.push_back(describe(s));
    CHECK(got0 == std::vector<std::string>{"forward 0", "forward 1", "forward 2", "forward 3", "backward 3",
                                           "backward 2", "backward 1", "backward 0", "optimizer"});
    CHECK(got1 == std::vector<std::string>{"forward 0", "loss 0", "forward 1", "loss 1", "forward 2", "loss 2",
                                           "forward 3", "loss 3", "backward 3", "backward 2", "backward 1",
                                           "backward 0", "optimizer"});
    REQUIRE(down.size() == 4);
    REQUIRE(up.size() == 4);
    for (const auto &s : d0) CHECK(s.stage == 0);
    for (const auto &s : down) CHECK((s.kind == TaskKind::copy && s.stage == 0));
    for (const auto &s : up) CHECK((s.kind == TaskKind::copy && s.stage == 1));

    for (const auto *track : {&d0, &d1, &down, &up}) {
      for (std::size_t i = 0; i < track->size(); ++i) {
        CHECK((*track)[i].start_us >= 0);
        CHECK((*track)[i].duration_us >= 0);
        if (i > 0) CHECK((*track)[i].start_us >= (*track)[i - 1].end_us());
      }
    }
    // Copies are timed on their destination's clock, so these comparisons are exact: a micro-batch
    // reaches stage 1 before stage 1 runs it, and its gradient reaches stage 0 before backward.
    for (std::size_t k = 0; k < 4; ++k) {
      const auto find = [&](const auto &track, TaskKind kind) {
        return *std::find_if(track.begin(), track.end(),
                             [&](const auto &s) { return s.kind == kind && s.micro_batch == std::ptrdiff_t(k); });
      };
      CHECK(find(down, TaskKind::copy).end_us() <= find(d1, TaskKind::forward).start_us);
      CHECK(find(up, TaskKind::copy).end_us() <= find(d0, TaskKind::backward).start_us);
    }
  }

  TEST_CASE("the Chrome trace is valid JSON with one complete event per task") {
    Recorded r;
    run_gpipe(r, 10, 3);
    run_gpipe(r, 10, 3); // a second step continues the same clock
    const Timeline &tl = r.ctx.timeline();
    const Json doc = JsonReader(tl.chrome_trace()).document();
    REQUIRE(doc.kind == Json::object);
    const Json *events = doc.find("traceEvents");
    REQUIRE(events);
    REQUIRE(events->kind == Json::array);

    std::map<int, int> per_tid;
    std::map<int, std::string> names;
    for (const Json &e : events->items) {
      REQUIRE(e.kind == Json::object);
      const Json *ph = e.find("ph");
      REQUIRE(ph);
      if (ph->str == "M") {
        if (e.find("name")->str == "thread_name") names[int(e.find("tid")->num)] = e.find("args")->find("name")->str;
        continue;
      }
      CHECK(ph->str == "X");
      for (const char *key : {"name", "ts", "dur", "pid", "tid"}) CHECK(e.find(key));
      CHECK(e.find("ts")->kind == Json::number);
      CHECK(e.find("dur")->num >= 0);
      ++per_tid[int(e.find("tid")->num)];
    }
    // Per step: stage 0 runs 3 forwards, 3 backwards, 1 optimizer step; stage 1 also 3 losses;
    // each link carries 3 copies. Two steps.
    std::map<std::string, int> per_track;
    for (const auto &[tid, n] : per_tid) per_track[names.at(tid)] = n;
    CHECK(per_track ==
          std::map<std::string, int>{
              {"Device<0>", 14}, {"Device<1>", 20}, {"Device<0> -> Device<1>", 6}, {"Device<1> -> Device<0>", 6}});
    CHECK(tl.spans().size() == 46);

    // The second step starts after the first ends (on the common clock).
    const auto d0 = on_track(tl, "Device<0>");
    CHECK(d0[6].kind == TaskKind::optimizer);
    CHECK(d0[7].start_us >= d0[6].end_us());
  }

  TEST_CASE("clear, disable, and inference forward") {
    Recorded r;
    run_gpipe(r, 8, 2);
    Timeline &tl = r.ctx.timeline();
    CHECK_FALSE(tl.spans().empty());
    tl.clear();
    CHECK(tl.spans().empty());

    std::vector<float> x(8 * Net::in_features, 0.5f);
    r.net->forward(std::span<const float>(x), schedule::GPipe{.micro_batches = 4});
    CHECK(on_track(tl, "Device<0>").size() == 4);
    CHECK(on_track(tl, "Device<1>").size() == 4);
    CHECK(on_track(tl, "Device<0> -> Device<1>").size() == 4);
    for (const auto &s : tl.spans()) CHECK((s.kind == TaskKind::forward || s.kind == TaskKind::copy));

    tl.clear();
    tl.enable(false);
    run_gpipe(r, 8, 2);
    CHECK(tl.spans().empty());
  }

  TEST_CASE("write_chrome_trace names a path it cannot write") {
    Timeline tl(true);
    CHECK_THROWS_AS(tl.write_chrome_trace("/nonexistent-directory/trace.json"), Error);
  }
}
