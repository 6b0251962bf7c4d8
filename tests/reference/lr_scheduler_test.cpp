// SPDX-License-Identifier: Apache-2.0
// The learning-rate schedules against torch.optim.lr_scheduler: for each case, the rate tandem's
// optimizer holds after the schedule is made and after each of 100 steps, next to the rate
// PyTorch's param group holds (a Python double). tandem computes the same double and hands the
// optimizer its float, so the two agree to float32's rounding: |ours - torch| <= 2^-24 |torch|.
//   usage: tandem_reference_lr_scheduler <python with torch> <torch_lr_scheduler.py>
// Exit status 77 (CTest SKIP_RETURN_CODE) when no Python with torch was found at configure time.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <tandem/optim/lr_scheduler.hpp>
#include <tandem/tandem.hpp>

using namespace tandem;

namespace {

using Net = Pipeline<Stage<Device<0>, Linear<3, 2>>>;
using Schedules = std::vector<std::unique_ptr<optim::LRScheduler>>;
constexpr int steps = 100;

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
std::string json(const optim::StepLROptions &o) {
  return R"({"type":"step","args":{"step_size":)" + std::to_string(*o.step_size) + R"(,"gamma":)" + num(o.gamma) + "}}";
}
std::string json(const optim::MultiStepLROptions &o) {
  std::string m;
  for (int x : o.milestones) m += (m.empty() ? "" : ",") + std::to_string(x);
  return R"({"type":"multistep","args":{"milestones":[)" + m + R"(],"gamma":)" + num(o.gamma) + "}}";
}
std::string json(const optim::ExponentialLROptions &o) {
  return R"({"type":"exponential","args":{"gamma":)" + num(*o.gamma) + "}}";
}
std::string json(const optim::CosineAnnealingLROptions &o) {
  return R"({"type":"cosine","args":{"T_max":)" + std::to_string(*o.T_max) + R"(,"eta_min":)" + num(o.eta_min) + "}}";
}
std::string json(const optim::LinearLROptions &o) {
  return R"({"type":"linear","args":{"start_factor":)" + num(o.start_factor) + R"(,"end_factor":)" + num(o.end_factor) +
         R"(,"total_iters":)" + std::to_string(o.total_iters) + "}}";
}

struct Case {
  std::string name;
  bool adam = false;
  std::string schedules;  // JSON array
  std::string milestones; // JSON array, or null: the one schedule alone
  // Makes the schedules on `opt`, the one to step last.
  std::function<Schedules(optim::SGD &)> sgd;
  std::function<Schedules(optim::Adam &)> adam_make;
};

template <class Options> Case single(std::string name, Options o) {
  using Sched = std::conditional_t<
      std::is_same_v<Options, optim::StepLROptions>, optim::StepLR,
      std::conditional_t<std::is_same_v<Options, optim::MultiStepLROptions>, optim::MultiStepLR,
                         std::conditional_t<std::is_same_v<Options, optim::ExponentialLROptions>, optim::ExponentialLR,
                                            std::conditional_t<std::is_same_v<Options, optim::CosineAnnealingLROptions>,
                                                               optim::CosineAnnealingLR, optim::LinearLR>>>>;
  Case c{std::move(name), false, "[" + json(o) + "]", "null", {}, {}};
  c.sgd = [o](optim::SGD &opt) {
    Schedules s;
    s.push_back(std::make_unique<Sched>(opt, o));
    return s;
  };
  return c;
}

std::vector<Case> cases() {
  std::vector<Case> all;
  all.push_back(single("StepLR", optim::StepLROptions{.step_size = 7, .gamma = 0.5}));
  all.push_back(single("StepLR_default_gamma", optim::StepLROptions{.step_size = 30}));
  all.push_back(single("MultiStepLR", optim::MultiStepLROptions{.milestones = {80, 30, 55, 55}, .gamma = 0.3}));
  all.push_back(single("ExponentialLR", optim::ExponentialLROptions{.gamma = 0.97}));
  all.push_back(single("CosineAnnealingLR", optim::CosineAnnealingLROptions{.T_max = 30, .eta_min = 0.002}));
  all.push_back(single("CosineAnnealingLR_T100", optim::CosineAnnealingLROptions{.T_max = 100}));
  all.push_back(single("LinearLR", optim::LinearLROptions{.start_factor = 0.1, .end_factor = 0.8, .total_iters = 40}));
  all.push_back(single("LinearLR_defaults", optim::LinearLROptions{}));
  // Warm-up then cosine, on Adam: the rate reaches Adam as it reaches SGD.
  const optim::LinearLROptions warm{.start_factor = 0.1, .total_iters = 5};
  const optim::CosineAnnealingLROptions cosine{.T_max = 95, .eta_min = 1e-4};
  Case seq{"SequentialLR_warmup_cosine", true, "[" + json(warm) + "," + json(cosine) + "]", "[5]", {}, {}};
  seq.adam_make = [warm, cosine](optim::Adam &opt) {
    Schedules s;
    auto *w = s.emplace_back(std::make_unique<optim::LinearLR>(opt, warm)).get();
    auto *c = s.emplace_back(std::make_unique<optim::CosineAnnealingLR>(opt, cosine)).get();
    s.push_back(std::make_unique<optim::SequentialLR>(opt, optim::SequentialLROptions{{w, c}, {5}}));
    return s;
  };
  all.push_back(std::move(seq));
  return all;
}

// The optimizer's rate after construction and after every step; last_lr() must say the same.
template <class Opt, class Make> std::vector<float> run(Net &net, float lr, const Make &make, int &errors) {
  Opt opt(net, {.lr = lr});
  const Schedules s = make(opt);
  optim::LRScheduler &sched = *s.back();
  std::vector<float> rates{opt.lr()};
  for (int k = 0; k < steps; ++k) {
    sched.step();
    rates.push_back(opt.lr());
    if (sched.last_lr() != opt.lr() || sched.last_epoch() != k + 1) ++errors;
  }
  return rates;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <python with torch> <torch_lr_scheduler.py>\n", argv[0]);
    return 2;
  }
  const std::string python = argv[1], script = argv[2];
  if (python.empty() || python.ends_with("NOTFOUND")) {
    std::printf("SKIPPED: no Python with torch was found when CMake configured this build\n");
    return 77;
  }
  try {
    Context ctx({.devices = "host"});
    Net net(ctx, 1);
    std::mt19937_64 gen(20261202);
    std::uniform_real_distribution<double> base(0.01, 0.5); // a fresh base rate per case, never round
    auto all = cases();
    std::vector<float> lrs;
    const auto dir = std::filesystem::temp_directory_path() / ("tandem_lr_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    {
      std::ofstream in(dir / "input.jsonl");
      for (const auto &c : all) {
        lrs.push_back(static_cast<float>(base(gen)));
        in << R"({"name":")" << c.name << R"(","optimizer":")" << (c.adam ? "adam" : "sgd") << R"(","lr":)"
           << num(lrs.back()) << R"(,"steps":)" << steps << R"(,"schedules":)" << c.schedules << R"(,"milestones":)"
           << c.milestones << "}\n";
      }
    }
    const std::string command = "'" + python + "' '" + script + "' '" + (dir / "input.jsonl").string() + "' '" +
                                (dir / "output.txt").string() + "'";
    if (std::system(command.c_str()) != 0) {
      std::printf("FAILED: the PyTorch side failed: %s\n", command.c_str());
      return 1;
    }
    std::map<std::string, std::vector<double>> want;
    std::ifstream out(dir / "output.txt");
    for (std::string line; std::getline(out, line);) {
      std::istringstream is(line);
      std::string name;
      is >> name;
      for (double v; is >> v;) want[name].push_back(v);
    }
    std::filesystem::remove_all(dir);

    int failures = 0, exact = 0, compared = 0;
    double worst = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
      const Case &c = all[i];
      int bookkeeping = 0;
      const auto got = c.adam ? run<optim::Adam>(net, lrs[i], c.adam_make, bookkeeping)
                              : run<optim::SGD>(net, lrs[i], c.sgd, bookkeeping);
      const auto &ref = want[c.name];
      if (ref.size() != got.size() || bookkeeping) {
        std::printf("FAILED %s: %zu rates from PyTorch, %zu from tandem; %d steps where last_lr() or last_epoch() "
                    "disagreed with the optimizer\n",
                    c.name.c_str(), ref.size(), got.size(), bookkeeping);
        ++failures;
        continue;
      }
      for (std::size_t k = 0; k < got.size(); ++k) {
        const double err = std::abs(double(got[k]) - ref[k]), bound = std::ldexp(std::abs(ref[k]), -24);
        worst = std::max(worst, ref[k] != 0 ? err / std::abs(ref[k]) : err);
        ++compared;
        exact += got[k] == static_cast<float>(ref[k]);
        if (err > bound) {
          std::printf("FAILED %s, step %zu: tandem %.9g, PyTorch %.17g (|diff| %.3g > %.3g)\n", c.name.c_str(), k,
                      double(got[k]), ref[k], err, bound);
          ++failures;
        }
      }
    }
    std::printf("%d rates compared over %zu cases: %d equal to PyTorch's double rounded to float; worst relative "
                "difference %.3g (bound 2^-24 = %.3g)\n",
                compared, all.size(), exact, worst, std::ldexp(1.0, -24));
    return failures ? 1 : 0;
  } catch (const std::exception &e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
