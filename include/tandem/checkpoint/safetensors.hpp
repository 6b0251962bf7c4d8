// SPDX-License-Identifier: Apache-2.0
// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header size N, N bytes of a UTF-8 JSON object {name: {"dtype", "shape", "data_offsets"}} with an
// optional "__metadata__" map of strings, then the tensors' bytes. Reading checks what the
// reference implementation checks; writing pads the header with spaces to 8 bytes, as it does.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tandem/checkpoint/file_io.hpp"
#include "tandem/error.hpp"

namespace tandem::checkpoint {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; tandem's checkpoints copy it as is");

// The reference implementation refuses larger headers, so no file can make a reader allocate more.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

// Bytes per element of the format's dtypes; nullopt for a name it does not define.
inline std::optional<std::size_t> dtype_size(std::string_view dtype) {
  static constexpr std::array<std::pair<std::string_view, std::size_t>, 16> sizes{{{"BOOL", 1},
                                                                                   {"U8", 1},
                                                                                   {"I8", 1},
                                                                                   {"F8_E5M2", 1},
                                                                                   {"F8_E4M3", 1},
                                                                                   {"I16", 2},
                                                                                   {"U16", 2},
                                                                                   {"F16", 2},
                                                                                   {"BF16", 2},
                                                                                   {"I32", 4},
                                                                                   {"U32", 4},
                                                                                   {"F32", 4},
                                                                                   {"I64", 8},
                                                                                   {"U64", 8},
                                                                                   {"F64", 8},
                                                                                   {"C64", 8}}};
  for (const auto &[name, size] : sizes)
    if (name == dtype) return size;
  return std::nullopt;
}

template <class T> constexpr std::string_view dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "checkpoints hold float or double tensors");
  return std::is_same_v<T, float> ? "F32" : "F64";
}

// One tensor of a file: its bytes are [begin, end) of the data that follows the header.
struct TensorEntry {
  std::string name, dtype;
  std::vector<std::uint64_t> shape;
  std::size_t begin = 0, end = 0;
};

// A tensor to write: `data` holds product(shape) elements of `dtype`, little-endian.
struct TensorView {
  std::string name, dtype;
  std::vector<std::uint64_t> shape;
  std::span<const std::byte> data;
};

