// SPDX-License-Identifier: Apache-2.0
// Context: TANDEM_DEVICES and options map logical devices; bad specs are errors.
#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include <tandem/tandem.hpp>

#include "../support/scoped_env.hpp"

using namespace tandem;

namespace {
struct ScopedDevices : test::ScopedEnv {
  explicit ScopedDevices(const char *value) : ScopedEnv("TANDEM_DEVICES", value) {}
};
} // namespace

TEST_CASE("a translation unit compiled without nvcc runs on the host, whatever it asks for") {
  ScopedDevices env(nullptr);
  for (const char *spec : {"", "host", "0,1", "0,0"}) {
    Context ctx({.devices = spec});
    CHECK(ctx.backend() == backend::Kind::host);
    // describe() says so before any network exists, and why.
    const std::string why =
        std::string(spec) == "host" ? "(asked for)" : "(no CUDA GPU found, or not compiled by nvcc)";
    CHECK(ctx.describe().find("host backend " + why + ": every Device<N> runs on the host") == 0);
  }
}

TEST_CASE("malformed device lists are errors that quote the list") {
  ScopedDevices env(nullptr);
  CHECK_THROWS_WITH_AS(Context({.devices = "0,,1"}), doctest::Contains("device list '0,,1'"), Error);
  CHECK_THROWS_WITH_AS(Context({.devices = "gpu0"}), doctest::Contains("got the entry 'gpu0'"), Error);
  CHECK_THROWS_WITH_AS(Context({.devices = "0,"}), doctest::Contains("device list '0,'"), Error);
  CHECK_THROWS_WITH_AS(Context({.devices = "-1"}), doctest::Contains("'-1'"), Error);
}

TEST_CASE("TANDEM_DEVICES wins over the options") {
  ScopedDevices env("not-a-list");
  CHECK_THROWS_WITH_AS(Context({.devices = "host"}), doctest::Contains("device list 'not-a-list'"), Error);
}

TEST_CASE("describe() names every logical device made so far, one line each") {
  ScopedDevices env("host");
  Context ctx;
  // Before any device is made: the backend and how every Device<N> will map.
  CHECK(ctx.describe().find("host backend (asked for): every Device<N> runs on the host (") == 0);
  ctx.executor(2);
  ctx.executor(0);
  // (unit.workers runs this suite again with TANDEM_HOST_EXECUTION=workers)
  const std::string where = ctx.options().host_execution == HostExecution::workers
                                ? "worker thread"
                                : "worker thread, or the calling thread for small steps";
  CHECK(ctx.describe() == "Device<0> -> host:0 (" + where + ")\nDevice<2> -> host:2 (" + where + ")\n");
  Context inline_ctx({.devices = "host", .host_execution = HostExecution::calling_thread});
  inline_ctx.executor(0);
  if (!std::getenv("TANDEM_HOST_EXECUTION")) CHECK(inline_ctx.describe() == "Device<0> -> host:0 (calling thread)\n");
  CHECK(&ctx.executor(2) == &ctx.executor(2));
  CHECK(&ctx.executor(0) != &ctx.executor(2));
}
