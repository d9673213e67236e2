// SPDX-License-Identifier: MIT
// The netfront's RX ring: posting buffers (xennet_alloc_rx_buffers), parsing
// and checking a chain of responses (xennet_get_responses,
// xennet_get_extras, xennet_set_skb_gso) and handing a frame over
// (xennet_poll): in place, through the scratch buffer or copied.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <new>

#include "common/check.hpp"
#include "link/netfront_impl.hpp"

namespace zc::link {

using namespace detail;

// xennet_alloc_rx_buffers. Called with rx_lock held.
void netfront::impl::alloc_rx_buffers(nf_queue& q) noexcept {
    if (!q.live) return;
    RING_IDX req_prod = q.rx.req_prod_pvt;
    while (req_prod - q.rx.rsp_cons < opts.rx_buffers && !q.rx_free.empty()) {
        uint16_t id = uint16_t(req_prod & (netif_rx_ring_size - 1));
        // BUG_ON(queue->rx_skbs[id]): the position was consumed (and its page
        // freed) before it can be posted again, since responses never pass
        // requests (checked in recv).
        ZC_CHECK(q.rx_buf[id] == no_buf);
        uint16_t b = q.rx_free.back();
        q.rx_free.pop_back();
        q.rx_buf[id] = b;
        netif_rx_request_t req{};
        req.id = id;
        req.pad = 0;
        req.gref = q.rx_pages.refs[b];
        q.rx.write_request(req_prod, req);
        req_prod++;
        q.st_rx.rx_posted++;
    }
    q.rx.req_prod_pvt = req_prod;
    // Linux holds back a push of fewer than NET_RX_SLOTS_MIN buffers (a
    // backend must be able to place a maximal packet; XSA-392 is about a
    // backend waiting forever for that). Here every free page is posted and
    // rx_buffers >= NET_RX_SLOTS_MIN (connect checks), so a push always
    // leaves at least that many.
    if (q.rx.push_requests_and_check_notify()) notify(q, q.rx_port, q.st_rx.rx_notifies);
}

// Consume RX positions [rsp_cons, end) and free their pages
// (xennet_set_rx_rsp_cons plus the page release). rx_lock held.
void netfront::impl::consume_rx(nf_queue& q, RING_IDX end) noexcept {
    for (RING_IDX p = q.rx.rsp_cons; p != end; p++) {
        uint16_t& b = q.rx_buf[p & (netif_rx_ring_size - 1)];
        if (b != no_buf) q.rx_free.push_back(b);
        b = no_buf;
    }
    q.rx.rsp_cons = end;
}

// Copy a parsed chain's data slots to `dst` (c.len bytes). rx_lock held.
void netfront::impl::gather_rx(const nf_queue& q, const rx_chain& c, uint8_t* dst) const noexcept {
    for (uint32_t i = 0; i < c.nslots; i++) {
        const auto& pc = c.pieces[i];
        uint16_t b = q.rx_buf[pc.pos & (netif_rx_ring_size - 1)];
        ZC_CHECK(b != no_buf); // every published position is a posted one (get_responses)
        std::memcpy(dst, q.rx_page(b) + pc.offset, pc.len);
        dst += pc.len;
    }
}

// A chain delivered: consume it, count it, refill in batches of a quarter of
// the buffers (one push, at most one notification each).
void netfront::impl::finish_rx(nf_queue& q, const rx_chain& c) noexcept {
    consume_rx(q, c.end);
    q.st_rx.rx_packets++;
    q.st_rx.rx_bytes += c.len;
    q.st_rx.rx_slots += c.nslots;
    q.st_rx.rx_extras += c.extras;
    if (q.rx_free.size() >= std::max<size_t>(1, opts.rx_buffers / 4)) alloc_rx_buffers(q);
}

// xennet_get_extras: the extra-info slots after the first response at
// `cons`, with responses published up to rp. Leaves `cons` at the last extra
// read; a bad extra sets `err`.
void netfront::impl::get_extras(nf_queue& q, RING_IDX rp, RING_IDX& cons, rx_chain& c, int& err) noexcept {
    auto& bad = q.st_rx.bad;
    netif_extra_info_t ex{};
    do {
        if (cons + 1 == rp) {
            bad.rx_missing_extra++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: missing extra info", fe_path.c_str());
            err = -EBADR;
            break;
        }
        ex = q.rx.read_response<netif_extra_info_t>(++cons);
        c.extras++;
        if (direct_extra(ex, c)) {
            // the direct path's rx_grant / rx_desc (netfront_direct.cpp)
        } else if (!ex.type || ex.type >= XEN_NETIF_EXTRA_TYPE_MAX) {
            bad.rx_bad_extra++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: invalid extra type %u", fe_path.c_str(), ex.type);
            err = -EINVAL;
        } else if (ex.type == XEN_NETIF_EXTRA_TYPE_GSO) {
            c.gso = true;
            c.gso_size = ex.u.gso.size;
            c.gso_type = ex.u.gso.type;
        }
    } while (ex.flags & XEN_NETIF_EXTRA_FLAG_MORE);
}

// xennet_get_responses + xennet_get_extras + xennet_set_skb_gso: parse the
// chain at rsp_cons with responses published up to rp. Returns 0, or a
// negative errno for a chain to drop (c.end says how far it reaches).
int netfront::impl::get_responses(nf_queue& q, RING_IDX rp, rx_chain& c) noexcept {
    constexpr RING_IDX mask = netif_rx_ring_size - 1;
    RING_IDX first = q.rx.rsp_cons;
    auto rx = q.rx.read_response<netif_rx_response_t>(first);
    uint32_t max = XEN_NETIF_NR_SLOTS_MIN + (rx.status <= int(rx_copy_threshold) ? 1 : 0);
    RING_IDX cons = first;
    int err = 0;
    c = rx_chain{};
    c.flags = rx.flags;
    auto& bad = q.st_rx.bad;

    if (rx.flags & NETRXF_extra_info) get_extras(q, rp, cons, c, err);

    // Data slots: the first at `first`, the rest after the extras.
    RING_IDX pos = first;
    uint32_t slots = 1;
    for (;;) {
        // Linux finds the page by position and ignores the id; a correct
        // backend echoes the request's id (= position), so a mismatch is a
        // backend bug worth seeing.
        if (rx.id != (pos & mask)) {
            bad.rx_id_mismatch++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: rx response id %u at slot %u", fe_path.c_str(), rx.id, pos & mask);
            err = -EINVAL;
        } else if (rx.status < 0 || uint32_t(rx.offset) + uint32_t(rx.status) > hv::page_size) {
            bad.rx_bad_status++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: rx->offset: %u, size: %d", fe_path.c_str(), rx.offset, rx.status);
            err = -EINVAL;
        } else if (c.nslots < std::size(c.pieces)) {
            c.pieces[c.nslots++] = {pos, rx.offset, uint16_t(rx.status)};
            c.len += size_t(rx.status);
        }
        if (!(rx.flags & NETRXF_more_data)) break;
        if (cons + slots == rp) {
            bad.rx_incomplete++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: need more slots", fe_path.c_str());
            err = -ENOENT;
            break;
        }
        pos = cons + slots;
        rx = q.rx.read_response<netif_rx_response_t>(pos);
        slots++;
    }
    if (slots > max) {
        bad.rx_too_many_slots++;
        if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: too many slots (%u)", fe_path.c_str(), slots);
        err = -E2BIG;
    }
    c.end = cons + slots;
    // xennet_set_skb_gso
    if (!err && c.gso) {
        if (!c.gso_size || (c.gso_type != XEN_NETIF_GSO_TYPE_TCPV4 && c.gso_type != XEN_NETIF_GSO_TYPE_TCPV6)) {
            bad.rx_bad_gso++;
            if (rl_rx.allow())
                ZC_LOG(warn, tag, "%s: bad GSO extra (size %u type %u)", fe_path.c_str(), c.gso_size, c.gso_type);
            err = -EINVAL;
        }
    }
    return err;
}

// xennet_poll, one frame at a time: with `fn` (recv_view) the frame is shown
// where it lies, or assembled in the scratch buffer; without, copied to buf.
result<size_t> netfront::impl::recv(void* buf, size_t cap, uint32_t queue, rx_info* info, rx_view_fn fn,
                                    void* arg) noexcept {
    if (queue >= qs.size()) return err(-EINVAL);
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.rx_lock);
    if (is_broken) return err(-EIO);
    if (!q.live) return err(-ENOTCONN);
    // Refill in batches (finish_rx), and always before going idle.
    for (;;) {
        RING_IDX rp = q.rx.rsp_prod();
        // RING_RESPONSE_PROD_OVERFLOW, tightened: never more responses than
        // requests we published (Linux catches the rest as "Bad rx response
        // id" on slots without a buffer).
        if (rp - q.rx.rsp_cons > q.rx.pushed() - q.rx.rsp_cons) {
            q.st_rx.bad.rsp_prod_overflow++;
            mark_broken("RX: illegal number of responses " + std::to_string(rp - q.rx.rsp_cons));
            return err(-EIO);
        }
        if (rp == q.rx.rsp_cons) {
            alloc_rx_buffers(q);
            // napi_complete_done + re-arm rsp_event (RING_FINAL_CHECK_FOR_RESPONSES)
            if (q.rx.final_check_for_responses()) continue;
            return err(-EAGAIN);
        }
        rx_chain c;
        if (get_responses(q, rp, c) < 0 || check_direct(q, c) < 0) {
            drop_direct(q, c);
            consume_rx(q, c.end);
            q.st_rx.rx_errors++;
            continue;
        }
        if (c.d_desc && !info) {
            // Nobody would see the descriptor: give the payload back.
            drop_direct(q, c);
            consume_rx(q, c.end);
            continue;
        }
        if (info) {
            info->len = c.len;
            info->flags = uint16_t(c.flags & (NETRXF_csum_blank | NETRXF_data_validated));
            info->gso_size = c.gso ? c.gso_size : 0;
            info->gso_type = c.gso ? c.gso_type : 0;
            info->slots = c.nslots;
            info->extras = c.extras;
            info->direct = c.d_desc;
            info->desc = c.d_desc ? c.desc : direct_desc{};
        }
        if (fn && c.nslots == 1) {
            // The frame lies in one RX page: show it in place.
            const auto& pc = c.pieces[0];
            uint16_t b = q.rx_buf[pc.pos & (netif_rx_ring_size - 1)];
            ZC_CHECK(b != no_buf);
            fn(q.rx_page(b) + pc.offset, pc.len, arg);
        } else if (fn) {
            // Chained frame: assemble it in a scratch buffer (once per queue).
            if (!q.rx_scratch) q.rx_scratch.reset(new (std::nothrow) uint8_t[netif_max_tx_size + 1]);
            if (!q.rx_scratch || c.len > netif_max_tx_size + 1) {
                consume_rx(q, c.end);
                q.st_rx.rx_errors++;
                continue;
            }
            gather_rx(q, c, q.rx_scratch.get());
            fn(q.rx_scratch.get(), c.len, arg);
        }
        if (!fn) {
            if (c.len > cap) return err(-EMSGSIZE); // stays queued
            gather_rx(q, c, static_cast<uint8_t*>(buf));
        }
        if (c.d_desc) q.st_rx.rx_direct++;
        finish_rx(q, c);
        return c.len;
    }
}

} // namespace zc::link
