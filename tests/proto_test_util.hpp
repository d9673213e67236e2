// SPDX-License-Identifier: MIT
// Helpers shared by the proto tests and the fuzz driver: a reference
// checksum written from RFC 1071's definition (deliberately naive, sharing
// no code with proto/checksum.cpp) and builders of valid frames.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include "proto/host.hpp"
#include "proto/icmp.hpp"

namespace zc::proto::testutil {

// RFC 1071 from first principles: 16-bit big-endian words, a wide sum,
// end-around carries folded at the end.
inline uint16_t ref_sum(const uint8_t* p, size_t len) {
    uint64_t s = 0;
    for (size_t i = 0; i + 1 < len; i += 2) s += uint64_t(p[i]) << 8 | p[i + 1];
    if (len & 1) s += uint64_t(p[len - 1]) << 8;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return uint16_t(s);
}
inline uint16_t ref_checksum(const uint8_t* p, size_t len) { return uint16_t(~ref_sum(p, len)); }

// UDP checksum over a pseudo-header built byte by byte.
inline uint16_t ref_udp_checksum(const uint8_t* ip_src4, const uint8_t* ip_dst4, const uint8_t* udp, size_t ulen) {
    std::vector<uint8_t> b;
    b.insert(b.end(), ip_src4, ip_src4 + 4);
    b.insert(b.end(), ip_dst4, ip_dst4 + 4);
    b.push_back(0);
    b.push_back(17);
    b.push_back(uint8_t(ulen >> 8));
    b.push_back(uint8_t(ulen));
    b.insert(b.end(), udp, udp + ulen);
    b[12 + 6] = b[12 + 7] = 0;  // checksum field of the UDP header
    uint16_t c = ref_checksum(b.data(), b.size());
    return c == 0 ? 0xffff : c;
}

inline const mac_addr mac_a{{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}};
inline const mac_addr mac_b{{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}};
inline const ipv4_addr ip_a = ipv4_addr::of(10, 0, 0, 1);
inline const ipv4_addr ip_b = ipv4_addr::of(10, 0, 0, 2);

inline host_config cfg(const mac_addr& m, ipv4_addr ip) {
    host_config c;
    c.mac = m;
    c.ip = ip;
    c.gateway = ipv4_addr::of(10, 0, 0, 254);
    return c;
}

// Fixes the IPv4 header checksum of the frame's IP header at offset 14.
inline void fix_ip_csum(std::vector<uint8_t>& f) {
    if (f.size() < 34) return;
    size_t ihl = size_t(f[14] & 0xf) * 4;
    if (ihl < 20 || 14 + ihl > f.size()) return;
    f[24] = f[25] = 0;
    uint16_t c = ref_checksum(&f[14], ihl);
    f[24] = uint8_t(c >> 8);
    f[25] = uint8_t(c);
}

// An Ethernet + IPv4 frame with `opts` bytes of options (multiple of 4)
// carrying `l4` as protocol `proto`; checksum fixed.
inline std::vector<uint8_t> ip_frame(const mac_addr& dst_mac, const mac_addr& src_mac, ipv4_addr src,
                                     ipv4_addr dst, uint8_t proto, const std::vector<uint8_t>& l4,
                                     size_t opts = 0) {
    std::vector<uint8_t> f(14 + 20 + opts + l4.size());
    dst_mac.store(&f[0]);
    src_mac.store(&f[6]);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t* ip = &f[14];
    ip[0] = uint8_t(0x40 | (20 + opts) / 4);
    size_t total = 20 + opts + l4.size();
    ip[2] = uint8_t(total >> 8);
    ip[3] = uint8_t(total);
    ip[4] = 0x12;
    ip[5] = 0x34;
    ip[6] = 0x40;  // DF
    ip[8] = 64;
    ip[9] = proto;
    src.store(ip + 12);
    dst.store(ip + 16);
    for (size_t i = 0; i < opts; i++) ip[20 + i] = 1;  // NOP options
    std::copy(l4.begin(), l4.end(), ip + 20 + opts);
    fix_ip_csum(f);
    return f;
}

inline std::vector<uint8_t> udp_l4(ipv4_addr src, ipv4_addr dst, uint16_t sport, uint16_t dport,
                                   const std::vector<uint8_t>& payload, bool with_csum = true) {
    std::vector<uint8_t> u(8 + payload.size());
    u[0] = uint8_t(sport >> 8);
    u[1] = uint8_t(sport);
    u[2] = uint8_t(dport >> 8);
    u[3] = uint8_t(dport);
    u[4] = uint8_t(u.size() >> 8);
    u[5] = uint8_t(u.size());
    std::copy(payload.begin(), payload.end(), u.begin() + 8);
    if (with_csum) {
        uint8_t s[4], d[4];
        src.store(s);
        dst.store(d);
        uint16_t c = ref_udp_checksum(s, d, u.data(), u.size());
        u[6] = uint8_t(c >> 8);
        u[7] = uint8_t(c);
    }
    return u;
}

inline std::vector<uint8_t> icmp_echo_l4(uint16_t id, uint16_t seq, const std::vector<uint8_t>& data,
                                         uint8_t type = 8) {
    std::vector<uint8_t> m(8 + data.size());
    m[0] = type;
    m[4] = uint8_t(id >> 8);
    m[5] = uint8_t(id);
    m[6] = uint8_t(seq >> 8);
    m[7] = uint8_t(seq);
    std::copy(data.begin(), data.end(), m.begin() + 8);
    uint16_t c = ref_checksum(m.data(), m.size());
    m[2] = uint8_t(c >> 8);
    m[3] = uint8_t(c);
    return m;
}

inline std::vector<uint8_t> arp_frame(uint16_t op, const mac_addr& eth_dst, const mac_addr& sha, ipv4_addr spa,
                                      const mac_addr& tha, ipv4_addr tpa) {
    std::vector<uint8_t> f(42);
    eth_dst.store(&f[0]);
    sha.store(&f[6]);
    f[12] = 0x08;
    f[13] = 0x06;
    const uint8_t hdr[] = {0, 1, 8, 0, 6, 4, uint8_t(op >> 8), uint8_t(op)};
    std::copy(hdr, hdr + 8, f.begin() + 14);
    sha.store(&f[22]);
    spa.store(&f[28]);
    tha.store(&f[32]);
    tpa.store(&f[38]);
    return f;
}

} // namespace zc::proto::testutil
