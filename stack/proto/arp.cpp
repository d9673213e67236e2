// SPDX-License-Identifier: MIT
#include "proto/arp.hpp"

namespace zc::proto {

arp_error parse_arp(std::span<const uint8_t> pkt, arp_view& out) noexcept {
    if (pkt.size() < arp_len) return arp_error::too_short;
    const uint8_t* p = pkt.data();
    if (load_be16(p) != 1 || load_be16(p + 2) != ethertype::ipv4 || p[4] != 6 || p[5] != 4)
        return arp_error::unsupported;
    out.op = load_be16(p + 6);
    if (out.op != arp_op::request && out.op != arp_op::reply) return arp_error::bad_op;
    out.sha = mac_addr::load(p + 8);
    out.spa = ipv4_addr::load(p + 14);
    out.tha = mac_addr::load(p + 18);
    out.tpa = ipv4_addr::load(p + 24);
    if (out.sha.is_multicast() || out.sha.is_zero()) return arp_error::bad_sender;
    return arp_error::none;
}

size_t write_arp(std::span<uint8_t> out, uint16_t op, const mac_addr& sha, ipv4_addr spa, const mac_addr& tha,
                 ipv4_addr tpa) noexcept {
    if (out.size() < arp_len) return 0;
    uint8_t* p = out.data();
    store_be16(p, 1);  // htype Ethernet
    store_be16(p + 2, ethertype::ipv4);
    p[4] = 6;
    p[5] = 4;
    store_be16(p + 6, op);
    sha.store(p + 8);
    spa.store(p + 14);
    tha.store(p + 18);
    tpa.store(p + 24);
    return arp_len;
}

} // namespace zc::proto
