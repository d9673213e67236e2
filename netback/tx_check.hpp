// SPDX-License-Identifier: MIT
// The per-packet checks of a netif TX request chain, as Linux netback does
// them in xenvif_tx_build_gops: xenvif_get_extras, xenvif_count_requests,
// the Ethernet-header and page-bound checks, and xenvif_set_skb_gso.
//
// A pure function over the ring (no locks, no logging, no responses, no
// counters) so that the datapath's worker and the micro-benchmarks run the
// very same code; the caller acts on the verdict (answers, logs, disables
// the vif) and advances req_cons by `consumed`.
#pragma once

#include <cstdint>
#include <string>

#include "hv/hv.hpp"
#include "ring/netif_ring.hpp"
#include "ring/zc_direct.hpp"

namespace zc::netback {

// The netif rings (stack/ring) as the backend sees them.
using ring::rx_back_ring;
using ring::tx_back_ring;

// XEN_NETBK_LEGACY_SLOTS_MAX: frags (slots after the first) a packet may use
// before Linux drops it (xenvif_count_requests).
inline constexpr uint32_t legacy_slots_max = XEN_NETIF_NR_SLOTS_MIN;
// fatal_skb_slots default (FATAL_SKB_SLOTS_DEFAULT): more frags is malicious.
inline constexpr uint32_t fatal_skb_slots = 20;
// The most data slots an accepted TX packet has: the first + 18 frags.
inline constexpr uint32_t max_tx_slots = 1 + legacy_slots_max;
// Frags we keep private copies of while counting (up to the fatal limit).
inline constexpr uint32_t max_counted = fatal_skb_slots + 1;
inline constexpr uint32_t eth_hlen = 14; // ETH_HLEN

enum class tx_verdict : uint8_t {
    accept, // a packet to switch: first + nfrags slots, GSO parsed
    mcast,  // a multicast filter update: answer NETIF_RSP_OKAY, nothing to send
    drop,   // bad but not hostile: answer NETIF_RSP_ERROR (xenvif_tx_err)
    fatal,  // protocol violation: disable the vif (xenvif_fatal_tx_err)
};

// Why a chain is fatal; tx_fault_text() renders it with fault_arg.
enum class tx_fault : uint8_t {
    none,
    missing_extra,      // NETTXF_extra_info with no request left
    bad_extra_type,     // fault_arg[0]: the type
    missing_slots,      // NETTXF_more_data beyond req_prod; fault_arg: slots asked, requests there
    malicious_slots,    // more than fatal_skb_slots frags; fault_arg: slots, threshold
    slot_crosses_page,  // a frag; fault_arg: offset, size
    first_crosses_page, // fault_arg: offset, size
    gso_size_zero,
    bad_gso_type,       // fault_arg[0]: the type
};

// Why a chain is dropped (set only for the first reason found, as Linux
// logs only once per packet). May be set on a fatal chain too: the drop was
// decided before the fatal error was found, and Linux logged it then.
enum class tx_drop_reason : uint8_t {
    none,
    too_many_slots, // more than legacy_slots_max frags; drop_arg: slots, limit
    slot_oversize,  // a frag larger than what is left of the first size (>= 64 KiB frame); drop_arg: sizes
    runt,           // the first slot cannot hold an Ethernet header; drop_arg[0]: its size
    bad_direct,     // a direct-path descriptor that breaks ring/zc_direct.hpp's rules; drop_arg[0]: which (direct_rule)
};

// Which rule of a direct-path request (ring/zc_direct.hpp) was broken.
enum class direct_rule : uint32_t {
    incomplete = 1, // tx_payload without tx_dest or the other way round
    multi_slot,     // NETTXF_more_data or GSO on a direct request
    header_size,    // the first slot is larger than tx_header_max
    payload_bounds, // len 0, or offset + len beyond its page
};

struct tx_check_result {
    tx_verdict verdict = tx_verdict::accept;
    tx_fault fault = tx_fault::none;
    tx_drop_reason drop = tx_drop_reason::none;
    uint8_t gso_type = XEN_NETIF_GSO_TYPE_NONE;
    uint16_t gso_size = 0;
    uint32_t extra_count = 0; // extra-info slots (answered with NETIF_RSP_NULL)
    uint32_t nfrags = 0;      // valid entries of frags
    // Ring entries the chain used: req_cons advances by this much. On a
    // fatal verdict it is what Linux had consumed when it gave up.
    uint32_t consumed = 0;
    int32_t fault_arg[2] = {};
    uint32_t drop_arg[2] = {};
    // Private copies (RING_COPY_REQUEST). first.size is the first slot's own
    // size once frags were counted (the total minus the frags), as in Linux.
    netif_tx_request first{};
    netif_tx_request frags[max_counted]; // left uninitialized: written as counted
    // A direct-path request (only when the caller allowed it): the
    // payload's descriptor, checked against ring/zc_direct.hpp's rules.
    bool direct = false;
    ring::zc_direct::tx_payload dpay{};
    ring::zc_direct::tx_dest ddest{};
};

// Check the chain starting at ring index `cons`. `work_to_do` is the number
// of requests available from `cons` (>= 1: the first is read unconditionally).
// `direct_ok`: the vif negotiated feature-zc-direct, so the direct path's
// extra types are known; otherwise they are unknown types (fatal, as Linux).
void check_tx_packet(const tx_back_ring& ring, RING_IDX cons, int work_to_do, tx_check_result& out,
                     bool direct_ok = false) noexcept;

// The reason reported when disabling the vif for `r.fault`.
std::string tx_fault_text(const tx_check_result& r);

} // namespace zc::netback
