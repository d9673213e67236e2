// SPDX-License-Identifier: MIT
// Ethernet + IPv4/IPv6 + TCP/UDP frames for tests, and an independent
// check of their L4 checksum (RFC 1071 over the pseudo-header).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "proto/checksum.hpp"

namespace zc::test {

// An Ethernet + IPv4/IPv6 + UDP/TCP frame with a deliberately wrong L4 checksum field.
inline std::vector<uint8_t> l4_frame(const uint8_t* dst, const uint8_t* src, bool v6, uint8_t proto, uint32_t payload) {
    const uint32_t l3 = v6 ? 40 : 20, l4h = proto == 6 ? 20 : 8;
    std::vector<uint8_t> f(14 + l3 + l4h + payload);
    std::memcpy(f.data(), dst, 6);
    std::memcpy(f.data() + 6, src, 6);
    f[12] = v6 ? 0x86 : 0x08;
    f[13] = v6 ? 0xdd : 0x00;
    uint8_t* ip = f.data() + 14;
    const uint32_t l4_len = l4h + payload;
    if (v6) {
        ip[0] = 0x60;
        ip[4] = uint8_t(l4_len >> 8);
        ip[5] = uint8_t(l4_len);
        ip[6] = proto;
        ip[7] = 64;
        for (int i = 0; i < 32; ++i) ip[8 + i] = uint8_t(i * 7 + 1);
    } else {
        ip[0] = 0x45;
        const uint32_t tot = 20 + l4_len;
        ip[2] = uint8_t(tot >> 8);
        ip[3] = uint8_t(tot);
        ip[8] = 64;
        ip[9] = proto;
        const uint8_t a[8] = {10, 0, 0, 1, 10, 0, 0, 100};
        std::memcpy(ip + 12, a, 8);
    }
    uint8_t* l4 = ip + l3;
    l4[0] = 0x30;
    l4[1] = 0x39;
    l4[2] = 0x00;
    l4[3] = 0x07;
    if (proto == 17) {
        l4[4] = uint8_t(l4_len >> 8);
        l4[5] = uint8_t(l4_len);
        l4[6] = 0xde; // garbage: a checksum-blank frame's field is not the checksum
        l4[7] = 0xad;
    } else {
        l4[12] = 0x50;
        l4[16] = 0xbe;
        l4[17] = 0xef;
    }
    for (uint32_t i = 0; i < payload; ++i) l4[l4h + i] = uint8_t(i * 31 + 5);
    return f;
}

// RFC 1071 verification with the pseudo-header, written independently of
// complete_checksum (one's-complement sum over a built buffer).
inline bool l4_checksum_ok(const std::vector<uint8_t>& f) {
    const bool v6 = f[12] == 0x86;
    const uint8_t* ip = f.data() + 14;
    const uint32_t l3 = v6 ? 40 : 20;
    const uint8_t proto = v6 ? ip[6] : ip[9];
    const uint32_t l4_len = uint32_t(f.size()) - 14 - l3;
    std::vector<uint8_t> ph;
    if (v6) ph.insert(ph.end(), ip + 8, ip + 40);
    else ph.insert(ph.end(), ip + 12, ip + 20);
    const uint8_t tail[8] = {0, 0, uint8_t(l4_len >> 8), uint8_t(l4_len), 0, 0, 0, proto};
    ph.insert(ph.end(), tail, tail + 8);
    ph.insert(ph.end(), ip + l3, ip + l3 + l4_len);
    return proto::csum_verify(ph.data(), ph.size());
}

} // namespace zc::test
