// SPDX-License-Identifier: Apache-2.0
// Test helper: sets an environment variable for one scope and restores what was there.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace tandem::test {

// `value` null unsets the variable. Tests of an option that a variable overrides (TANDEM_DEVICES,
// TANDEM_HOST_EXECUTION) clear it first: ctest also runs the suite with such variables set.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    if (const char *v = std::getenv(name)) old_ = v;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;
  ~ScopedEnv() {
    if (old_) setenv(name_.c_str(), old_->c_str(), 1);
    else unsetenv(name_.c_str());
  }

private:
  std::string name_;
  std::optional<std::string> old_;
};

} // namespace tandem::test
