// SPDX-License-Identifier: MIT
// Checksum and GSO metadata of a frame between guests, and what a
// destination accepts. Pure functions over the header bytes zc-netback
// copied (the first tx_copy_len bytes of the first slot), so that they are
// tested on their own.
//
// Source side, as Linux xen-netback does before a frame enters the host
// stack (netback.c checksum_setup -> skb_checksum_setup, xenvif_set_skb_gso
// and the GSO header-length check in xenvif_tx_submit): a checksum-blank or
// GSO frame must be IPv4 or IPv6 (no IP fragment) carrying TCP or UDP (TCP
// for GSO, matching the GSO type's IP version), with the checksum field
// inside the frame. The headers are read from the header copy only: a
// checksum-blank or GSO frame whose IP header (and, for GSO, TCP header)
// is not within the first tx_copy_len bytes of its first slot is dropped
// (counted), where Linux would pull more of the frame.
//
// Destination side, as the host stack in front of a Linux vif does: a
// frame whose checksum is still to be completed is not given as such to a
// frontend that cannot take it (feature-no-csum-offload for IPv4, no
// feature-ipv6-csum-offload for IPv6): its checksum is completed first
// (validate_xmit_skb -> skb_checksum_help for a device without
// NETIF_F_IP_CSUM / NETIF_F_IPV6_CSUM), which needs the frame in local
// memory (the bounce path: tx.cpp switch_to, copy.cpp), or it is dropped
// when it is GSO (Linux would segment it); and a non-GSO frame larger than
// the destination's MTU plus an Ethernet and a VLAN header is not
// forwarded (is_skb_forwardable).
#pragma once

#include <cstdint>

#include "netback/datapath.hpp"

namespace zc::netback {

enum class offload_verdict : uint8_t {
    ok = 0,
    bad_metadata,  // the frame's headers do not match its checksum/GSO request
    no_csum,       // the destination cannot complete the checksum, and neither can we (GSO)
    complete_csum, // the destination cannot complete the checksum: complete it for it
    over_mtu,      // larger than the destination's MTU, not GSO
};

struct offload_info {
    bool needs_csum = false; // the checksum is still to be completed (csum_blank or GSO)
    uint8_t ip_version = 0;  // 4, 6, or 0 (neither)
};

// Source-side check of one frame. `hdr` holds the first `hdr_len` bytes
// of the frame (`len` bytes in all).
offload_verdict check_offload(const uint8_t* hdr, uint32_t hdr_len, uint32_t len, uint8_t txflags, uint8_t gso_type,
                              uint16_t gso_size, offload_info* out) noexcept;

// Destination-side check for a frame that passed check_offload.
offload_verdict check_destination(const offload_info& f, uint32_t len, uint8_t gso_type,
                                   const vif_params& dst) noexcept;

// A frame's bytes in pieces (the bounce buffers it was packed into), in
// order. Every piece but the last has an even length.
struct frame_piece {
    uint8_t* data;
    uint32_t len;
};

// Complete the L4 checksum of a checksum-blank Ethernet frame in place
// (TCP or UDP over IPv4 or IPv6, one optional VLAN tag): Linux
// skb_checksum_help's job for a frame leaving with CHECKSUM_PARTIAL. The
// headers, up to the checksum field, must lie in the first piece. False
// when they cannot be parsed (the frame is dropped).
bool complete_checksum(const frame_piece* pieces, uint32_t n) noexcept;
inline bool complete_checksum(uint8_t* frame, uint32_t len) noexcept {
    const frame_piece p{frame, len};
    return complete_checksum(&p, 1);
}

} // namespace zc::netback
