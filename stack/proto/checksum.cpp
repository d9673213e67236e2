// SPDX-License-Identifier: MIT
#include "proto/checksum.hpp"

#include <bit>
#include <cstring>

namespace zc::proto {

uint32_t csum_partial(const void* data, size_t len, uint32_t sum) noexcept {
    // The ones'-complement sum does not depend on byte order (RFC 1071
    // 2(B)): add native-order words and swap the folded result once. Each
    // 64-bit load is added as two 32-bit halves into a 64-bit accumulator,
    // which cannot overflow below 2^34 bytes, so no carry is tracked per word;
    // 2^32 = 1 (mod 0xffff), so folding 32-bit lanes equals adding 16-bit
    // words. Loads go through memcpy: `data` has any alignment.
    const auto* p = static_cast<const uint8_t*>(data);
    uint64_t a0 = 0, a1 = 0;
    while (len >= 16) {
        uint64_t w0, w1;
        std::memcpy(&w0, p, 8);
        std::memcpy(&w1, p + 8, 8);
        a0 += (w0 & 0xffffffffu) + (w0 >> 32);
        a1 += (w1 & 0xffffffffu) + (w1 >> 32);
        p += 16;
        len -= 16;
    }
    uint64_t acc = a0 + a1;
    while (len >= 4) {
        uint32_t w;
        std::memcpy(&w, p, 4);
        acc += w;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        acc += w;
        p += 2;
        len -= 2;
    }
    if (len) {
        // A trailing byte is the high half of a big-endian word padded with 0.
        acc += std::endian::native == std::endian::little ? uint64_t(p[0]) : uint64_t(p[0]) << 8;
    }
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    uint32_t s = csum_add(uint32_t(acc & 0xffff), uint32_t(acc >> 16));
    if constexpr (std::endian::native == std::endian::little) s = ((s & 0xff) << 8) | (s >> 8);
    return csum_add(sum, s);
}

} // namespace zc::proto
