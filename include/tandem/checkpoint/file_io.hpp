// SPDX-License-Identifier: Apache-2.0
// Reads of whole files or parts of them, and atomic writes: what checkpoints need from the file
// system (POSIX).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem/detail/host_memory.hpp"
#include "tandem/error.hpp"

namespace tandem::checkpoint {

// A regular file open for reading. O_NONBLOCK: opening a FIFO (or a device) returns at once
// instead of waiting for a writer, and the type check below refuses it; a regular file reads
// as usual.
class InputFile {
public:
  explicit InputFile(const std::filesystem::path &path) : path_(path.string()) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) detail::fail("cannot open '", path_, "' for reading: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      detail::fail("cannot read '", path_, "': ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      detail::fail("'", path_, "' is not a regular file");
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  InputFile(const InputFile &) = delete;
  InputFile &operator=(const InputFile &) = delete;
  ~InputFile() { ::close(fd_); }

  const std::string &path() const { return path_; }
  std::uint64_t size() const { return size_; }

  // `n` bytes from `offset`. Memory that cannot be had is an Error naming the file, not
  // std::bad_alloc (detail::host_vector).
  std::vector<std::byte> read(std::uint64_t offset, std::uint64_t n) const {
    if (offset > size_ || n > size_ - offset)
      detail::fail("'", path_, "': bytes [", offset, ", ", offset + n, ") lie beyond its ", size_, " bytes");
    const std::string what = "reading '" + path_ + "'";
    auto bytes = detail::host_vector<std::byte>(static_cast<std::size_t>(n), what.c_str());
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t got = ::pread(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got < 0) detail::fail("cannot read '", path_, "': ", std::strerror(errno));
      if (got == 0) detail::fail("'", path_, "' shrank while it was read (", offset + done, " of ", size_, " bytes)");
      done += static_cast<std::size_t>(got);
    }
    return bytes;
  }

private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// The whole file, or an Error naming it: a loader checks everything before it changes anything,
// so it reads everything first. `max_bytes` bounds what a file can make it allocate.
inline std::vector<std::byte> read_file(const std::filesystem::path &path, std::uint64_t max_bytes = UINT64_MAX) {
  const InputFile f(path);
  if (f.size() > max_bytes)
    detail::fail("'", f.path(), "' has ", f.size(), " bytes, more than the ", max_bytes, " such a file may have");
  return f.read(0, f.size());
}

// The temporary files write_file_atomically makes beside `path`: ".<name>.tmp.<pid>.<random>".
// A save that was killed leaves one behind; loaders never read them.
inline bool is_temporary_of(const std::filesystem::path &candidate, const std::string &name) {
  return candidate.filename().string().starts_with("." + name + ".tmp.");
}

// Writes `parts` one after another to a new file beside `path`, flushes it to the disk (fsync),
// and renames it to `path`: a crash or a full disk leaves the old file or none under that name,
// never a half-written one, and a failure removes the temporary file.
inline void write_file_atomically(const std::filesystem::path &path,
                                  std::span<const std::span<const std::byte>> parts) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::random_device rd;
  const std::filesystem::path tmp =
      dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    detail::fail("cannot write '", path.string(), "': creating the temporary file '", tmp.string(),
                 "' failed: ", std::strerror(errno));
  auto give_up = [&](const char *what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    detail::fail("cannot write '", path.string(), "': ", what, " failed: ", std::strerror(err));
  };
  for (const auto part : parts) {
    std::size_t done = 0;
    while (done < part.size()) {
      const ssize_t n = ::write(fd, part.data() + done, part.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) give_up("write");
      done += static_cast<std::size_t>(n);
    }
  }
  if (::fsync(fd) != 0) give_up("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::fail("cannot write '", path.string(), "': close failed: ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::fail("cannot write '", path.string(), "': renaming '", tmp.string(),
                 "' to it failed: ", std::strerror(err));
  }
  // The rename itself is durable once the directory is: best effort, the file is complete either way.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

inline void write_file_atomically(const std::filesystem::path &path, const std::string &text) {
  const std::span<const std::byte> part = std::as_bytes(std::span(text));
  write_file_atomically(path, std::span(&part, 1));
}

} // namespace tandem::checkpoint
