// expect: deleted
// SPDX-License-Identifier: Apache-2.0
// The order of a temporary epoch points into it, which is gone before the loop's first step: it
// does not compile. The twin keeps the epoch in a variable.
#include <cstddef>
#include <vector>

#include <tandem/data/batches.hpp>

int main() {
  const std::vector<float> x(8 * 4, 0.5f);
  const std::vector<int> y(8, 1);
  tandem::data::Batches batches(x, y, {.batch_size = 4, .shuffle = true});
  std::size_t sum = 0;
#ifdef TANDEM_COMPILE_FAIL
  for (const std::size_t r : batches.epoch(0).order()) sum += r;
#else
  const auto epoch = batches.epoch(0);
  for (const std::size_t r : epoch.order()) sum += r;
#endif
  return sum == 28 ? 0 : 1;
}
