// SPDX-License-Identifier: MIT
// Network byte order, explicitly. Packets are byte arrays in which a header
// may start at any offset (after a VLAN tag, IP options, a netif headroom),
// so headers are never cast to structs: no alignment or strict-aliasing
// traps, and every field access names its width and its byte order. GCC and
// Clang turn these into a single load plus bswap.
#pragma once

#include <cstdint>

namespace zc::proto {

inline constexpr uint16_t load_be16(const uint8_t* p) noexcept {
    return uint16_t(uint16_t(p[0]) << 8 | p[1]);
}
inline constexpr uint32_t load_be32(const uint8_t* p) noexcept {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline constexpr void store_be16(uint8_t* p, uint16_t v) noexcept {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
inline constexpr void store_be32(uint8_t* p, uint32_t v) noexcept {
    p[0] = uint8_t(v >> 24);
    p[1] = uint8_t(v >> 16);
    p[2] = uint8_t(v >> 8);
    p[3] = uint8_t(v);
}

} // namespace zc::proto
