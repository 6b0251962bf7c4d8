// SPDX-License-Identifier: Apache-2.0
// Context: picks the backend and maps logical devices (Device<N>) to physical ones.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tandem/backend/executor.hpp"
#include "tandem/backend/host/executor.hpp"
#include "tandem/backend/transport.hpp"
#include "tandem/detail/mpi_launch.hpp"
#include "tandem/detail/optimization_notice.hpp"
#include "tandem/error.hpp"
#include "tandem/precision.hpp"
#include "tandem/timeline.hpp"

#ifdef TANDEM_CUDA_BACKEND // (backend/executor.hpp)
#include "tandem/backend/cuda/executor.hpp"
#endif

namespace tandem {

// Where a stage of small layers runs as one operation (ContextOptions::fuse_small_stages).
enum class StageFusion {
  automatic, // where the backend gains from it: on GPUs (one kernel, not a chain of launches), not
             // on the host, whose per-layer Eigen products are about 3x faster for the seed model
  always,    // also on the host, where a network of small stages then takes whole-network steps
  never,
};

// Where the host backend runs a step's work (ContextOptions::host_execution).
enum class HostExecution {
  automatic,      // host_step_on_calling_thread() decides, step by step
  workers,        // always one worker thread per logical device: stages overlap, at a hand-off per task
  calling_thread, // always on the calling thread, stage after stage in issue order
};

// Handing a task to another thread costs microseconds, as much as a small product does; stages
// on worker threads overlap only where a schedule gives them micro-batches to overlap, on cores
// of their own. bench/host_execution.cpp, four sweeps on 2 cores (two stages of Linear<W,W>,
// ReLU, Linear<W,W>, batch 256), step time on workers over step time on the calling thread:
//   whole batch (Naive), W = 16..512:         0.99 to 1.79 (nothing to overlap, hand-offs only)
//   GPipe m=4, W = 16 (2.1e5 flops per task): 0.84 to 1.50     W = 32 (8.1e5): 0.78 to 1.32
//              W = 64 (3.2e6):                0.72 to 1.04     W >= 128 (>= 1.3e7): 0.66 to 1.05
// Workers also vary far more from run to run. Below about 1e6 flops per task they do not win
// reliably; the seed model's tasks are about 2e4 (17 us per GPipe step on the calling thread,
// 27 us on workers).
inline constexpr double host_inline_flops = 1e6;

// HostExecution::automatic's rule, for a step of `micro_batches` whose largest stage does
// `flops_per_task` on one micro-batch.
inline bool host_step_on_calling_thread(std::size_t micro_batches, double flops_per_task) {
  static const unsigned cores = std::thread::hardware_concurrency();
  return micro_batches < 2 || cores < 2 || flops_per_task < host_inline_flops;
}

struct ContextOptions {
  // "host", or GPU indices such as "0,1" or "0,0" (logical N runs on entry N % count). Empty: the
  // default, logical N on GPU N % gpu_count, or the host when there is no GPU. TANDEM_DEVICES wins.
  std::string devices{};
  // No notice that every stage runs on the host for want of a GPU (TANDEM_QUIET=1 does the same).
  bool quiet = false;
  // Copy at every stage boundary, even between logical devices on one physical device.
  bool force_copies = false;
  // The arithmetic of float matrix products (precision.hpp): fp32 as PyTorch's default, or inputs
  // rounded to TF32 or bfloat16 with float32 accumulation and float32 master weights. On GPUs
  // cuBLAS's tensor cores do the rounding; the host backend emulates it, with the same results
  // up to the accumulation order. Fused small stages compute in float32: not used unless fp32.
  Precision precision = Precision::fp32;
  // PyTorch's spelling of precision = tf32 (torch.backends.cuda.matmul.allow_tf32); it applies
  // when precision is left at fp32.
  bool allow_tf32 = false;
  // On GPUs, fuse each Linear's bias into its product (one cuBLASLt call with a bias epilogue);
  // off, or where cuBLASLt has no such algorithm: a cuBLAS product and a bias kernel.
  bool fuse_epilogues = true;
  // On GPUs, run each Linear's weight gradient on a second stream beside its input gradient, where
  // the input gradient's product is too small to fill the GPU alone (fewer 128 x 128 tiles than
  // SMs: the 256-wide MLP at batch 1024, not the 4096-wide one). Both read the same dy and write
  // different outputs, so results do not change.
  bool overlap_gradients = true;
  // On GPUs, time cuBLASLt's candidate algorithms for each product shape (up to 2^30
  // multiply-adds; larger ones fill the GPU, where its estimate holds) on the first step that
  // meets it, and keep the fastest; input gradients then go through cuBLASLt too. Off by default,
  // as PyTorch's cudnn.benchmark: the first step synchronises once per shape, and another process
  // may time differently and round differently in the last bits (within a process every network
  // shares the choices). Needs fuse_epilogues.
  bool tune_products = false;
  // Run a stage whose layers are all small (Linear and activations, widths at most 64) as one
  // operation, forward and backward: one kernel instead of several per layer on a GPU. Where every
  // stage is small and all share one device's memory (one GPU, copies not forced), a training
  // step goes further: forward, loss and backward of the whole network are one operation per
  // micro-batch (op::SmallNetwork; CrossEntropy and MSE), and nothing crosses a boundary.
  StageFusion fuse_small_stages = StageFusion::automatic;
  // The host backend only: whether stages run on worker threads or on the calling thread.
  // TANDEM_HOST_EXECUTION (automatic, workers or calling_thread), when set, wins.
  HostExecution host_execution = HostExecution::automatic;
  // Record every task's start and end on timeline() (see timeline.hpp); can be toggled later.
  bool timeline = false;
  // Check every training step's loss: a NaN or infinite loss throws Error before any optimizer
  // step, so parameters and optimizer state stay as they were. It costs the overlap of each
  // stage's optimizer with the other stages' backward (the step waits for the loss first).
  bool check_finite = false;
  // Capture a training step in a CUDA graph and replay it when a step like it comes again: same
  // batch and schedule, same device tensors (or host inputs, copied in before each launch), an
  // optimizer whose step repeats (optim::SGD after its first step; Adam and AdamW, whose step
  // number lives on the device). It needs every stage on one GPU and neither the timeline nor
  // check_finite; elsewhere steps are issued as usual. One launch replaces dozens of kernel
  // launches, which is most of a small network's step.
  bool graphs = true;
  // Across processes (Context(env), <tandem/distributed.hpp>): how long a rank waits for another
  // rank's message before it throws Error naming what never came.
  std::chrono::duration<double> peer_timeout = std::chrono::seconds(60);
  // Bytes that logical device N may hold, entry N (0 or no entry: no limit), on every backend: what
  // networks, optimizers and tensors allocate there. A network's memory_plan says what it needs
  // (docs/memory.md). An allocation beyond it throws Error naming the device, its capacity, the
  // bytes in use and the bytes asked for.
  std::vector<std::size_t> device_memory{};
};

namespace detail {
// On the host backend, a step with nothing for the stages to overlap, or too little work per task
// to repay handing it to a worker thread, runs on the calling thread (host_step_on_calling_thread).
// Switched between steps, never inside one.
inline void place_host_work(const ContextOptions &options, std::span<backend::Executor *const> executors,
                            std::size_t micro_batches, double flops_per_task) {
  bool calling = false;
  switch (options.host_execution) {
  case HostExecution::workers: break;
  case HostExecution::calling_thread: calling = true; break;
  case HostExecution::automatic: calling = host_step_on_calling_thread(micro_batches, flops_per_task); break;
  }
  for (auto *ex : executors) ex->run_on_issuing_thread(calling);
}
} // namespace detail

namespace detail {

// What a Context is: its options, devices, executors and timeline. Held by shared_ptr, by the
// Context and by every network made on it, so that a network may outlive its Context.
class ContextState {
public:
  using Options = ContextOptions;

