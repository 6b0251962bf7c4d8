// SPDX-License-Identifier: Apache-2.0
// notice.cpp's second translation unit: the notice still comes once.
#include <tandem/tandem.hpp>

int second_unit() { return static_cast<int>(tandem::Device<1>::index); }
