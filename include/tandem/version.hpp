// SPDX-License-Identifier: Apache-2.0
// tandem's version, as CMake's project() states it (CMakeLists.txt checks that the two agree).
#pragma once

#include <string_view>

#define TANDEM_VERSION_MAJOR 0
#define TANDEM_VERSION_MINOR 1
#define TANDEM_VERSION_PATCH 0

namespace tandem {
inline constexpr std::string_view version = "0.1.0";
} // namespace tandem
