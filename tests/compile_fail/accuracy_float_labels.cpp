// expect: TANDEM_LABEL_TYPE: metrics::accuracy takes int32 class indices \(int64 accepted\)
// SPDX-License-Identifier: Apache-2.0
// Float labels for metrics::accuracy: one error that says it takes class indices, as train_step's.
// The twin passes int64 labels, PyTorch's habit.
#include <cstdint>
#include <vector>

#include <tandem/metrics.hpp>

int main() {
  const std::vector<float> outputs{0.1f, 0.9f, 0.8f, 0.2f};
#ifdef TANDEM_COMPILE_FAIL
  const std::vector<float> labels{1, 0};
#else
  const std::vector<std::int64_t> labels{1, 0};
#endif
  return tandem::metrics::accuracy(outputs, labels) == 1.0 ? 0 : 1;
}
