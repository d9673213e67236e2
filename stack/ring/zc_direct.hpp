// SPDX-License-Identifier: MIT
// The direct path's wire format (docs/ARCHITECTURE.md, "Direct path (guest
// to guest)"): what zc-netback and our netfront exchange, on top of Xen's
// netif protocol (xen/io/netif.h), when both negotiated feature-zc-direct.
// Used by both ends; nothing here is valid on a vif that did not negotiate
// it (a Linux netback or netfront treats these extra types as unknown:
// xenvif_get_extras disables the vif, xennet_get_extras drops the packet).
//
// xenstore (each end writes only its own directory):
//   backend:  feature-zc-direct = "1"
//             zc-direct-peers/<mac> = "<domid>"  (<mac> as aa-bb-cc-dd-ee-ff,
//             lower case: ':' is not a valid xenstore path character)
//   frontend: feature-zc-direct = "1"
//             zc-direct-release-ring-ref = "<gref>" (one page, writable by
//             the backend: the release ring below)
//
// TX (frontend -> backend): the first request carries the headers only
// (size = header bytes, at most tx_header_max, one slot: no
// NETTXF_more_data, no GSO) and NETTXF_extra_info; its extras are, in this
// order, tx_payload then tx_dest (XEN_NETIF_EXTRA_FLAG_MORE on the first).
// The frame is the headers followed by the payload: len bytes at `offset`
// of grant `gref`, which the sender granted (read-only) to domain `domid`.
// The TX response (one per request, NETIF_RSP_NULL for the extras, as
// always) goes out when the receiver released the payload, or at once with
// NETIF_RSP_ERROR when the backend refused the frame; the sender then
// sends it again on the ordinary path.
//
// RX (backend -> frontend): the headers in the first RX slot (status =
// header bytes, NETRXF_extra_info), then two extras in the next two slots:
// rx_grant (the payload's granter and grant, XEN_NETIF_EXTRA_FLAG_MORE)
// and rx_desc (offset, length and the cookie to release). Each extra takes
// an RX request's slot, as the GSO extra does.
//
// Release (receiver -> backend): the receiver puts the cookie of every
// descriptor it is done with on its release ring and notifies its TX event
// channel; the backend answers each entry (ring.h: every request gets a
// response) so that the receiver knows the slot is free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "ring/netif_ring.hpp"

extern "C" {
struct zc_direct_release_request {
    uint16_t cookie;
    uint16_t pad;
};
struct zc_direct_release_response {
    uint16_t cookie;
    int16_t status; // NETIF_RSP_OKAY, or NETIF_RSP_ERROR for a cookie the backend did not know
};
DEFINE_RING_TYPES(zc_direct_release, struct zc_direct_release_request, struct zc_direct_release_response);
}

namespace zc::ring::zc_direct {

inline constexpr const char* key_feature = "feature-zc-direct";
inline constexpr const char* key_release_ring = "zc-direct-release-ring-ref";
inline constexpr const char* key_peers = "zc-direct-peers";

// The name of a peer's entry under key_peers: its MAC as aa-bb-cc-dd-ee-ff.
inline std::string peer_key(const uint8_t* mac) { // 6 bytes
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 6; ++i) {
        if (i) s += '-';
        s += hex[mac[i] >> 4];
        s += hex[mac[i] & 15];
    }
    return s;
}

// Private extra types: far above XEN_NETIF_EXTRA_TYPE_MAX, so that no
// upstream type added later collides (the field is a uint8_t).
inline constexpr uint8_t extra_tx_payload = 0xd0;
inline constexpr uint8_t extra_tx_dest = 0xd1;
inline constexpr uint8_t extra_rx_grant = 0xd2;
inline constexpr uint8_t extra_rx_desc = 0xd3;
static_assert(extra_tx_payload >= XEN_NETIF_EXTRA_TYPE_MAX);

// The most header bytes a direct frame's first slot carries: what the
// backend's header copy reads (XEN_NETBACK_TX_COPY_LEN), so that the
// headers it checked are exactly those the receiver gets.
inline constexpr uint32_t tx_header_max = 128;

// Each extra overlays netif_extra_info: type and flags first, then the six
// bytes of its union.
struct tx_payload {
    uint8_t type;  // extra_tx_payload
    uint8_t flags; // XEN_NETIF_EXTRA_FLAG_MORE (tx_dest follows)
    uint16_t offset;
    uint32_t gref;
};
struct tx_dest {
    uint8_t type; // extra_tx_dest
    uint8_t flags;
    uint16_t domid; // the domain `gref` is granted to: the frame's destination
    uint16_t len;   // payload bytes; offset + len <= one page
    uint16_t reserved;
};
struct rx_grant {
    uint8_t type; // extra_rx_grant
    uint8_t flags; // XEN_NETIF_EXTRA_FLAG_MORE (rx_desc follows)
    uint16_t domid; // the sender: the payload's granter
    uint32_t gref;
};
struct rx_desc {
    uint8_t type; // extra_rx_desc
    uint8_t flags;
    uint16_t offset;
    uint16_t len;
    uint16_t cookie; // to put on the release ring
};

template <class T>
constexpr bool overlays_extra() {
    return sizeof(T) == sizeof(netif_extra_info) && offsetof(T, type) == offsetof(netif_extra_info, type) &&
           offsetof(T, flags) == offsetof(netif_extra_info, flags);
}
static_assert(overlays_extra<tx_payload>() && overlays_extra<tx_dest>() && overlays_extra<rx_grant>() &&
              overlays_extra<rx_desc>());
static_assert(offsetof(tx_payload, offset) == 2 && offsetof(tx_payload, gref) == 4);
static_assert(offsetof(rx_grant, domid) == 2 && offsetof(rx_grant, gref) == 4);
static_assert(offsetof(rx_desc, cookie) == 6 && offsetof(tx_dest, len) == 4);

// Bit-for-bit conversions to and from the ring's entries.
template <class T>
inline netif_extra_info to_extra(const T& v) noexcept {
    netif_extra_info e;
    std::memcpy(&e, &v, sizeof e);
    return e;
}
template <class T>
inline T from_extra(const netif_extra_info& e) noexcept {
    T v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}

static_assert(sizeof(zc_direct_release_request) == 4 && sizeof(zc_direct_release_response) == 4);
static_assert(offsetof(zc_direct_release_sring, ring) == 64);
static_assert(ring_size_of<zc_direct_release_sring>() == 512);

using release_back_ring = back_ring<zc_direct_release_sring>;
using release_front_ring = front_ring<zc_direct_release_sring>;

} // namespace zc::ring::zc_direct
