// SPDX-License-Identifier: MIT
// The netfront's TX ring: request layout (xennet_start_xmit), completion
// (xennet_tx_buf_gc), room for a frame, and the entry points that copy a
// frame (send), use a reserved TX page (tx_reserve/tx_submit) or a page the
// caller granted (tx_submit_granted*, tx_reap_granted).
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "link/netfront_impl.hpp"

namespace zc::link {

using namespace detail;

// xennet_tx_buf_gc. Called with tx_lock held. False when it broke us.
bool netfront::impl::tx_gc(nf_queue& q) noexcept {
    if (!q.live) return true;
    bool more = false;
    do {
        RING_IDX prod = q.tx.rsp_prod();
        // RING_RESPONSE_PROD_OVERFLOW, tightened: never more responses than
        // requests we published.
        if (prod - q.tx.rsp_cons > q.tx.pushed() - q.tx.rsp_cons) {
            q.st_tx.bad.rsp_prod_overflow++;
            mark_broken("TX: illegal number of responses " + std::to_string(prod - q.tx.rsp_cons));
            return false;
        }
        for (RING_IDX cons = q.tx.rsp_cons; cons != prod; cons++) {
            auto rsp = q.tx.read_response<netif_tx_response_t>(cons);
            if (rsp.status == NETIF_RSP_NULL) continue; // the slot of an extra
            if (rsp.id >= ring::tx_front_ring::size) {
                q.st_tx.bad.tx_bad_id++;
                mark_broken("TX: response has incorrect id " + std::to_string(rsp.id));
                return false;
            }
            if (rsp.id >= q.tx_state.size() || (q.tx_state[rsp.id] != tx_pending && q.tx_state[rsp.id] != tx_granted)) {
                q.st_tx.bad.tx_inactive_id++;
                mark_broken("TX: response for inactive request " + std::to_string(rsp.id));
                return false;
            }
            if (q.tx_state[rsp.id] == tx_granted) q.tx_done_q.push_back(tx_done{q.tx_cookie[rsp.id], rsp.status});
            q.tx_state[rsp.id] = tx_free;
            q.tx_free.push_back(rsp.id);
            q.st_tx.tx_completed++;
            if (rsp.status != NETIF_RSP_OKAY) q.st_tx.tx_errors++;
        }
        q.tx.rsp_cons = prod;
        // RING_FINAL_CHECK_FOR_RESPONSES; lazily, a notification only when
        // half the ring is answered (the ring then needs room).
        more = q.tx.final_check_for_responses(q.tx_lazy ? ring::tx_front_ring::size / 2 : 1);
    } while (more);
    return true;
}

bool netfront::impl::tx_room(const nf_queue& q, uint32_t slots, uint32_t extras) const noexcept {
    uint32_t used = q.tx.req_prod_pvt - q.tx.rsp_cons;
    return used + slots + extras <= ring::tx_front_ring::size && q.tx_free.size() >= slots;
}

// Room for `slots` requests (+ `extras`), collecting TX responses first when
// the ring or the ids run short: 0, -EIO (broken by a bad response), -EAGAIN
// (full; counted as tx_busy).
int netfront::impl::tx_make_room(nf_queue& q, uint32_t slots, uint32_t extras) noexcept {
    if (tx_room(q, slots, extras)) return 0;
    if (!tx_gc(q)) return -EIO;
    if (tx_room(q, slots, extras)) return 0;
    q.st_tx.tx_busy++;
    return -EAGAIN;
}

int netfront::impl::tx_check(const nf_queue& q) const noexcept {
    if (is_broken.load(std::memory_order_relaxed)) return -EIO;
    if (!q.live || !is_connected.load(std::memory_order_relaxed)) return -ENOTCONN;
    return 0;
}

int netfront::impl::check_offload(size_t len, const tx_offload* off) const noexcept {
    if (len > (be_sg ? netif_max_tx_size : eth_frame_len)) return -EMSGSIZE;
    if (!off || (!off->gso_size && !off->gso_type)) return 0;
    if (!off->gso_size) return -EINVAL;
    if (off->gso_type == XEN_NETIF_GSO_TYPE_TCPV4) return be_gso4 && be_sg ? 0 : -EOPNOTSUPP;
    if (off->gso_type == XEN_NETIF_GSO_TYPE_TCPV6) return be_gso6 && be_sg ? 0 : -EOPNOTSUPP;
    return -EINVAL;
}

// The request part of xennet_start_xmit: the first slot carries the frame's
// length and the checksum flags, a GSO extra follows it, then one slot per
// further page; NETTXF_more_data on all but the last. ids[i] holds the i-th
// page of the frame. Called with tx_lock held and room checked.
// `ext` (tx_submit_granted*): slot `ext->slot` comes from the caller's grant
// instead of its id's page. With ext and two slots, slot 1 (the caller's)
// holds ext_len bytes.
void netfront::impl::post_tx(nf_queue& q, const uint16_t* ids, uint32_t nslots, size_t len, const tx_offload* off,
                             const ext_slot* ext, size_t ext_len) noexcept {
    bool gso = off && off->gso_size;
    uint16_t csum = 0;
    if (gso || (off && off->csum_blank))
        csum = NETTXF_csum_blank | NETTXF_data_validated; // CHECKSUM_PARTIAL (GSO always is)
    else if (off && off->data_validated)
        csum = NETTXF_data_validated;                     // CHECKSUM_UNNECESSARY

    RING_IDX i = q.tx.req_prod_pvt;
    size_t left = len;
    for (uint32_t s = 0; s < nslots; s++) {
        bool from_ext = ext && ext->slot == s;
        uint16_t chunk = uint16_t(std::min(left, hv::page_size));
        if (ext && nslots == 2) chunk = uint16_t(s == 0 ? len - ext_len : ext_len); // header | payload
        left -= chunk;
        netif_tx_request_t req{};
        req.gref = from_ext ? ext->gref : q.tx_pages.refs[ids[s]];
        req.offset = from_ext ? ext->offset : 0;
        req.id = ids[s];
        req.size = s == 0 ? uint16_t(len) : chunk; // first slot: whole frame
        req.flags = uint16_t((s == 0 ? csum : 0) | (s + 1 < nslots ? NETTXF_more_data : 0) |
                             (s == 0 && gso ? NETTXF_extra_info : 0));
        q.tx.write_request(i++, req);
        q.tx_state[ids[s]] = from_ext ? tx_granted : tx_pending;
        if (s == 0 && gso) {
            netif_extra_info_t ex{};
            ex.type = XEN_NETIF_EXTRA_TYPE_GSO;
            ex.flags = 0;
            ex.u.gso.size = off->gso_size;
            ex.u.gso.type = off->gso_type;
            ex.u.gso.pad = 0;
            ex.u.gso.features = 0;
            q.tx.write_request(i++, ex);
            q.st_tx.tx_extras++;
        }
    }
    q.tx.req_prod_pvt = i;
    if (q.tx.push_requests_and_check_notify()) notify(q, q.tx_port, q.st_tx.tx_notifies);
    q.st_tx.tx_packets++;
    q.st_tx.tx_bytes += len;
    q.st_tx.tx_slots += nslots;
    // "Note: It is not safe to access skb after xennet_tx_buf_gc()!"
    (void)tx_gc(q);
}

// --- entry points -------------------------------------------------------------

int netfront::impl::send(const void* frame, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    if (queue >= qs.size() || !frame || len < eth_hlen) return -EINVAL;
    if (int rc = check_offload(len, off); rc) return rc;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return rc;
    uint32_t nslots = uint32_t((len + hv::page_size - 1) / hv::page_size);
    uint32_t extras = off && off->gso_size ? 1 : 0;
    if (int rc = tx_make_room(q, nslots, extras); rc) return rc;
    uint16_t ids[netif_max_tx_size / hv::page_size + 1];
    const uint8_t* src = static_cast<const uint8_t*>(frame);
    for (uint32_t s = 0; s < nslots; s++) {
        ids[s] = q.tx_free.back();
        q.tx_free.pop_back();
        size_t chunk = std::min(len - size_t{s} * hv::page_size, hv::page_size);
        std::memcpy(q.tx_page(ids[s]), src + size_t{s} * hv::page_size, chunk);
    }
    post_tx(q, ids, nslots, len, off);
    return 0;
}

result<tx_buffer> netfront::impl::tx_reserve(uint32_t queue) noexcept {
    if (queue >= qs.size()) return err(-EINVAL);
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return err(rc);
    if (q.tx_free.empty()) {
        if (!tx_gc(q)) return err(-EIO);
        if (q.tx_free.empty()) {
            q.st_tx.tx_busy++;
            return err(-EAGAIN);
        }
    }
    uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_state[id] = tx_reserved;
    return tx_buffer{q.tx_page(id), id};
}

int netfront::impl::tx_submit(const tx_buffer& b, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    if (queue >= qs.size() || len < eth_hlen) return -EINVAL;
    if (len > hv::page_size) return -EMSGSIZE;
    if (int rc = check_offload(len, off); rc) return rc;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return rc;
    if (b.id >= q.tx_state.size() || q.tx_state[b.id] != tx_reserved || b.data != q.tx_page(b.id)) return -EINVAL;
    uint32_t extras = off && off->gso_size ? 1 : 0;
    // The page is already ours: only ring room matters.
    auto room = [&] { return (q.tx.req_prod_pvt - q.tx.rsp_cons) + 1 + extras <= ring::tx_front_ring::size; };
    if (!room()) {
        if (!tx_gc(q)) return -EIO;
        if (!room()) {
            q.st_tx.tx_busy++;
            return -EAGAIN;
        }
    }
    post_tx(q, &b.id, 1, len, off);
    return 0;
}

int netfront::impl::tx_release(const tx_buffer& b, uint32_t queue) noexcept {
    if (queue >= qs.size()) return -EINVAL;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (b.id >= q.tx_state.size() || q.tx_state[b.id] != tx_reserved) return -EINVAL;
    q.tx_state[b.id] = tx_free;
    q.tx_free.push_back(b.id);
    return 0;
}

int netfront::impl::tx_submit_granted(hv::gref_t gref, uint16_t offset, size_t len, uint64_t cookie, uint32_t queue,
                                      const tx_offload* off) noexcept {
    if (queue >= qs.size() || len < eth_hlen) return -EINVAL;
    if (size_t{offset} + len > hv::page_size) return -EMSGSIZE;
    if (off && off->gso_size) return -EINVAL; // one slot: nothing to segment
    if (int rc = check_offload(len, off); rc) return rc;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return rc;
    if (int rc = tx_make_room(q, 1, 0); rc) return rc;
    uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_cookie[id] = cookie;
    ext_slot ext{gref, offset};
    post_tx(q, &id, 1, len, off, &ext);
    return 0;
}

int netfront::impl::tx_submit_granted_sg(const void* hdr, size_t hdr_len, hv::gref_t gref, uint16_t offset, size_t len,
                                         uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept {
    if (queue >= qs.size() || !hdr || hdr_len < eth_hlen || hdr_len > hv::page_size || len == 0) return -EINVAL;
    if (size_t{offset} + len > hv::page_size) return -EMSGSIZE;
    if (off && off->gso_size) return -EINVAL;
    if (!be_sg) return -EOPNOTSUPP; // two slots need feature-sg
    if (int rc = check_offload(hdr_len + len, off); rc) return rc;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return rc;
    if (int rc = tx_make_room(q, 2, 0); rc) return rc;
    uint16_t ids[2];
    for (auto& id : ids) {
        id = q.tx_free.back();
        q.tx_free.pop_back();
    }
    std::memcpy(q.tx_page(ids[0]), hdr, hdr_len); // our page: the caller cannot touch it afterwards
    q.tx_cookie[ids[1]] = cookie;
    ext_slot ext{gref, offset, 1};
    post_tx(q, ids, 2, hdr_len + len, off, &ext, len);
    return 0;
}

uint32_t netfront::impl::tx_reap_granted(tx_done* out, uint32_t max, uint32_t queue) noexcept {
    if (queue >= qs.size() || !out) return 0;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (q.tx_done_q.empty()) (void)tx_gc(q);
    uint32_t n = uint32_t(std::min<size_t>(max, q.tx_done_q.size()));
    std::copy_n(q.tx_done_q.begin(), n, out);
    q.tx_done_q.erase(q.tx_done_q.begin(), q.tx_done_q.begin() + n);
    return n;
}

bool netfront::impl::tx_lazy_events(bool lazy, uint32_t queue) noexcept {
    if (queue >= qs.size()) return false;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (q.tx_lazy == lazy || !q.live) {
        q.tx_lazy = lazy;
        return false;
    }
    q.tx_lazy = lazy;
    // Re-arm rsp_event for the new policy; true when responses wait.
    return q.tx.final_check_for_responses(lazy ? ring::tx_front_ring::size / 2 : 1);
}

} // namespace zc::link
