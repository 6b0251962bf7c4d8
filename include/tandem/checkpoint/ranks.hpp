// SPDX-License-Identifier: Apache-2.0
// checkpoint::Ranks: the ranks of a network across processes as a checkpoint sees them - who
// holds which stage, every rank's agreement before anything is written, a save's id.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tandem/backend/transport.hpp"
#include "tandem/checkpoint/network_description.hpp"
#include "tandem/checkpoint/safetensors.hpp"
#include "tandem/error.hpp"
#include "tandem/layers/linear.hpp"
#include "tandem/optim/adam.hpp"
#include "tandem/optim/adamw.hpp"
#include "tandem/optim/lr_scheduler.hpp"
#include "tandem/optim/sgd.hpp"
#include "tandem/parameter.hpp"
#include "tandem/version.hpp"

namespace tandem::checkpoint {

// ---- the ranks of a network across processes ----

// The ranks of the network's program, for one call (save, load, ...) that every rank makes: a
// channel of its own over the context's transport, opened by every rank together. Inactive in a
// single process, where each call below is a plain call. A network whose parameters all live here
// is taken for a single process's, without asking its Context (which may be gone by now, as a
// network may outlive it); across processes some parameter lives on another rank.
class Ranks {
public:
  template <class Net> Ranks(const Net &net, const char *call) : call_(call) {
    const auto params = net.parameters();
    if (std::all_of(params.begin(), params.end(), [](const auto &p) { return p.is_local(); })) return;
    backend::Transport *t = net.context().transport();
    if (!t || t->size() < 2) return;
    rank_ = t->rank();
    size_ = t->size();
    try {
      channel_ = t->open_channel(net.context().options().peer_timeout);
    } catch (const Error &e) {
      tandem::detail::fail(call, " on rank ", rank_, ": the ranks did not all call it (", e.what(), ")");
    }
    channel_->begin_step(call);
  }

  bool active() const { return channel_ != nullptr; }
  int rank() const { return rank_; }
  int size() const { return size_; }

  // Runs `f` on this rank, then throws on every rank if it threw on any (this rank's own Error
  // first): a check that fails anywhere stops every rank before anything is written.
  template <class F> void all(F &&f) {
    std::exception_ptr error;
    try {
      f();
    } catch (...) {
      if (!active()) throw;
      error = std::current_exception();
    }
    agree(error);
  }
  void agree(const std::exception_ptr &error) {
    if (!active()) {
      if (error) std::rethrow_exception(error);
      return;
    }
    struct Record {
      std::int32_t failed = 0;
      char text[508] = {};
    } mine;
    if (error) {
      mine.failed = 1;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception &e) {
        std::strncpy(mine.text, e.what(), sizeof mine.text - 1);
      } catch (...) {
        std::strncpy(mine.text, "an exception that is not a std::exception", sizeof mine.text - 1);
      }
    }
    const auto bytes = channel_->all_gather(&mine, sizeof mine, call_);
    std::vector<Record> all(static_cast<std::size_t>(size_));
    std::memcpy(all.data(), bytes.data(), bytes.size());
    if (error) std::rethrow_exception(error);
    for (int r = 0; r < size_; ++r)
      if (all[static_cast<std::size_t>(r)].failed)
        tandem::detail::fail(call_, ": rank ", r,
                             " failed, so no rank changed anything: ", all[static_cast<std::size_t>(r)].text);
  }

  // Rank `root`'s bytes, on every rank.
  std::vector<std::byte> broadcast(std::vector<std::byte> bytes, int root) {
    if (!active()) return bytes;
    std::uint64_t n = bytes.size();
    channel_->broadcast(&n, sizeof n, root, call_);
    bytes.resize(static_cast<std::size_t>(n));
    if (n) channel_->broadcast(bytes.data(), bytes.size(), root, call_);
    return bytes;
  }
  std::string broadcast(const std::string &text, int root) {
    const auto *p = reinterpret_cast<const std::byte *>(text.data());
    const auto b = broadcast(std::vector<std::byte>(p, p + text.size()), root);
    return std::string(reinterpret_cast<const char *>(b.data()), b.size());
  }
  // Every rank's `mine`, in rank order; each rank passes as many.
  std::vector<std::vector<std::uint64_t>> all_gather(const std::vector<std::uint64_t> &mine) {
    if (!active()) return {mine};
    const auto bytes = channel_->all_gather(mine.data(), mine.size() * sizeof(std::uint64_t), call_);
    std::vector<std::vector<std::uint64_t>> all(static_cast<std::size_t>(size_),
                                                std::vector<std::uint64_t>(mine.size()));
    for (std::size_t r = 0; r < all.size(); ++r)
      std::memcpy(all[r].data(), bytes.data() + r * mine.size() * sizeof(std::uint64_t),
                  mine.size() * sizeof(std::uint64_t));
    return all;
  }

private:
  const char *call_;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<backend::Channel> channel_;
};

// A name that tells one save from every other: each file of a checkpoint carries it, and a load
// refuses files that carry different ones (a save that stopped halfway).
inline std::string new_save_id() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

} // namespace tandem::checkpoint
