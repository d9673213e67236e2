// SPDX-License-Identifier: MIT
// TX request checks; see tx_check.hpp. One function per Linux step
// (xenvif_get_extras, xenvif_count_requests, xenvif_set_skb_gso), called in
// the order of xenvif_tx_build_gops. The order of the checks is Linux's and
// matters: it decides which error a frontend that breaks several rules gets,
// and how far req_cons has moved when the vif is disabled.
#include "netback/tx_check.hpp"

#include <cstdio>

namespace zc::netback {

namespace {

void fail(tx_check_result& c, tx_fault f, int32_t a = 0, int32_t b = 0) noexcept {
    c.verdict = tx_verdict::fatal;
    c.fault = f;
    c.fault_arg[0] = a;
    c.fault_arg[1] = b;
}

// xenvif_get_extras: the extra-info slots after the first request, by type.
// False when the chain is fatal.
bool get_extras(const tx_back_ring& ring, RING_IDX& idx, int& work_to_do, tx_check_result& c,
                netif_extra_info* extras, bool direct_ok, bool (&direct_seen)[2]) noexcept {
    netif_extra_info extra;
    do {
        if (work_to_do-- <= 0) {
            fail(c, tx_fault::missing_extra);
            return false;
        }
        extra = ring.read_request<netif_extra_info>(idx++);
        ++c.extra_count;
        c.consumed = 1 + c.extra_count;
        // The direct path's private types (ring/zc_direct.hpp), known only
        // on a vif that negotiated them.
        namespace zd = ring::zc_direct;
        if (direct_ok && (extra.type == zd::extra_tx_payload || extra.type == zd::extra_tx_dest)) {
            if (extra.type == zd::extra_tx_payload) c.dpay = zd::from_extra<zd::tx_payload>(extra);
            else c.ddest = zd::from_extra<zd::tx_dest>(extra);
            direct_seen[extra.type == zd::extra_tx_dest] = true;
            continue;
        }
        if (!extra.type || extra.type >= XEN_NETIF_EXTRA_TYPE_MAX) {
            fail(c, tx_fault::bad_extra_type, int32_t(extra.type));
            return false;
        }
        extras[extra.type - 1] = extra;
    } while (extra.flags & XEN_NETIF_EXTRA_FLAG_MORE);
    return true;
}

// xenvif_count_requests: the frags of a NETTXF_more_data chain into
// c.frags (c.first.size becomes the first slot's own size). The frags are
// read but not consumed until the chain is known to be complete (a fatal
// chain leaves req_cons after the extras, as in Linux). False when the
// verdict is final (fatal, or drop with the frags consumed).
bool count_requests(const tx_back_ring& ring, RING_IDX idx, int work_to_do, tx_check_result& c,
                    int& slots) noexcept {
    bool drop = false;
    bool more_data;
    do {
        if (slots >= work_to_do) {
            fail(c, tx_fault::missing_slots, slots + 1, work_to_do);
            return false;
        }
        if (uint32_t(slots) >= fatal_skb_slots) {
            fail(c, tx_fault::malicious_slots, slots + 1, int32_t(fatal_skb_slots));
            return false;
        }
        if (!drop && uint32_t(slots) >= legacy_slots_max) {
            c.drop = tx_drop_reason::too_many_slots;
            c.drop_arg[0] = uint32_t(slots + 1);
            c.drop_arg[1] = legacy_slots_max;
            drop = true;
        }
        netif_tx_request& txp = c.frags[slots];
        txp = ring.read_request<netif_tx_request>(idx + RING_IDX(slots));
        // A frame >= 64 KiB overflows the first size: not fatal, buggy
        // frontends do it; consume and drop.
        if (!drop && txp.size > c.first.size) {
            c.drop = tx_drop_reason::slot_oversize;
            c.drop_arg[0] = txp.size;
            c.drop_arg[1] = c.first.size;
            drop = true;
        }
        c.first.size = uint16_t(c.first.size - txp.size);
        ++slots;
        if (uint32_t(txp.offset) + txp.size > hv::page_size) {
            fail(c, tx_fault::slot_crosses_page, txp.offset, txp.size);
            return false;
        }
        more_data = txp.flags & NETTXF_more_data;
    } while (more_data);
    c.nfrags = uint32_t(slots);
    if (drop) {
        c.verdict = tx_verdict::drop;
        c.consumed += uint32_t(slots);
        return false;
    }
    return true;
}

// xenvif_set_skb_gso. False when the chain is fatal.
bool set_skb_gso(const netif_extra_info& gso, tx_check_result& c) noexcept {
    if (!gso.u.gso.size) {
        fail(c, tx_fault::gso_size_zero);
        return false;
    }
    if (gso.u.gso.type != XEN_NETIF_GSO_TYPE_TCPV4 && gso.u.gso.type != XEN_NETIF_GSO_TYPE_TCPV6) {
        fail(c, tx_fault::bad_gso_type, int32_t(gso.u.gso.type));
        return false;
    }
    c.gso_type = gso.u.gso.type;
    c.gso_size = gso.u.gso.size;
    return true;
}

} // namespace

// The direct path's rules (ring/zc_direct.hpp) for a chain that passed
// Linux's. False when the request is dropped.
bool check_direct(tx_check_result& c, const bool (&seen)[2], int slots) noexcept {
    direct_rule bad{};
    if (!seen[0] || !seen[1]) bad = direct_rule::incomplete;
    else if (slots || c.gso_type != XEN_NETIF_GSO_TYPE_NONE) bad = direct_rule::multi_slot;
    else if (c.first.size > ring::zc_direct::tx_header_max) bad = direct_rule::header_size;
    else if (!c.ddest.len || uint32_t(c.dpay.offset) + c.ddest.len > hv::page_size) bad = direct_rule::payload_bounds;
    if (bad == direct_rule{}) return true;
    c.verdict = tx_verdict::drop;
    c.drop = tx_drop_reason::bad_direct;
    c.drop_arg[0] = uint32_t(bad);
    c.drop_arg[1] = 0;
    return false;
}

void check_tx_packet(const tx_back_ring& ring, RING_IDX cons, int work_to_do, tx_check_result& c,
                     bool direct_ok) noexcept {
    c.verdict = tx_verdict::accept;
    c.fault = tx_fault::none;
    c.drop = tx_drop_reason::none;
    c.gso_type = XEN_NETIF_GSO_TYPE_NONE;
    c.gso_size = 0;
    c.extra_count = 0;
    c.nfrags = 0;
    c.direct = false;

    RING_IDX idx = cons;
    c.first = ring.read_request<netif_tx_request>(idx); // RING_COPY_REQUEST (XSA-155)
    --work_to_do;
    ++idx;
    c.consumed = 1;

    netif_extra_info extras[XEN_NETIF_EXTRA_TYPE_MAX - 1] = {};
    bool direct_seen[2] = {false, false};
    if ((c.first.flags & NETTXF_extra_info) && !get_extras(ring, idx, work_to_do, c, extras, direct_ok, direct_seen))
        return;

    // Multicast filter updates: nothing to count or send.
    if (extras[XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1].type || extras[XEN_NETIF_EXTRA_TYPE_MCAST_DEL - 1].type) {
        c.verdict = tx_verdict::mcast;
        return;
    }

    int slots = 0;
    if ((c.first.flags & NETTXF_more_data) && !count_requests(ring, idx, work_to_do, c, slots)) return;

    // xenvif_tx_build_gops: the first slot must hold an Ethernet header
    // (after count_requests, first.size is its own size).
    if (c.first.size < eth_hlen) {
        c.verdict = tx_verdict::drop;
        c.drop = tx_drop_reason::runt;
        c.drop_arg[0] = c.first.size;
        c.drop_arg[1] = 0;
        c.consumed += uint32_t(slots);
        return;
    }
    if (uint32_t(c.first.offset) + c.first.size > hv::page_size) {
        fail(c, tx_fault::first_crosses_page, c.first.offset, c.first.size);
        return;
    }
    if (extras[XEN_NETIF_EXTRA_TYPE_GSO - 1].type && !set_skb_gso(extras[XEN_NETIF_EXTRA_TYPE_GSO - 1], c)) return;
    c.consumed += uint32_t(slots);
    if ((direct_seen[0] || direct_seen[1]) && check_direct(c, direct_seen, slots)) c.direct = true;
}

std::string tx_fault_text(const tx_check_result& r) {
    char buf[128] = {};
    const int a = r.fault_arg[0], b = r.fault_arg[1];
    switch (r.fault) {
    case tx_fault::none: return "";
    case tx_fault::missing_extra: return "missing extra info";
    case tx_fault::bad_extra_type: std::snprintf(buf, sizeof buf, "invalid extra type: %u", unsigned(a)); break;
    case tx_fault::missing_slots:
        std::snprintf(buf, sizeof buf, "asked for %d slots but only %d requests are there", a, b);
        break;
    case tx_fault::malicious_slots:
        std::snprintf(buf, sizeof buf, "malicious frontend using %d slots, threshold %u", a, unsigned(b));
        break;
    case tx_fault::slot_crosses_page:
        std::snprintf(buf, sizeof buf, "slot crosses its page: offset %u size %u", unsigned(a), unsigned(b));
        break;
    case tx_fault::first_crosses_page:
        std::snprintf(buf, sizeof buf, "first slot crosses its page: offset %u size %u", unsigned(a), unsigned(b));
        break;
    case tx_fault::gso_size_zero: return "GSO size must not be zero";
    case tx_fault::bad_gso_type: std::snprintf(buf, sizeof buf, "bad GSO type %u", unsigned(a)); break;
    }
    return buf;
}

} // namespace zc::netback