  explicit ContextState(Options options) : options_(std::move(options)) {
    std::string spec = options_.devices;
    if (const char *env = std::getenv("TANDEM_DEVICES"); env && *env) spec = env;
    if (const char *env = std::getenv("TANDEM_HOST_EXECUTION"); env && *env)
      options_.host_execution = parse_host_execution(env);
    if (const char *env = std::getenv("TANDEM_QUIET"); env && *env && std::string_view(env) != "0")
      options_.quiet = true;
    if (options_.allow_tf32 && options_.precision == Precision::fp32) options_.precision = Precision::tf32;
    configure(spec);
    detail::warn_if_alone_under_mpiexec();
  }
  // One process of a program that runs on several (SPMD): logical devices are placed on ranks
  // (docs/distributed.md), and this process makes executors for its own only.
  explicit ContextState(std::shared_ptr<backend::Transport> transport, Options options = {})
      : options_(std::move(options)), transport_(std::move(transport)) {
    std::string spec = options_.devices;
    if (const char *env = std::getenv("TANDEM_DEVICES"); env && *env) spec = env;
    if (const char *env = std::getenv("TANDEM_HOST_EXECUTION"); env && *env)
      options_.host_execution = parse_host_execution(env);
    if (!transport_->any_thread()) options_.host_execution = HostExecution::calling_thread;
    if (const char *env = std::getenv("TANDEM_QUIET"); env && *env && std::string_view(env) != "0")
      options_.quiet = true;
    if (options_.allow_tf32 && options_.precision == Precision::fp32) options_.precision = Precision::tf32;
    configure(take_ranks(spec));
    if (kind_ != backend::Kind::host)
      detail::fail("Context(env): stages across processes run on the host backend only (docs/distributed.md ",
                   "describes the GPU path); set TANDEM_DEVICES to 'host' or to 'rank:host' entries");
  }
  ContextState(const ContextState &) = delete;
  ContextState &operator=(const ContextState &) = delete;

