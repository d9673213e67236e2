// SPDX-License-Identifier: MIT
// ICMP echo (RFC 792), so that a guest answers ping.
//
// Answering: echo request -> echo reply. Asking: an echo request builder and
// a parser that also accepts replies, so a guest can ping (proto does not
// track outstanding pings; the caller matches id/seq). Other types are
// parsed far enough to be ignored and counted; zcnet does not send errors
// (port unreachable needs a socket table, which is the caller's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "proto/offload.hpp"

namespace zc::proto {

namespace icmp_type {
inline constexpr uint8_t echo_reply = 0;
inline constexpr uint8_t dest_unreachable = 3;
inline constexpr uint8_t echo_request = 8;
} // namespace icmp_type

// Type, code, checksum, identifier, sequence number.
inline constexpr size_t icmp_echo_hdr_len = 8;

enum class icmp_error : uint8_t {
    none = 0,
    too_short,      // fewer than 8 bytes
    bad_csum,       // checksum over the whole message wrong (unless rx_csum trusts it)
    not_echo_request, // a well-formed message of another type/code: ignore it
};

struct icmp_echo_view {
    uint16_t id = 0, seq = 0;
    uint16_t csum = 0;          // the field as received
    bool csum_checked = false;  // verified here
    uint8_t type = 0;           // icmp_type::echo_request or ::echo_reply
};

// Parses the ICMP message `l4` (the whole IP payload) as an echo request.
// The checksum is checked before the type, so a corrupt message of any
// type reports bad_csum. Reads only within `l4`.
icmp_error parse_icmp_echo_request(std::span<const uint8_t> l4, rx_csum csum, icmp_echo_view& out) noexcept;

// Parses `l4` as an echo request or an echo reply (type 8 or 0, code 0);
// out.type says which. Same checks, in the same order, as above.
icmp_error parse_icmp_echo(std::span<const uint8_t> l4, rx_csum csum, icmp_echo_view& out) noexcept;

// Writes an echo request (8-byte header + `data`) with its checksum into
// `out`. Returns 8 + data.size(), or 0 when `out` is too short.
size_t write_icmp_echo_request(std::span<uint8_t> out, uint16_t id, uint16_t seq,
                               std::span<const uint8_t> data) noexcept;

// Turns a parsed echo request in `msg` into the reply in place: type 8 -> 0,
// checksum updated incrementally (RFC 1624) when `req.csum_checked`, or
// recomputed over the message when it was not (a trusted but unverified
// field, e.g. rx_csum::partial, may not be a real checksum).
void icmp_echo_reply_inplace(std::span<uint8_t> msg, const icmp_echo_view& req) noexcept;

// Writes the reply to the echo request `req_msg` into `out` (identifier,
// sequence and data copied). Returns req_msg.size(), or 0 when `out` is too
// short. `out` and `req_msg` must not overlap.
size_t write_icmp_echo_reply(std::span<uint8_t> out, std::span<const uint8_t> req_msg,
                             const icmp_echo_view& req) noexcept;

} // namespace zc::proto
