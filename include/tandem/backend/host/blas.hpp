// SPDX-License-Identifier: Apache-2.0
// host::use_blas_threads: where the host's products run on OpenBLAS (TANDEM_HOST_BLAS), each call
// runs on the calling worker alone.
#pragma once

#include <cstdlib>
#include <mutex>

#ifdef TANDEM_HOST_BLAS
#include <dlfcn.h>
#endif

namespace tandem::backend::host {

// Each logical device is a worker thread of its own, and stages run at once: an OpenBLAS that
// also started a thread per core inside every product would put several threads on each core,
// which spin-wait for each other. So OpenBLAS runs each product on its caller, once, for the
// process, unless OPENBLAS_NUM_THREADS says otherwise. Found by name at run time: a BLAS other
// than OpenBLAS has no such function and is left alone.
inline void use_blas_threads() {
#ifdef TANDEM_HOST_BLAS
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("OPENBLAS_NUM_THREADS")) return;
    using Set = void (*)(int);
    if (auto set = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
  });
#endif
}

} // namespace tandem::backend::host
