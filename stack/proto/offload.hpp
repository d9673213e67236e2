// SPDX-License-Identifier: MIT
// Checksum offload state, as a link reports it on receive and as the stack
// asks for it on transmit.
//
// The netif flags are the source on Xen. Careful: the RX and TX flag words
// put csum_blank and data_validated in *different* bits
// (NETRXF_data_validated = 1<<0, NETRXF_csum_blank = 1<<1, but
// NETTXF_csum_blank = 1<<0, NETTXF_data_validated = 1<<1), so a raw flag word
// must be converted by the function for the ring it came from; nothing in
// proto/ takes a raw flag word.
//
// The flags cover the L4 (UDP, ICMP) checksum only; the IPv4 header checksum
// is always verified in software, as Linux's ip_rcv does.
#pragma once

#include <cstdint>

namespace zc::proto {

// What is known about a received frame's L4 checksum.
enum class rx_csum : uint8_t {
    // Nothing: verify it (a frame from the wire, or a link without offload).
    verify = 0,
    // Someone checked it already (Linux CHECKSUM_UNNECESSARY): skip.
    validated = 1,
    // Never computed (Linux CHECKSUM_PARTIAL): the sender is on this host and
    // left it to offload; the field holds only the pseudo-header sum. The data
    // never crossed a wire, so there is nothing to verify.
    partial = 2,
};

// From a netif RX response's flags (a guest receiving from netback).
rx_csum rx_csum_from_netrxf(uint16_t netrxf_flags) noexcept;
// From a netif TX request's flags (netback receiving from a guest).
rx_csum rx_csum_from_nettxf(uint16_t nettxf_flags) noexcept;

// How to fill an outgoing L4 checksum.
enum class tx_csum : uint8_t {
    // Compute it in software over header and payload.
    full = 0,
    // Leave it to offload: the field gets the pseudo-header sum (Linux's
    // CHECKSUM_PARTIAL convention) and the frame must be sent with
    // NETTXF_csum_blank | NETTXF_data_validated (netfront's
    // tx_offload::csum_blank); tx_headers says where the checksum starts.
    offload = 1,
    // UDP over IPv4 only: checksum 0, "none" (RFC 768).
    none = 2,
};

} // namespace zc::proto
