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
#include <memory>
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

// JSON as the safetensors reference reads it (serde_json): no nesting deeper than 128 levels, no
// key twice in one object (nlohmann would keep the last), no NUL byte (nlohmann's lexer takes one
// for the end of the input and would ignore what follows). A SAX pass checks these in linear time
// before the DOM is built; nlohmann's parse callback rescans the enclosing object at every nested
// object's end, quadratic in the entries of a header. `bad` throws with the reason, a predicate
// ("is not valid JSON (...)") whose subject the caller names.
inline constexpr std::size_t max_json_depth = 128;

template <class Bad> nlohmann::json parse_json(std::string_view text, Bad &&bad) {
  if (const void *nul = std::memchr(text.data(), 0, text.size()))
    bad("holds a NUL byte (at byte ", static_cast<const char *>(nul) - text.data(), ")");
  struct Checker : nlohmann::json_sax<nlohmann::json> {
    std::vector<std::set<std::string>> open; // the keys of each open object (empty for an array)
    std::vector<bool> is_object;
    std::optional<std::string> repeated;
    bool too_deep = false;
    bool push(bool object) {
      if (is_object.size() >= max_json_depth) {
        too_deep = true;
        return false; // stops the parse
      }
      is_object.push_back(object);
      open.emplace_back();
      return true;
    }
    bool pop() {
      is_object.pop_back();
      open.pop_back();
      return true;
    }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t &) override { return true; }
    bool string(string_t &) override { return true; }
    bool binary(binary_t &) override { return true; }
    bool start_object(std::size_t) override { return push(true); }
    bool key(string_t &k) override {
      if (!open.back().insert(k).second && !repeated) repeated = k;
      return true;
    }
    bool end_object() override { return pop(); }
    bool start_array(std::size_t) override { return push(false); }
    bool end_array() override { return pop(); }
    bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &e) override {
      error = e.what();
      return false;
    }
    std::string error;
  } checker;
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker);
  if (checker.too_deep) bad("nests deeper than ", max_json_depth, " levels");
  if (!ok) bad("is not valid JSON (", checker.error, ")");
  if (checker.repeated) bad("names '", *checker.repeated, "' twice");
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception &e) {
    bad("is not valid JSON (", e.what(), ")");
    throw; // (bad throws)
  }
}

// A JSON value in a message: its first 60 characters (the depth is bounded by parse_json).
inline std::string brief(const nlohmann::json &j) {
  std::string s = j.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// A parsed and checked file: every entry lies inside its data, and together they cover the data
// exactly. Opened from a path, it reads the header alone; read_data() reads the tensors, once the
// header has been checked against what the caller expects, so that a file cannot make a reader
// allocate more than its network needs.
class SafetensorsFile {
public:
  // `bytes`: the whole file; `file` names it in messages.
  SafetensorsFile(std::vector<std::byte> bytes, std::string file) : file_(std::move(file)) {
    if (bytes.size() < 8) bad("it has ", bytes.size(), " bytes, fewer than the 8 of its header size");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    parse(bytes.size(), n, [&] {
      return std::vector<std::byte>(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    });
    data_.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_start_), bytes.end());
    has_data_ = true;
  }
  // The header of the file at `path`, checked; no tensor data yet.
  static SafetensorsFile open(const std::filesystem::path &path) {
    return SafetensorsFile(std::make_shared<InputFile>(path));
  }
  // The header and the data.
  static SafetensorsFile read(const std::filesystem::path &path) {
    auto f = open(path);
    f.read_data();
    return f;
  }

  // Reads the tensors' bytes (a no-op once read).
  void read_data() {
    if (has_data_) return;
    data_ = input_->read(data_start_, data_bytes_);
    has_data_ = true;
    input_.reset();
  }

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
  // Bytes of tensor data the file holds (all of it after its header).
  std::uint64_t data_bytes() const { return data_bytes_; }
  std::span<const std::byte> data(const TensorEntry &t) const {
    if (!has_data_) tandem::detail::fail("SafetensorsFile '", file_, "': data() before read_data()");
    return std::span<const std::byte>(data_).subspan(t.begin, t.end - t.begin);
  }

private:
  explicit SafetensorsFile(std::shared_ptr<InputFile> input) : file_(input->path()), input_(std::move(input)) {
    if (input_->size() < 8) bad("it has ", input_->size(), " bytes, fewer than the 8 of its header size");
    std::uint64_t n = 0;
    std::memcpy(&n, input_->read(0, 8).data(), 8);
    parse(input_->size(), n, [&] { return input_->read(8, n); });
  }

  template <class... Parts> [[noreturn]] void bad(const Parts &...parts) const {
    tandem::detail::fail("'", file_, "' is not a valid safetensors file: ", parts...);
  }

  // `size`: the file's bytes, `n` its header size; `read_header()` reads the header, once `n` has
  // been checked against `size`.
  template <class ReadHeader> void parse(std::uint64_t size, std::uint64_t n, ReadHeader &&read_header) {
    if (n == 0) bad("its header size is 0");
    if (n > max_header_bytes) bad("its header size ", n, " is more than the ", max_header_bytes, " bytes allowed");
    if (n > size - 8) bad("its header size ", n, " is more than the ", size - 8, " bytes that follow");
    data_start_ = 8 + n;
    data_bytes_ = size - data_start_;
    const std::vector<std::byte> bytes = read_header();
    const std::string_view text(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    if (text[0] != '{') bad("its header is not a JSON object (it does not start with '{')");
    const nlohmann::json header = parse_json(text, [&](const auto &...parts) { bad("its header ", parts...); });
    if (!header.is_object()) bad("its header is not a JSON object");

    for (const auto &[name, info] : header.items()) {
      if (name == "__metadata__") {
        if (!info.is_object()) bad("__metadata__ is not an object");
        for (const auto &[key, value] : info.items()) {
          if (!value.is_string()) bad("__metadata__ '", key, "' is not a string");
          metadata_[key] = value.template get<std::string>();
        }
        continue;
      }
      tensors_.push_back(entry(name, info));
    }
    // Sorted by offset, the tensors must tile the data: no gap, no overlap, nothing after.
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorEntry &a, const TensorEntry &b) {
      return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    std::uint64_t at = 0;
    for (const auto &t : tensors_) {
      if (t.begin != at)
        bad("tensor '", t.name, "' starts at byte ", t.begin, " of the data, where ", at,
            " was expected (the tensors must follow one another without gaps or overlaps)");
      at = t.end;
    }
    if (at != data_bytes_)
      bad("its tensors end at byte ", at, " of the data, but the data has ", data_bytes_, " bytes");
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
        bad("tensor '", name, "' has a shape entry that is not a whole number >= 0: ", brief(d));
      t.shape.push_back(d.get<std::uint64_t>());
    }
    const auto offsets = info.find("data_offsets");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      bad("tensor '", name, "' has no data_offsets [begin, end] of whole numbers");
    const auto begin = (*offsets)[0].get<std::uint64_t>(), end = (*offsets)[1].get<std::uint64_t>();
    if (begin > end || end > data_bytes_)
      bad("tensor '", name, "' has data_offsets [", begin, ", ", end, "], not a range within the ", data_bytes_,
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

  std::string file_;
  std::shared_ptr<InputFile> input_; // until read_data()
  std::uint64_t data_start_ = 0, data_bytes_ = 0;
  bool has_data_ = false;
  std::vector<std::byte> data_;
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
