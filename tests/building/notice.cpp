// SPDX-License-Identifier: Apache-2.0
// A program that includes tandem in two translation units (this and notice_second.cpp): built at
// -O0 it says once that it was compiled without optimisation; at -O2, or with
// TANDEM_NO_OPTIMIZATION_NOTICE, it says nothing.
#include <cstdio>

#include <tandem/tandem.hpp>

int second_unit();

int main() {
  tandem::Context ctx({.devices = "host"});
  std::fprintf(stderr, "ran %d\n", second_unit()); // on stderr too, after any notice
}