  backend::Kind backend() const { return kind_; }
  const Options &options() const { return options_; }

  // When each task of each step ran, per logical device and link; recorded while enabled().
  Timeline &timeline() { return timeline_; }
  const Timeline &timeline() const { return timeline_; }

  // The executor of logical device `logical`, made on first use.
  backend::Executor &executor(std::size_t logical) { return *shared_executor(logical); }
  std::shared_ptr<backend::Executor> shared_executor(std::size_t logical) {
    const std::lock_guard turn(*issue_mutex_);
    auto &slot = executors_[logical];
    if (!slot) {
      slot = make_executor(logical);
      slot->share_issue_mutex(issue_mutex_);
      slot->set_capacity(logical, logical < options_.device_memory.size() ? options_.device_memory[logical] : 0);
    }
    return slot;
  }
  // The mutex that issuing threads take turns on (backend::Executor::issue_mutex()).
  std::recursive_mutex &issue_mutex() const { return *issue_mutex_; }
  const std::shared_ptr<std::recursive_mutex> &shared_issue_mutex() const { return issue_mutex_; }

  // The link carrying a boundary from logical device `from` to `to`; null where the two share
  // memory (one physical GPU) and copies are not forced, so the next stage reads in place.
  std::unique_ptr<backend::Link> link(std::size_t from, std::size_t to) {
    if (!options_.force_copies && kind_ == backend::Kind::cuda && physical(from) == physical(to)) return nullptr;
    return executor(from).make_link(executor(to));
  }

  // This process's rank and the number of ranks (0 and 1 without a transport).
  int rank() const { return transport_ ? transport_->rank() : 0; }
  int size() const { return transport_ ? transport_->size() : 1; }
  backend::Transport *transport() const { return transport_.get(); }
  // The rank that runs logical device `logical`: entry N % count of the placement, by default N % size.
  // Any thread may ask, before taking the Context's turn (a network asks while it is built).
  int rank_of(std::size_t logical) const {
    {
      const std::lock_guard held(placed_mutex_);
      placed_.insert(logical);
    }
    if (!transport_) return 0;
    return ranks_.empty() ? static_cast<int>(logical % static_cast<std::size_t>(size()))
                          : ranks_[logical % ranks_.size()];
  }
  bool is_local(std::size_t logical) const { return rank_of(logical) == rank(); }

  // One line per logical device made so far: "Device<1> -> cuda:0 (shared with Device<0>)". Before
  // any is made (no network yet): the backend, the GPUs found, and how Device<N> will map.
  std::string describe() const {
    const std::lock_guard turn(*issue_mutex_);
    if (transport_) return describe_ranks();
    std::ostringstream os;
    if (executors_.empty()) {
      if (kind_ == backend::Kind::host)
        os << "host backend (" << (host_asked_ ? "asked for" : "no CUDA GPU found, or not compiled by nvcc")
           << "): every Device<N> runs on the host (" << host_execution_words() << ")\n";
      else {
        os << "cuda backend, " << gpus_found_ << " GPU(s) found: Device<N> runs on entry N % " << gpus_.size()
           << " of the list [";
        for (std::size_t i = 0; i < gpus_.size(); ++i) os << (i ? ", " : "") << gpus_[i];
        os << "]:";
        for (std::size_t n = 0; n <= gpus_.size(); ++n) os << " Device<" << n << "> -> cuda:" << physical(n) << ",";
        os << " ...\n";
      }
      return os.str();
    }
    for (const auto &[logical, ex] : executors_) {
      os << "Device<" << logical << "> -> " << ex->name();
      for (const auto &[other, oex] : executors_) {
        if (other >= logical) break;
        if (kind_ == backend::Kind::cuda && physical(other) == physical(logical)) {
          os << " (shared with Device<" << other << ">)";
          break;
        }
      }
      if (kind_ == backend::Kind::host) os << " (" << host_execution_words() << ")";
      os << '\n';
    }
    return os.str();
  }

private:
  // Across processes: "Device<1> -> rank 1 on node7: host:1 (...)", the device only where it is local.
  std::string describe_ranks() const {
    std::set<std::size_t> devices;
    {
      const std::lock_guard held(placed_mutex_);
      devices = placed_;
    }
    for (const auto &[logical, ex] : executors_) devices.insert(logical);
    std::ostringstream os;
    for (const std::size_t logical : devices) {
      const int r = rank_of(logical);
      os << "Device<" << logical << "> -> rank " << r << " on " << transport_->hosts().at(static_cast<std::size_t>(r));
      if (const auto it = executors_.find(logical); it != executors_.end())
        os << ": " << it->second->name() << " (" << host_execution_words() << ")";
      os << '\n';
    }
    return os.str();
  }

