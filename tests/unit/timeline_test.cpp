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
#include <random>
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

// The bubble measured from a timeline (bubble.hpp) and its picture (timeline_picture.hpp).
namespace {

// Stage 1 does far more than stage 0, so that under Naive stage 0's device waits most of the step.
using Uneven = Pipeline<Stage<Device<0>, Linear<16, 32>>,
                        Stage<Device<1>, Linear<32, 256>, ReLU, Linear<256, 256>, ReLU, Linear<256, 4>>>;

template <class Sched> Bubble bubble_of_step(const Sched &sched, std::size_t batch) {
  Context ctx({.timeline = true});
  Uneven net(ctx, 1);
  optim::SGD opt(net, {.lr = 0.01f});
  std::vector<float> x(batch * Uneven::in_features), y(batch * Uneven::out_features);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) / 17.0f - 0.5f;
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<float>(i % 5) / 5.0f;
  const auto step = [&] {
    net.train_step(std::span<const float>(x), std::span<const float>(y), loss::MSE{}, opt, sched);
  };
  step(); // the first step allocates
  ctx.timeline().clear();
  step();
  const Timeline &tl = ctx.timeline();
  const Bubble b = measure_bubble(tl);
  // Tasks on one worker never overlap, so the union of a device's busy time is their sum.
  for (const DeviceBubble &d : b.devices) {
    double sum = 0;
    for (const TimelineSpan &s : tl.spans())
      if (s.track == d.track && busy_on_device(s.kind)) sum += s.duration_us;
    CHECK(d.busy_us == doctest::Approx(sum).epsilon(1e-9));
  }
  return b;
}

} // namespace

