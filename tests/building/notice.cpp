// SPDX-License-Identifier: Apache-2.0
// A program that includes tandem in two translation units (this and notice_second.cpp): built at
// -O0 it says once that it was compiled without optimisation; at -O2, or with
// TANDEM_NO_OPTIMIZATION_NOTICE, it says nothing. With the argument `default` it makes a default
// Context too, which says (on a machine without a GPU) that it runs on the host, unless
// TANDEM_QUIET is set; with `quiet` a default Context with ContextOptions::quiet, which does not.
#include <cstdio>
#include <string_view>

#include <tandem/tandem.hpp>

int second_unit();

int main(int argc, char **argv) {
  tandem::Context ctx({.devices = "host"});
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "default") tandem::Context fallback;
  if (mode == "quiet") tandem::Context fallback({.quiet = true});
  std::fprintf(stderr, "ran %d\n", second_unit()); // on stderr too, after any notice
}