  // Splits "rank:place" entries into the ranks (ranks_) and the places, returned in the syntax of
  // a single process ("host", or GPU indices). Plain entries keep the default ranks.
  std::string take_ranks(const std::string &spec) {
    if (spec.find(':') == std::string::npos) return spec;
    std::string places;
    bool host = false, gpu = false;
    for (std::size_t at = 0; at <= spec.size();) {
      const auto comma = std::min(spec.find(',', at), spec.size());
      const std::string item = spec.substr(at, comma - at);
      const auto colon = item.find(':');
      const std::string r = item.substr(0, colon), place = colon == std::string::npos ? "" : item.substr(colon + 1);
      if (colon == std::string::npos || r.empty() || r.size() > 6 ||
          r.find_first_not_of("0123456789") != std::string::npos || place.empty() ||
          (place != "host" && place.find_first_not_of("0123456789") != std::string::npos))
        detail::fail("device list '", spec, "' (TANDEM_DEVICES or Context options): across processes each entry is ",
                     "'rank:host' or 'rank:gpu' such as '0:host,1:host' or '0:0,1:0', but got the entry '", item, "'");
      const int rank = std::stoi(r);
      if (rank >= size())
        detail::fail("device list '", spec, "' places a device on rank ", rank, ", but the program runs ", size(),
                     " rank(s)");
      ranks_.push_back(rank);
      (place == "host" ? host : gpu) = true;
      if (place != "host") places += (places.empty() ? "" : ",") + place;
      at = comma + 1;
    }
    if (host && gpu) detail::fail("device list '", spec, "': entries mix 'host' and GPU indices");
    return host ? "host" : places;
  }

  void configure(const std::string &spec) {
    int gpus = 0;
#ifdef TANDEM_CUDA_BACKEND
    gpus = backend::cuda::device_count();
#endif
    gpus_found_ = gpus;
    host_asked_ = spec == "host";
    if (host_asked_) return; // asked for: no notice
    for (std::size_t at = 0; !spec.empty() && at <= spec.size();) {
      const auto comma = std::min(spec.find(',', at), spec.size());
      const std::string item = spec.substr(at, comma - at);
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 6)
        detail::fail("device list '", spec, "' (TANDEM_DEVICES or Context options): expected 'host' or ",
                     "comma-separated GPU indices such as '0,1', but got the entry '", item, "'");
      gpus_.push_back(std::stoi(item));
      at = comma + 1;
    }
    if (gpus == 0) {
      if (!options_.quiet) notice_host_fallback();
      return;
    }
    for (int g : gpus_)
      if (g >= gpus) detail::fail("device list '", spec, "' names GPU ", g, ", but this machine has ", gpus, " GPU(s)");
    if (gpus_.empty())
      for (int g = 0; g < gpus; ++g) gpus_.push_back(g);
    kind_ = backend::Kind::cuda;
  }

  // TANDEM_HOST_EXECUTION, which wins over the option as TANDEM_DEVICES does (tests run the whole
  // host suite both ways with it).
  static HostExecution parse_host_execution(std::string_view value) {
    if (value == "automatic") return HostExecution::automatic;
    if (value == "workers") return HostExecution::workers;
    if (value == "calling_thread") return HostExecution::calling_thread;
    detail::fail("TANDEM_HOST_EXECUTION is '", value, "', but must be one of automatic, workers, calling_thread");
  }

  // Where the host backend's work runs, as describe() says it.
  const char *host_execution_words() const {
    switch (options_.host_execution) {
    case HostExecution::workers: return "worker thread";
    case HostExecution::calling_thread: return "calling thread";
    case HostExecution::automatic: break;
    }
    return "worker thread, or the calling thread for small steps";
  }

  // The seed's CPU fallback: said once per process, since every Context would say the same.
  static void notice_host_fallback() {
    static const bool once = [] {
      std::fputs("tandem: no CUDA GPU in use (none found, or this program was not compiled by nvcc); "
                 "running every stage on the host backend\n",
                 stderr);
      return true;
    }();
    (void)once;
  }