namespace detail {

// product(shape) * element, or nullopt where it overflows 64 bits.
inline std::optional<std::uint64_t> byte_count(const std::vector<std::uint64_t> &shape, std::size_t element) {
  std::uint64_t n = element;
  for (const std::uint64_t d : shape) {
    if (d != 0 && n > UINT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

inline std::string shape_text(const std::vector<std::uint64_t> &shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

} // namespace detail

// A parsed and checked file, with its bytes: every entry lies inside them, and together they
// cover the data exactly.
class SafetensorsFile {
public:
  // `bytes`: the whole file; `file` names it in messages.
  SafetensorsFile(std::vector<std::byte> bytes, std::string file) : bytes_(std::move(bytes)), file_(std::move(file)) {
    parse();
  }
  static SafetensorsFile read(const std::filesystem::path &path) { return {read_file(path), path.string()}; }

  const std::string &file() const { return file_; }
  const std::map<std::string, std::string> &metadata() const { return metadata_; }
  // Every tensor, in the order of their data.
  const std::vector<TensorEntry> &tensors() const { return tensors_; }
  const TensorEntry *find(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  std::optional<std::string> meta(const std::string &key) const {
    const auto it = metadata_.find(key);
    if (it == metadata_.end()) return std::nullopt;
    return it->second;
  }
  std::span<const std::byte> data(const TensorEntry &t) const {
    return std::span<const std::byte>(bytes_).subspan(data_start_ + t.begin, t.end - t.begin);
  }

private:
  template <class... Parts> [[noreturn]] void bad(const Parts &...parts) const {
    tandem::detail::fail("'", file_, "' is not a valid safetensors file: ", parts...);
  }

  void parse() {
    if (bytes_.size() < 8) bad("it has ", bytes_.size(), " bytes, fewer than the 8 of its header size");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    if (n == 0) bad("its header size is 0");
    if (n > max_header_bytes) bad("its header size ", n, " is more than the ", max_header_bytes, " bytes allowed");
    if (n > bytes_.size() - 8)
      bad("its header size ", n, " is more than the ", bytes_.size() - 8, " bytes that follow");
    data_start_ = 8 + static_cast<std::size_t>(n);
    const auto *text = reinterpret_cast<const char *>(bytes_.data() + 8);
    if (text[0] != '{') bad("its header is not a JSON object (it does not start with '{')");

    // nlohmann keeps the last of two equal keys: the callback sees each key and finds repeats.
    std::vector<std::set<std::string>> open_objects;
    std::optional<std::string> repeated;
    const auto watch = [&](int, nlohmann::json::parse_event_t event, nlohmann::json &parsed) {
      using E = nlohmann::json::parse_event_t;
      if (event == E::object_start) open_objects.emplace_back();
      else if (event == E::object_end && !open_objects.empty()) open_objects.pop_back();
      else if (event == E::key && !open_objects.empty() &&
               !open_objects.back().insert(parsed.get<std::string>()).second && !repeated)
        repeated = parsed.get<std::string>();
      return true;
    };
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + n, watch);
    } catch (const nlohmann::json::exception &e) {
      bad("its header is not valid JSON (", e.what(), ")");
    }
    if (repeated) bad("its header names '", *repeated, "' twice");
    if (!header.is_object()) bad("its header is not a JSON object");

    for (const auto &[name, info] : header.items()) {
      if (name == "__metadata__") {
        if (!info.is_object()) bad("__metadata__ is not an object");
        for (const auto &[key, value] : info.items()) {
          if (!value.is_string()) bad("__metadata__ '", key, "' is not a string");
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      tensors_.push_back(entry(name, info));
    }
    // Sorted by offset, the tensors must tile the data: no gap, no overlap, nothing after.
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorEntry &a, const TensorEntry &b) {
      return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    const std::size_t data_bytes = bytes_.size() - data_start_;
    std::size_t at = 0;
    for (const auto &t : tensors_) {
      if (t.begin != at)
        bad("tensor '", t.name, "' starts at byte ", t.begin, " of the data, where ", at,
            " was expected (the tensors must follow one another without gaps or overlaps)");
      at = t.end;
    }
    if (at != data_bytes) bad("its tensors end at byte ", at, " of the data, but the data has ", data_bytes, " bytes");
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  TensorEntry entry(const std::string &name, const nlohmann::json &info) const {
    if (!info.is_object()) bad("tensor '", name, "' is not described by an object");
    for (const auto &[key, value] : info.items())
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        bad("tensor '", name, "' has an unknown field '", key, "'");
    TensorEntry t{name, {}, {}, 0, 0};
    const auto dtype = info.find("dtype");
    if (dtype == info.end() || !dtype->is_string()) bad("tensor '", name, "' has no dtype string");
    t.dtype = dtype->get<std::string>();
    const auto element = dtype_size(t.dtype);
    if (!element) bad("tensor '", name, "' has an unknown dtype '", t.dtype, "'");
    const auto shape = info.find("shape");
    if (shape == info.end() || !shape->is_array()) bad("tensor '", name, "' has no shape array");
    for (const auto &d : *shape) {
      if (!d.is_number_unsigned())
        bad("tensor '", name, "' has a shape entry that is not a whole number >= 0: ", d.dump());
      t.shape.push_back(d.get<std::uint64_t>());
    }
    const auto offsets = info.find("data_offsets");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      bad("tensor '", name, "' has no data_offsets [begin, end] of whole numbers");
    const auto begin = (*offsets)[0].get<std::uint64_t>(), end = (*offsets)[1].get<std::uint64_t>();
    const std::size_t data_bytes = bytes_.size() - data_start_;
    if (begin > end || end > data_bytes)
      bad("tensor '", name, "' has data_offsets [", begin, ", ", end, "], not a range within the ", data_bytes,
          " bytes of data");
    const auto bytes = detail::byte_count(t.shape, *element);
    if (!bytes) bad("tensor '", name, "' of shape ", detail::shape_text(t.shape), " has more bytes than 64 bits count");
    if (*bytes != end - begin)
      bad("tensor '", name, "' of shape ", detail::shape_text(t.shape), " and dtype ", t.dtype, " needs ", *bytes,
          " bytes, but its data_offsets [", begin, ", ", end, "] hold ", end - begin);
    t.begin = static_cast<std::size_t>(begin);
    t.end = static_cast<std::size_t>(end);
    return t;
  }

  std::vector<std::byte> bytes_;
  std::string file_;
  std::size_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, std::size_t> index_;
};

// The size field and the header, padded with spaces so that the data starts 8-byte aligned;
// the tensors' data follows in the order given.
inline std::vector<std::byte> safetensors_header(std::span<const TensorView> tensors,
                                                 const std::map<std::string, std::string> &metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t at = 0;
  for (const auto &t : tensors) {
    const auto element = dtype_size(t.dtype);
    if (!element) tandem::detail::fail("safetensors: tensor '", t.name, "' has an unknown dtype '", t.dtype, "'");
    const auto bytes = detail::byte_count(t.shape, *element);
    if (t.name == "__metadata__" || header.contains(t.name))
      tandem::detail::fail("safetensors: the name '", t.name, "' is used twice or reserved");
    if (!bytes || *bytes != t.data.size())
      tandem::detail::fail("safetensors: tensor '", t.name, "' of shape ", detail::shape_text(t.shape), " and dtype ",
                           t.dtype, " is given ", t.data.size(), " bytes");
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + *bytes}}};
    at += *bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<std::byte> out(8 + text.size());
  const std::uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

// Writes a file atomically (write_file_atomically).
inline void write_safetensors(const std::filesystem::path &path, std::span<const TensorView> tensors,
                              const std::map<std::string, std::string> &metadata) {
  const std::vector<std::byte> header = safetensors_header(tensors, metadata);
  std::vector<std::span<const std::byte>> parts{header};
  for (const auto &t : tensors) parts.push_back(t.data);
  write_file_atomically(path, parts);
}

} // namespace tandem::checkpoint
