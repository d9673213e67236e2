// SPDX-License-Identifier: MIT
#include "proto/ether.hpp"

#include <cstdio>

#include "proto/bytes.hpp"

namespace zc::proto {

namespace {
int hexval(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
} // namespace

bool parse_mac(std::string_view s, mac_addr& out) noexcept {
    if (s.size() != 17) return false;
    mac_addr m;
    for (size_t i = 0; i < 6; i++) {
        int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);
        if (hi < 0 || lo < 0) return false;
        if (i < 5 && s[i * 3 + 2] != ':' && s[i * 3 + 2] != '-') return false;
        m.b[i] = uint8_t(hi << 4 | lo);
    }
    out = m;
    return true;
}

void format_mac(const mac_addr& m, char (&out)[18]) noexcept {
    std::snprintf(out, sizeof out, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3], m.b[4],
                  m.b[5]);
}

eth_error parse_eth(std::span<const uint8_t> f, eth_view& out) noexcept {
    if (f.size() < eth_hdr_len) return eth_error::too_short;
    const uint8_t* p = f.data();
    out.dst = mac_addr::load(p);
    out.src = mac_addr::load(p + 6);
    out.type = load_be16(p + 12);
    out.hdr_len = eth_hdr_len;
    out.has_vlan = false;
    out.vlan_tci = 0;
    if (out.type == ethertype::vlan) {
        if (f.size() < eth_hdr_len + vlan_tag_len) return eth_error::vlan_too_short;
        out.has_vlan = true;
        out.vlan_tci = load_be16(p + 14);
        out.type = load_be16(p + 16);
        out.hdr_len = eth_hdr_len + vlan_tag_len;
    }
    return eth_error::none;
}

size_t write_eth(std::span<uint8_t> out, const mac_addr& dst, const mac_addr& src, uint16_t type) noexcept {
    if (out.size() < eth_hdr_len) return 0;
    dst.store(out.data());
    src.store(out.data() + 6);
    store_be16(out.data() + 12, type);
    return eth_hdr_len;
}

} // namespace zc::proto
