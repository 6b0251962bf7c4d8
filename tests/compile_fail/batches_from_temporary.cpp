// expect: TANDEM_BATCHES_TEMPORARY: data::Batches keeps views of x and y
// SPDX-License-Identifier: Apache-2.0
// Batches made from a vector a function returns would read freed memory: it does not compile. The
// twin passes named vectors, which outlive it.
#include <cstdint>
#include <vector>

#include <tandem/data/batches.hpp>

std::vector<float> load_x() { return std::vector<float>(8 * 4, 0.5f); }

int main() {
  const std::vector<std::int32_t> y(8, 1);
#ifdef TANDEM_COMPILE_FAIL
  tandem::data::Batches batches(load_x(), y, {.batch_size = 4});
#else
  const auto x = load_x();
  tandem::data::Batches batches(x, y, {.batch_size = 4});
#endif
  return batches.size() == 2 ? 0 : 1;
}
