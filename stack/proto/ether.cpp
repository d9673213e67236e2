// SPDX-License-Identifier: MIT
#include "proto/ether.hpp"

#include <cstdio>

#include "proto/bytes.hpp"

namespace zc::proto {

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
