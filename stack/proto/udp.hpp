// SPDX-License-Identifier: MIT
// UDP (RFC 768) over IPv4: parsing with the pseudo-header checksum, building.
//
// Receive rules, in order:
//   too_short  fewer than 8 bytes of IP payload
//   bad_len    UDP length < 8 or > the IP payload (bytes after the UDP length
//              inside the IP payload are ignored, as Linux trims them)
//   bad_csum   checksum wrong. Not checked when the field is 0 ("no
//              checksum", legal over IPv4) or when the link says rx_csum::
//              validated or ::partial (offload.hpp).
//
// Transmit: the checksum covers the payload, which zero copy wants to leave
// where the application wrote it. So the header writer takes the payload's
// *sum* (csum_partial over the payload, or over each scatter-gather segment
// combined with csum_block_add) instead of the payload, or no sum at all when
// the checksum is left to offload or omitted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "proto/ipv4.hpp"
#include "proto/offload.hpp"

namespace zc::proto {

inline constexpr size_t udp_hdr_len = 8;
// Where the checksum field sits in the UDP header (for offload: csum_offset).
inline constexpr size_t udp_csum_offset = 6;

enum class udp_error : uint8_t {
    none = 0,
    too_short,
    bad_len,
    bad_csum,
};

struct udp_view {
    uint16_t src_port = 0, dst_port = 0;
    uint16_t len = 0;          // UDP length field: header + payload
    uint16_t csum = 0;         // the field as received
    bool csum_checked = false; // verified here (false: absent, or trusted per rx_csum)

    uint16_t payload_len() const noexcept { return uint16_t(len - udp_hdr_len); }
};

// Parses the UDP datagram that is the IP payload `l4` of a datagram from
// `src` to `dst`. On success the payload is l4[8 .. len). Reads only within `l4`.
udp_error parse_udp(std::span<const uint8_t> l4, ipv4_addr src, ipv4_addr dst, rx_csum csum,
                    udp_view& out) noexcept;

struct udp_params {
    ipv4_addr src, dst;           // for the pseudo-header
    uint16_t src_port = 0, dst_port = 0;
    uint16_t payload_len = 0;
};

// Writes the 8-byte header at out[0..8). The checksum, per `mode`:
//   full:    ~(pseudo-header + header + payload_sum); 0 is sent as 0xffff
//   offload: pseudo-header sum only (payload_sum ignored)
//   none:    0 (payload_sum ignored)
// Returns 8, or 0 when `out` is too short or 8 + payload_len > 65535.
size_t write_udp(std::span<uint8_t> out, const udp_params& p, uint32_t payload_sum, tx_csum mode) noexcept;

} // namespace zc::proto
