// SPDX-License-Identifier: Apache-2.0
// tandem::Error: the one exception type the library throws.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tandem {

// Every run-time failure (bad input, CUDA, cuBLAS, allocation) is reported as an Error whose
// message says what went wrong, where, and with which value. Input is validated before any
// state changes, so a caught Error leaves parameters and optimizer state as they were.
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// Builds the message from streamable parts so call sites read like a sentence.
template <class... Parts> [[noreturn]] void fail(const Parts &...parts) {
  std::ostringstream os;
  os << "tandem: ";
  (os << ... << parts);
  throw Error(os.str());
}

} // namespace detail
} // namespace tandem