  int physical(std::size_t logical) const { return gpus_.empty() ? 0 : gpus_[logical % gpus_.size()]; }

  std::shared_ptr<backend::Executor> make_executor(std::size_t logical) {
#ifdef TANDEM_CUDA_BACKEND
    if (kind_ == backend::Kind::cuda)
      return std::make_shared<backend::cuda::Executor>(
          physical(logical), logical, options_.precision,
          backend::cuda::Features{.fuse_epilogues = options_.fuse_epilogues,
                                  .overlap_gradients = options_.overlap_gradients,
                                  .tune_products = options_.tune_products});
#endif
    return std::make_shared<backend::host::Executor>(logical, options_.precision);
  }

  Options options_;
  std::shared_ptr<backend::Transport> transport_; // null: one process
  std::vector<int> ranks_;                        // by placement entry; empty: N % size
  mutable std::set<std::size_t> placed_;          // logical devices asked about, for describe()
  mutable std::mutex placed_mutex_;               // (rank_of is called outside the Context's turn)
  backend::Kind kind_ = backend::Kind::host;
  std::vector<int> gpus_;
  int gpus_found_ = 0;
  bool host_asked_ = false;
  std::shared_ptr<std::recursive_mutex> issue_mutex_ = std::make_shared<std::recursive_mutex>();
  std::map<std::size_t, std::shared_ptr<backend::Executor>> executors_;
  Timeline timeline_{options_.timeline}; // after executors_: its events go first
};

} // namespace detail

// A handle to the devices. Networks, tensors, parameters and optimizers keep what they use alive
// (detail::ContextState, the executors), so they may be destroyed in any order, before or after
// their Context; a network keeps working after its Context is gone. Threads: docs/threads.md.
class Context {
public:
  using Options = ContextOptions;

  Context() : Context(Options{}) {}
  explicit Context(Options options) : state_(std::make_shared<detail::ContextState>(std::move(options))) {}
  // One process of a program that runs on several (SPMD): logical devices are placed on ranks
  // (docs/distributed.md), and this process makes executors for its own only.
  explicit Context(std::shared_ptr<backend::Transport> transport, Options options = {})
      : state_(std::make_shared<detail::ContextState>(std::move(transport), std::move(options))) {}
  // Context(env) for a distributed::Environment (anything that offers a transport).
  template <class Env>
  requires requires(Env &env) {
    { env.transport() } -> std::convertible_to<std::shared_ptr<backend::Transport>>;
  }
  explicit Context(Env &env, Options options = {}) : Context(env.transport(), std::move(options)) {}
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;

  backend::Kind backend() const { return state_->backend(); }
  const Options &options() const { return state_->options(); }

  // When each task of each step ran, per logical device and link; recorded while enabled().
  Timeline &timeline() { return state_->timeline(); }
  const Timeline &timeline() const { return state_->timeline(); }

  // The executor of logical device `logical`, made on first use.
  backend::Executor &executor(std::size_t logical) { return state_->executor(logical); }

  // The link carrying a boundary from logical device `from` to `to`; null where the two share
  // memory (one physical GPU) and copies are not forced, so the next stage reads in place.
  std::unique_ptr<backend::Link> link(std::size_t from, std::size_t to) { return state_->link(from, to); }

  // This process's rank and the number of ranks (0 and 1 without a transport), and where each
  // logical device runs.
  int rank() const { return state_->rank(); }
  int size() const { return state_->size(); }
  backend::Transport *transport() const { return state_->transport(); }
  int rank_of(std::size_t logical) const { return state_->rank_of(logical); }
  bool is_local(std::size_t logical) const { return state_->is_local(logical); }

  // One line per logical device made so far: "Device<1> -> cuda:0 (shared with Device<0>)";
  // before any: the backend, the devices found and how Device<N> will map.
  std::string describe() const { return state_->describe(); }

  // The bytes that networks, optimizers and tensors hold on logical device `logical` now
  // (ContextOptions::device_memory caps them).
  std::size_t bytes_in_use(std::size_t logical) const {
    const std::lock_guard turn(state_->issue_mutex());
    return state_->executor(logical).bytes_in_use();
  }

  // The mutex that issuing threads take turns on (docs/threads.md).
  std::recursive_mutex &issue_mutex() const { return state_->issue_mutex(); }
  // The Context's body, shared with what is made on it.
  const std::shared_ptr<detail::ContextState> &state() const { return state_; }

private:
  std::shared_ptr<detail::ContextState> state_;
};

} // namespace tandem
