// SPDX-License-Identifier: Apache-2.0
// Whole-file reads and atomic writes: what checkpoints need from the file system (POSIX).
#pragma once

#include <cerrno>
#include <cstddef>
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

#include "tandem/error.hpp"

namespace tandem::checkpoint {

// The whole file, or an Error naming it: a loader checks everything before it changes anything,
// so it reads everything first.
inline std::vector<std::byte> read_file(const std::filesystem::path &path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) detail::fail("cannot open '", path.string(), "' for reading: ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) detail::fail("cannot read '", path.string(), "': ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) detail::fail("'", path.string(), "' is not a regular file");
  std::vector<std::byte> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) detail::fail("cannot read '", path.string(), "': ", std::strerror(errno));
    if (n == 0) detail::fail("'", path.string(), "' shrank while it was read (", done, " of ", bytes.size(), " bytes)");
    done += static_cast<std::size_t>(n);
  }
  return bytes;
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

} // namespace tandem::checkpoint
