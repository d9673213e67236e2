// SPDX-License-Identifier: MIT
// Ethernet II framing: MAC addresses, the 14-byte header, one 802.1Q tag.
//
// VLANs: parse_eth decodes at most one 802.1Q tag (TPID 0x8100) and reports
// it, so a caller can see and count tagged frames. 802.1ad/QinQ (TPID 0x88a8,
// or a second 0x8100) is not decoded: the outer TPID is left as `type`, which
// no upper layer claims. The host (host.hpp) is an untagged endpoint, as a
// netif vif is an untagged port: it drops tagged frames and counts them
// (`vlan_tagged`); tagging belongs to the switch.
//
// Frames are given without the FCS (netif and AF_XDP never carry it) and may
// be shorter than Ethernet's 60-byte minimum (netif does not pad); trailing
// padding after an IP datagram is ignored by the IP layer, not here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "common/mac.hpp"

namespace zc::proto {

using zc::mac_addr;
using zc::format_mac;
using zc::parse_mac;

namespace ethertype {
inline constexpr uint16_t ipv4 = 0x0800;
inline constexpr uint16_t arp = 0x0806;
inline constexpr uint16_t vlan = 0x8100;  // 802.1Q C-tag
inline constexpr uint16_t qinq = 0x88a8;  // 802.1ad S-tag (not decoded)
inline constexpr uint16_t ipv6 = 0x86dd;
// Values below this are 802.3 length fields (LLC frames), not types.
inline constexpr uint16_t min_type = 0x0600;
} // namespace ethertype

inline constexpr size_t eth_hdr_len = 14;
inline constexpr size_t vlan_tag_len = 4;

enum class eth_error : uint8_t {
    none = 0,
    too_short,       // fewer than 14 bytes
    vlan_too_short,  // 802.1Q TPID but the tag is cut off
};

struct eth_view {
    mac_addr dst, src;
    uint16_t type = 0;      // the ethertype after the tag, if any
    uint16_t hdr_len = 0;   // 14, or 18 with an 802.1Q tag: where L3 starts
    uint16_t vlan_tci = 0;  // PCP/DEI/VID when has_vlan
    bool has_vlan = false;
};

// Parses the Ethernet header of `frame`. Reads only within `frame`.
eth_error parse_eth(std::span<const uint8_t> frame, eth_view& out) noexcept;

// Writes an untagged 14-byte header at out[0..14). Returns 14, or 0 when
// `out` is shorter than that (nothing written).
size_t write_eth(std::span<uint8_t> out, const mac_addr& dst, const mac_addr& src, uint16_t type) noexcept;

} // namespace zc::proto
