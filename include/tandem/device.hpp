// SPDX-License-Identifier: Apache-2.0
// Device<N>: a logical device. Context maps it to a GPU or to a host worker at run time.
#pragma once

#include <cstddef>
#include <type_traits>

namespace tandem {

template <std::size_t N> struct Device { static constexpr std::size_t index = N; };

template <class T> struct is_device : std::false_type {};
template <std::size_t N> struct is_device<Device<N>> : std::true_type {};
template <class T> inline constexpr bool is_device_v = is_device<T>::value;

namespace detail {
// The index of D, or 0 when D is not a Device: lets Stage report its own static_assert instead
// of a cascade of "no member named index" errors.
template <class D> inline constexpr std::size_t device_index_v = 0;
template <std::size_t N> inline constexpr std::size_t device_index_v<Device<N>> = N;
} // namespace detail

} // namespace tandem
