// SPDX-License-Identifier: Apache-2.0
// TANDEM_INLINE, TANDEM_INLINE_DEFINITIONS: how a function that is not a template, and that
// tandem::compiled holds, is declared and defined. In a header-only program it is inline and
// defined in its header. In a program linked with tandem::compiled (TANDEM_COMPILED) its header
// only declares it, and src/compiled.cpp (TANDEM_COMPILING) defines it once for the whole program.
// Only code that is the same for every backend is held there: code that runs an operation
// dispatches by the backends its translation unit was compiled with (backend/run.hpp).
#pragma once

#if defined(TANDEM_COMPILING)
#define TANDEM_INLINE
#define TANDEM_INLINE_DEFINITIONS 1
#elif defined(TANDEM_COMPILED)
#define TANDEM_INLINE
#define TANDEM_INLINE_DEFINITIONS 0
#else
#define TANDEM_INLINE inline
#define TANDEM_INLINE_DEFINITIONS 1
#endif
