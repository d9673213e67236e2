// SPDX-License-Identifier: MIT
// ARP packets (RFC 826), for Ethernet and IPv4 only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "proto/ether.hpp"
#include "proto/ipv4.hpp"

namespace zc::proto {

// htype(2) ptype(2) hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4).
inline constexpr size_t arp_len = 28;

namespace arp_op {
inline constexpr uint16_t request = 1;
inline constexpr uint16_t reply = 2;
} // namespace arp_op

enum class arp_error : uint8_t {
    none = 0,
    too_short,    // fewer than 28 bytes (trailing padding is fine)
    unsupported,  // not htype 1 (Ethernet) / ptype 0x0800 / hlen 6 / plen 4
    bad_op,       // neither request nor reply (RARP and friends)
    bad_sender,   // sender hardware address multicast, broadcast or zero: never learn it
};

struct arp_view {
    uint16_t op = 0;
    mac_addr sha, tha;   // sender / target hardware address
    ipv4_addr spa, tpa;  // sender / target protocol address
};

// Parses an ARP packet (the Ethernet payload). Reads only within `pkt`.
arp_error parse_arp(std::span<const uint8_t> pkt, arp_view& out) noexcept;

// Writes a 28-byte ARP packet. Returns 28, or 0 when `out` is too short.
size_t write_arp(std::span<uint8_t> out, uint16_t op, const mac_addr& sha, ipv4_addr spa,
                 const mac_addr& tha, ipv4_addr tpa) noexcept;

} // namespace zc::proto
