// SPDX-License-Identifier: Apache-2.0
// Shared by the checkpoint tests: a network with every layer, training data, and byte-level helpers
// that take a file apart and put it back together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tandem/checkpoint.hpp>
#include <tandem/tandem.hpp>

namespace tandem::test {

// Every layer; stage 1 has no parameters (an empty group).
template <class T>
using CheckpointNet =
    BasicPipeline<T, Stage<Device<0>, Linear<6, 12>, Tanh, Linear<12, 12>, ReLU>, Stage<Device<1>, Sigmoid>,
                  Stage<Device<2>, GELU, Linear<12, 8>, GELUTanh, Linear<8, 4>, Identity>>;

inline std::filesystem::path scratch_dir(const std::string &name) {
  std::random_device rd;
  const auto dir = std::filesystem::temp_directory_path() / ("tandem_" + name + "_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

// Removes its folder when the test ends, passed or not.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string &name) : path(scratch_dir(name)) {}
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string &s) const { return path / s; }
};

inline std::vector<std::byte> read_bytes(const std::filesystem::path &p) { return checkpoint::read_file(p); }
inline void write_bytes(const std::filesystem::path &p, const std::vector<std::byte> &b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline std::uint64_t header_size(const std::vector<std::byte> &b) {
  std::uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return n;
}
inline void set_header_size(std::vector<std::byte> &b, std::uint64_t n) { std::memcpy(b.data(), &n, 8); }

// The file with its header replaced by `header` (padded to 8 bytes), the data kept.
inline std::vector<std::byte> with_header(const std::vector<std::byte> &b, std::string header) {
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::size_t old = 8 + header_size(b);
  std::vector<std::byte> out(8 + header.size());
  set_header_size(out, header.size());
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.insert(out.end(), b.begin() + static_cast<std::ptrdiff_t>(old), b.end());
  return out;
}
inline nlohmann::json header_of(const std::vector<std::byte> &b) {
  const auto *p = reinterpret_cast<const char *>(b.data() + 8);
  return nlohmann::json::parse(p, p + header_size(b));
}

// Bit-for-bit equality of float vectors (NaN payloads included), where == would let -0 pass for 0.
template <class T> bool same_bits(const std::vector<T> &a, const std::vector<T> &b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}
template <class T> bool same_bits(const std::vector<std::vector<T>> &a, const std::vector<std::vector<T>> &b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

template <class Net> std::vector<std::vector<typename Net::value_type>> weights(const Net &net) {
  std::vector<std::vector<typename Net::value_type>> v;
  for (const auto &p : net.parameters()) v.push_back(p.to_host());
  return v;
}
// The optimizer's state tensors and step counts, as save_checkpoint reads them.
template <class Net, class Opt> std::vector<std::vector<float>> optimizer_state(const Net &net, const Opt &opt) {
  auto v = checkpoint::gather_optimizer(net, opt).values;
  std::vector<float> steps;
  for (std::size_t i = 0; i < net.parameter_groups().size(); ++i) steps.push_back(static_cast<float>(opt.steps(i)));
  v.push_back(steps);
  v.push_back({opt.options().lr});
  return v;
}

} // namespace tandem::test
