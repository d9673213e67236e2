// SPDX-License-Identifier: MIT
#include "proto/ipv4.hpp"

#include <cstdio>

#include "proto/checksum.hpp"

namespace zc::proto {

bool parse_ipv4_addr(std::string_view s, ipv4_addr& out) noexcept {
    uint32_t v = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part) {
            if (i >= s.size() || s[i] != '.') return false;
            i++;
        }
        size_t start = i;
        uint32_t n = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 3) n = n * 10 + uint32_t(s[i++] - '0');
        if (i == start || n > 255) return false;
        v = v << 8 | n;
    }
    if (i != s.size()) return false;
    out = {v};
    return true;
}

void format_ipv4_addr(ipv4_addr a, char (&out)[16]) noexcept {
    std::snprintf(out, sizeof out, "%u.%u.%u.%u", a.v >> 24, (a.v >> 16) & 0xff, (a.v >> 8) & 0xff, a.v & 0xff);
}

ipv4_error parse_ipv4(std::span<const uint8_t> pkt, ipv4_view& out) noexcept {
    const size_t len = pkt.size();
    const uint8_t* p = pkt.data();
    if (len < ipv4_min_hdr_len) return ipv4_error::too_short;
    if ((p[0] >> 4) != 4) return ipv4_error::bad_version;
    const size_t hlen = size_t(p[0] & 0x0f) * 4;
    if (hlen < ipv4_min_hdr_len || hlen > len) return ipv4_error::bad_ihl;
    const size_t total = load_be16(p + 2);
    if (total < hlen || total > len) return ipv4_error::bad_total_len;
    if (!csum_verify(p, hlen)) return ipv4_error::bad_csum;
    const uint16_t frag = load_be16(p + 6);
    // Bit 15 is reserved (must be zero, RFC 791); it is not a fragment
    // marker, so it is ignored as Linux does.
    if (frag & 0x3fff) return ipv4_error::fragment;  // MF (0x2000) or offset
    out.hdr_len = uint16_t(hlen);
    out.total_len = uint16_t(total);
    out.tos = p[1];
    out.id = load_be16(p + 4);
    out.df = frag & 0x4000;
    out.ttl = p[8];
    out.proto = p[9];
    out.src = ipv4_addr::load(p + 12);
    out.dst = ipv4_addr::load(p + 16);
    return ipv4_error::none;
}

size_t write_ipv4(std::span<uint8_t> out, const ipv4_params& a) noexcept {
    if (out.size() < ipv4_min_hdr_len || size_t(a.payload_len) + ipv4_min_hdr_len > 0xffff) return 0;
    uint8_t* p = out.data();
    p[0] = 0x45;
    p[1] = a.tos;
    store_be16(p + 2, uint16_t(ipv4_min_hdr_len + a.payload_len));
    store_be16(p + 4, a.id);
    store_be16(p + 6, a.df ? 0x4000 : 0);
    p[8] = a.ttl;
    p[9] = a.proto;
    store_be16(p + 10, 0);
    a.src.store(p + 12);
    a.dst.store(p + 16);
    store_be16(p + 10, internet_checksum(p, ipv4_min_hdr_len));
    return ipv4_min_hdr_len;
}

uint32_t pseudo_header_sum(ipv4_addr src, ipv4_addr dst, uint8_t proto, uint16_t l4_len) noexcept {
    uint32_t s = csum_add(src.v >> 16, src.v & 0xffff);
    s = csum_add(s, dst.v >> 16);
    s = csum_add(s, dst.v & 0xffff);
    s = csum_add(s, proto);
    return csum_add(s, l4_len);
}

} // namespace zc::proto