TEST_SUITE("timeline") {
  TEST_CASE("bubble: a hand-computed timeline") {
    const std::vector<std::string> tracks{"Device<0>", "Device<1>", "Device<0> -> Device<1>"};
    const std::vector<TimelineSpan> spans{
        {TaskKind::forward, 0, 0, 0, 0, 10},   {TaskKind::copy, 2, 0, 0, 10, 2},
        {TaskKind::forward, 1, 1, 0, 12, 8},   {TaskKind::backward, 1, 1, 0, 18, 10}, // overlaps: counted once
        {TaskKind::receive, 1, 1, 0, 28, 30},  {TaskKind::backward, 0, 0, 0, 30, 10},
        {TaskKind::optimizer, 0, 0, -1, 40, 5}};
    const Bubble b = measure_bubble(spans, tracks);
    REQUIRE(b.devices.size() == 2);
    CHECK(b.devices[0].device == "Device<0>");
    CHECK(b.devices[0].first_us == 0);
    CHECK(b.devices[0].last_us == 45);
    CHECK(b.devices[0].busy_us == 25);
    CHECK(b.devices[0].idle_fraction() == doctest::Approx(20.0 / 45));
    CHECK(b.devices[1].first_us == 12); // the receive is waiting, not work: the window ends at 28
    CHECK(b.devices[1].last_us == 28);
    CHECK(b.devices[1].idle_fraction() == 0);
    CHECK(b.mean == doctest::Approx(10.0 / 45));
    CHECK(b.max == doctest::Approx(20.0 / 45));

    CHECK_THROWS_AS(measure_bubble(std::vector<TimelineSpan>{{TaskKind::forward, 3, 0, 0, 0, 1}}, tracks), Error);
    CHECK_THROWS_AS(measure_bubble(std::vector<TimelineSpan>{{TaskKind::forward, 0, 0, 0, 5, -1}}, tracks), Error);
    CHECK(measure_bubble(std::vector<TimelineSpan>{}, tracks).devices.empty());
  }

  TEST_CASE("bubble: random overlapping intervals against a count of busy microseconds") {
    const unsigned seed = std::random_device{}();
    INFO("seed ", seed);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> start(0, 400), length(0, 60), track(0, 2), kind(0, 7);
    const std::vector<std::string> tracks{"Device<0>", "Device<1>", "Device<1> -> Device<0>"};
    for (int round = 0; round < 20; ++round) {
      std::vector<TimelineSpan> spans;
      std::vector<std::vector<bool>> tick(3, std::vector<bool>(500, false)); // busy microseconds
      std::vector<int> first(3, 1000), last(3, -1);
      for (int i = 0; i < 30; ++i) {
        const int t = track(rng), a = start(rng), len = length(rng);
        const auto k = t == 2 ? TaskKind::copy : static_cast<TaskKind>(kind(rng));
        spans.push_back({k, std::size_t(t), 0, i, double(a), double(len)});
        if (k == TaskKind::copy || k == TaskKind::receive) continue;
        first[t] = std::min(first[t], a), last[t] = std::max(last[t], a + len);
        for (int u = a; u < a + len; ++u) tick[t][u] = true;
      }
      const Bubble b = measure_bubble(spans, tracks);
      double worst = 0;
      std::size_t next = 0;
      for (int t = 0; t < 2; ++t) {
        if (last[t] < 0) continue;
        REQUIRE(next < b.devices.size());
        const DeviceBubble &d = b.devices[next++];
        CHECK(d.track == std::size_t(t));
        const auto busy = std::count(tick[t].begin(), tick[t].end(), true);
        CHECK(d.busy_us == double(busy));
        CHECK(d.first_us == first[t]);
        CHECK(d.last_us == last[t]);
        if (last[t] > first[t]) worst = std::max(worst, 1.0 - double(busy) / double(last[t] - first[t]));
      }
      CHECK(next == b.devices.size());
      CHECK(b.max == doctest::Approx(worst));
    }
  }

  TEST_CASE("bubble: real two-stage steps on the host") {
    for (const Bubble &b : {bubble_of_step(schedule::GPipe{.micro_batches = 4}, 64),
                            bubble_of_step(schedule::OneFOneB{.micro_batches = 4}, 64)}) {
      REQUIRE(b.devices.size() == 2);
      CHECK(b.devices[0].device == "Device<0>");
      CHECK(b.devices[1].device == "Device<1>");
      for (const DeviceBubble &d : b.devices) {
        CHECK(d.first_us >= 0);
        CHECK(d.busy_us > 0);
        CHECK(d.busy_us <= d.span_us() * (1 + 1e-12));
        CHECK(d.idle_fraction() >= 0);
        CHECK(d.idle_fraction() < 1);
      }
      CHECK(b.mean <= b.max);
    }
    // Naive: stage 0's device waits while stage 1 does most of the work (ideally 1 - 1/n = 0.5 for
    // balanced stages, more here).
    CHECK(bubble_of_step(schedule::Naive{}, 64).max > 0.3);
  }

  TEST_CASE("timeline_picture: a hand-drawn timeline") {
    const std::vector<std::string> tracks{"Device<0>", "Device<1>", "Device<0> -> Device<1>"};
    const std::vector<TimelineSpan> spans{
        {TaskKind::forward, 0, 0, 0, 0, 10},    {TaskKind::forward, 0, 0, 1, 10, 15},
        {TaskKind::copy, 2, 0, 0, 10, 10},      {TaskKind::forward, 1, 1, 0, 20, 10},
        {TaskKind::loss, 1, 1, 0, 30, 1},       {TaskKind::backward, 1, 1, 0, 35, 15},
        {TaskKind::optimizer, 1, 1, -1, 50, 5}, {TaskKind::backward, 0, 0, 1, 55, 20},
        {TaskKind::backward, 0, 0, 0, 75, 20},  {TaskKind::optimizer, 0, 0, -1, 95, 5}};
    // 20 columns of 5 us each.
    CHECK(timeline_picture(spans, tracks, 20) == "Device<0> F0F1-......B1--B0--O\n"
                                                 "Device<1> ....F0LB0-O.........\n");
    CHECK_THROWS_AS(timeline_picture(spans, tracks, 0), Error);
  }
}
