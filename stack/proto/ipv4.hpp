// SPDX-License-Identifier: MIT
// IPv4 (RFC 791) header parsing with every bounds check, and building.
//
// Parse rules, in order; the first that fails is the error:
//   too_short      fewer than 20 bytes
//   bad_version    version != 4
//   bad_ihl        IHL < 5, or IHL*4 beyond the buffer
//   bad_total_len  total length < IHL*4, or beyond the buffer (a truncated
//                  datagram); bytes after total length are link padding and
//                  are ignored
//   bad_csum       header checksum wrong (always verified: netif's checksum
//                  flags cover L4 only)
//   fragment       MF set or fragment offset != 0. zcnet does not reassemble
//                  (reassembly is memory a peer could pin, and zero-copy
//                  payloads cannot span buffers it does not own); senders
//                  must do PMTU discovery or send within the MTU. The caller
//                  counts these so that the refusal is visible.
// Options (IHL > 5) are skipped, not interpreted: they are covered by the
// checksum and by the bounds above, and the payload starts after them.
// Source routing, record route etc. are therefore never acted upon.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "proto/bytes.hpp"

namespace zc::proto {

// An IPv4 address, held in host byte order so that masks and comparisons
// read naturally; load/store convert at the packet boundary.
struct ipv4_addr {
    uint32_t v = 0;

    static constexpr ipv4_addr of(uint8_t a, uint8_t b, uint8_t c, uint8_t d) noexcept {
        return {uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d};
    }
    static constexpr ipv4_addr load(const uint8_t* p) noexcept { return {load_be32(p)}; }
    constexpr void store(uint8_t* p) const noexcept { store_be32(p, v); }

    constexpr bool is_zero() const noexcept { return v == 0; }
    constexpr bool is_limited_broadcast() const noexcept { return v == 0xffffffffu; }
    constexpr bool is_multicast() const noexcept { return (v >> 28) == 0xe; }  // 224.0.0.0/4
    constexpr bool is_loopback() const noexcept { return (v >> 24) == 127; }
    constexpr bool operator==(const ipv4_addr&) const noexcept = default;
};

// Dotted quad. For configuration, not packets.
bool parse_ipv4_addr(std::string_view s, ipv4_addr& out) noexcept;
void format_ipv4_addr(ipv4_addr a, char (&out)[16]) noexcept;

namespace ip_proto {
inline constexpr uint8_t icmp = 1;
inline constexpr uint8_t tcp = 6;
inline constexpr uint8_t udp = 17;
} // namespace ip_proto

inline constexpr size_t ipv4_min_hdr_len = 20;
inline constexpr size_t ipv4_max_hdr_len = 60;
inline constexpr uint8_t ipv4_default_ttl = 64;  // Linux's ip_default_ttl

enum class ipv4_error : uint8_t {
    none = 0,
    too_short,
    bad_version,
    bad_ihl,
    bad_total_len,
    bad_csum,
    fragment,
};

struct ipv4_view {
    ipv4_addr src, dst;
    uint16_t hdr_len = 0;    // IHL*4, 20..60: the payload starts here
    uint16_t total_len = 0;  // header + payload, <= the buffer
    uint16_t id = 0;
    uint8_t proto = 0;
    uint8_t ttl = 0;
    uint8_t tos = 0;
    bool df = false;         // don't fragment

    uint16_t payload_len() const noexcept { return uint16_t(total_len - hdr_len); }
};

// Parses and validates the IPv4 header at pkt[0..). On success, the payload
// is pkt[hdr_len .. total_len). Reads only within `pkt`.
ipv4_error parse_ipv4(std::span<const uint8_t> pkt, ipv4_view& out) noexcept;

struct ipv4_params {
    ipv4_addr src, dst;
    uint8_t proto = 0;
    uint8_t ttl = ipv4_default_ttl;
    uint8_t tos = 0;
    bool df = true;          // zcnet never fragments, so say so
    uint16_t id = 0;
    uint16_t payload_len = 0;
};

// Writes a 20-byte header (no options) with its checksum at out[0..20).
// Returns 20, or 0 when `out` is too short or 20 + payload_len > 65535.
size_t write_ipv4(std::span<uint8_t> out, const ipv4_params& p) noexcept;

// RFC 768/793 pseudo-header sum (src, dst, zero, protocol, L4 length) as a
// folded, uncomplemented sum (see checksum.hpp).
uint32_t pseudo_header_sum(ipv4_addr src, ipv4_addr dst, uint8_t proto, uint16_t l4_len) noexcept;

} // namespace zc::proto
