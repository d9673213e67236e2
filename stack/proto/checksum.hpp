// SPDX-License-Identifier: MIT
// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Vocabulary, used by every header in proto/:
//  - a *sum* is the 16-bit ones'-complement sum of big-endian 16-bit words,
//    already folded (0 ... 0xffff), returned in a uint32_t so that sums can be
//    added before folding. It is not complemented.
//  - a *checksum* is the field value: ~sum, 16 bits, host byte order (store it
//    with store_be16).
// A block whose checksum field is correct sums to 0xffff (RFC 1071 "the
// result is all 1 bits"); that is what verify means here.
//
// Scatter-gather: sum each segment with csum_partial and combine with
// csum_block_add, passing the segment's byte offset in the message, since a
// segment that starts at an odd offset has its bytes in the other halves of
// the 16-bit words (RFC 1071 2(B): byte order independence).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zc::proto {

// Ones'-complement sum of `len` bytes at `data` (treated as starting at an
// even offset; an odd trailing byte is padded with zero), added to `sum`.
// Returns a folded sum. Reads exactly `len` bytes.
uint32_t csum_partial(const void* data, size_t len, uint32_t sum = 0) noexcept;

// Ones'-complement addition of two sums.
inline constexpr uint32_t csum_add(uint32_t a, uint32_t b) noexcept {
    uint32_t s = a + b;
    s = (s & 0xffff) + (s >> 16);
    return (s & 0xffff) + (s >> 16);
}

// Adds `block` (a csum_partial of bytes that sit at byte `offset` of the
// message) to `sum`: a block at an odd offset is byte-swapped first.
inline constexpr uint32_t csum_block_add(uint32_t sum, uint32_t block, size_t offset) noexcept {
    if (offset & 1) block = ((block & 0xff) << 8) | ((block >> 8) & 0xff);
    return csum_add(sum, block);
}

// The checksum field value for a sum.
inline constexpr uint16_t csum_finish(uint32_t sum) noexcept { return uint16_t(~csum_add(sum, 0)); }

// RFC 1071 checksum of one contiguous block (field zeroed by the caller).
inline uint16_t internet_checksum(const void* data, size_t len) noexcept {
    return csum_finish(csum_partial(data, len));
}

// True when a block that contains its own checksum field is intact.
inline bool csum_verify(const void* data, size_t len) noexcept {
    return csum_partial(data, len) == 0xffff;
}

// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the checksum field after one
// 16-bit word of the covered data changed from `old_word` to `new_word`.
// Unlike eqn. 2 it never produces the -0 (0xffff -> 0x0000) anomaly.
inline constexpr uint16_t csum_replace16(uint16_t check, uint16_t old_word, uint16_t new_word) noexcept {
    uint32_t s = csum_add(uint16_t(~check), uint16_t(~old_word));
    return uint16_t(~csum_add(s, new_word));
}
// The same for an aligned 32-bit field (an IPv4 address).
inline constexpr uint16_t csum_replace32(uint16_t check, uint32_t old_word, uint32_t new_word) noexcept {
    check = csum_replace16(check, uint16_t(old_word >> 16), uint16_t(new_word >> 16));
    return csum_replace16(check, uint16_t(old_word), uint16_t(new_word));
}

} // namespace zc::proto
