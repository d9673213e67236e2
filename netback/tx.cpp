// SPDX-License-Identifier: MIT
// TX: a queue's TX ring from request to response. Reading the ring and
// checking each chain (Linux xenvif_tx_build_gops; the checks themselves,
// xenvif_get_extras / xenvif_count_requests / xenvif_set_skb_gso, are in
// tx_check.cpp), the header copy (xenvif_tx_check_gop), the switch decision
// (direct into the destination's RX ring, or wait in its queue), and TX
// completion (xenvif_idx_release / make_tx_response / push_tx_responses).
// The payload copies themselves are in copy.cpp.
#include <algorithm>
#include <cstring>

#include "netback/common.hpp"

namespace zc::netback {

namespace {

// Responses written on the TX ring under tx_lock; pushed once by the caller.
struct tx_builder {
    queue& q;
    bool wrote = false;

    // make_tx_response: one response for `txp` and RSP_NULL for its extras.
    void respond(const netif_tx_request& txp, uint32_t extra_count, int8_t st) noexcept {
        RING_IDX i = q.tx.rsp_prod_pvt;
        netif_tx_response r{txp.id, st};
        q.tx.write_response(i, r);
        while (extra_count--) {
            netif_tx_response n{0, NETIF_RSP_NULL};
            q.tx.write_response(++i, n);
        }
        q.tx.rsp_prod_pvt = ++i;
        wrote = true;
    }

    // xenvif_tx_err: error responses for the first request and its frags.
    void tx_err(const netif_tx_request& first, uint32_t extra_count, const netif_tx_request* frags,
                uint32_t nfrags) noexcept {
        respond(first, extra_count, NETIF_RSP_ERROR);
        for (uint32_t i = 0; i < nfrags; ++i) respond(frags[i], 0, NETIF_RSP_ERROR);
        bump(q.core->ctr.drop_malformed);
    }
};

void bucket(vif_counters& c, uint32_t n) noexcept {
    uint32_t b = 0;
    while (b < batch_hist_buckets - 1 && (2u << b) <= n) ++b;
    bump(c.batch_hist[b]);
}

// Drop reasons are logged even when the chain turns out fatal later: Linux
// logs them as it finds them.
void log_tx_drop(vif_core& core, const tx_check_result& r) noexcept {
    if (r.drop == tx_drop_reason::none || !core.drop_log.allow()) return;
    if (r.drop == tx_drop_reason::too_many_slots)
        ZC_LOG(warn, tag, "vif%u.%u: too many slots (%u > %u), dropping packet", unsigned(core.dom), core.devid,
               r.drop_arg[0], r.drop_arg[1]);
    else if (r.drop == tx_drop_reason::slot_oversize)
        ZC_LOG(warn, tag, "vif%u.%u: slot size %u > remaining size %u, dropping packet", unsigned(core.dom),
               core.devid, r.drop_arg[0], r.drop_arg[1]);
    else if (r.drop == tx_drop_reason::bad_direct)
        ZC_LOG(warn, tag, "vif%u.%u: bad direct-path descriptor (rule %u)", unsigned(core.dom), core.devid,
               r.drop_arg[0]);
    else
        ZC_LOG(warn, tag, "vif%u.%u: bad packet size %u", unsigned(core.dom), core.devid, r.drop_arg[0]);
}

} // namespace

// One TX batch of a queue: read and check, copy the headers, switch, copy
// the payloads, answer.
void datapath::impl::process_tx(worker& w, const std::shared_ptr<queue>& qp) noexcept {
    w.tx_pkts.clear();
    read_tx_ring(w, *qp);
    if (w.tx_pkts.empty()) return;
    vif_core& core = *qp->core;
    bucket(core.ctr, uint32_t(w.tx_pkts.size()));
    const int rc = copy_headers(w, core);
    switch_batch(w, qp, rc);
    finish_tx_batch(w, qp);
}

// xenvif_tx_build_gops: consume up to a batch of accepted packets into
// w.tx_pkts; answer multicast updates and dropped chains at once, disable
// the vif on a protocol violation.
void datapath::impl::read_tx_ring(worker& w, queue& q) noexcept {
    vif_core& core = *q.core;
    std::vector<tx_packet*>& pkts = w.tx_pkts;
    bool notify = false;
    bool more = false;
    bool limited = false;
    {
        std::lock_guard g(q.tx_lock);
        if (q.tx_dead || core.disabled.load(std::memory_order_relaxed)) {
            q.tx_more = false;
            return;
        }
        tx_builder b{q};
        for (;;) {
            if (pkts.size() >= opt.batch) {
                more = true;
                break;
            }
            // A frontend claiming more requests than the ring holds is
            // broken or hostile.
            const RING_IDX prod = q.tx.req_prod();
            if (RING_IDX(prod - q.tx.req_cons) > tx_back_ring::size) {
                fatal(w, core, format("impossible number of requests: req_prod %u req_cons %u size %u", prod,
                                      q.tx.req_cons, tx_back_ring::size));
                break;
            }
            int work_to_do = int(q.tx.unconsumed());
            if (!work_to_do) break;
            if (q.free_pkts.empty()) break; // every slot is pending already

            // A pure function (tx_check.cpp), so that bench_netback measures
            // this very code.
            tx_check_result r;
            check_tx_packet(q.tx, q.tx.req_cons, work_to_do, r, core.direct != nullptr);
            // The `rate` credit (Linux xenvif_tx_build_gops): a packet over
            // it stays on the ring until the credit timer; poll_timeout
            // wakes the worker then.
            // Charged the whole packet, as Linux charges txreq.size before
            // xenvif_count_requests (first.size is the first slot's own now).
            uint32_t total = r.first.size;
            for (uint32_t i = 0; i < r.nfrags; ++i) total += r.frags[i].size;
            if (r.direct) total += r.ddest.len; // the payload in the sender's grant
            if (r.verdict == tx_verdict::accept && core.params.credit_usec != 0 &&
                q.credit.exceeded(core.params.credit_bytes, core.params.credit_usec, total, clock_type::now())) {
                bump(core.ctr.rate_limited);
                limited = true;
                break;
            }
            q.tx.req_cons += r.consumed;
            log_tx_drop(core, r);
            if (r.verdict == tx_verdict::fatal) {
                fatal(w, core, tx_fault_text(r));
                break;
            }
            // Multicast filter updates: we flood every group address to every
            // vif, so there is no filter to keep; answer as Linux does.
            if (r.verdict == tx_verdict::mcast) {
                b.respond(r.first, r.extra_count, NETIF_RSP_OKAY);
                continue;
            }
            if (r.verdict == tx_verdict::drop) {
                if (r.drop == tx_drop_reason::bad_direct) bump(core.ctr.direct_errors);
                b.tx_err(r.first, r.extra_count, r.frags, r.nfrags);
                continue;
            }
            pkts.push_back(accept_tx_packet(q, r));
        }
        if (b.wrote) notify = q.tx.push_responses_and_check_notify();
        if (!more && !limited && !core.disabled.load(std::memory_order_relaxed))
            more = q.tx.final_check_for_requests() && !q.free_pkts.empty();
        q.tx_more = more && !core.disabled.load(std::memory_order_relaxed);
    }
    if (notify) notify_frontend(q, false);
}

// Under tx_lock: an accepted chain becomes a pending packet; its slots are
// ours until the TX responses go out.
tx_packet* datapath::impl::accept_tx_packet(queue& q, const tx_check_result& r) noexcept {
    const netif_tx_request& txreq = r.first;
    const uint32_t slots = r.nfrags;
    const uint32_t extra_count = r.extra_count;
    const uint16_t pi = q.free_pkts.back();
    q.free_pkts.pop_back();
    tx_packet& p = q.packets[pi];
    p.nslots = uint16_t(1 + slots);
    p.extra_count = uint8_t(extra_count);
    p.req[0] = txreq;
    uint32_t total = txreq.size;
    for (uint32_t i = 0; i < slots; ++i) {
        p.req[1 + i] = r.frags[i];
        total += r.frags[i].size;
    }
    p.len = total;
    p.txflags = uint8_t(txreq.flags & (NETTXF_csum_blank | NETTXF_data_validated));
    p.gso_type = r.gso_type;
    p.gso_size = r.gso_size;
    p.status = NETIF_RSP_OKAY;
    p.hdr_len = uint16_t(std::min<uint32_t>(txreq.size, tx_copy_len));
    // The direct path: slot 0 is the headers only (at most tx_copy_len
    // bytes, tx_check), the payload stays in the sender's grant.
    p.direct = r.direct;
    if (r.direct) {
        p.direct_dom = r.ddest.domid;
        p.direct_gref = r.dpay.gref;
        p.direct_offset = r.dpay.offset;
        p.direct_len = r.ddest.len;
        p.len = total + r.ddest.len;
    }
    p.refs.store(1, std::memory_order_relaxed); // the batch's reference
    for (uint32_t i = 0; i < p.nslots; ++i) {
        auto f = mgr->stamp_foreign(q.core->dom, p.req[i].gref, p.req[i].offset, p.req[i].size, true);
        // Bounds were checked by check_tx_packet; stamp_foreign re-checks them.
        p.seg[i] = f ? *f : pool::frame{};
    }
    q.pending_slots.fetch_add(p.nslots + extra_count, std::memory_order_relaxed);
    return &p;
}

// Header copies: gref -> local, one hypercall for the batch. Returns the
// grant copy's result; each segment has its own status.
int datapath::impl::copy_headers(worker& w, vif_core& core) noexcept {
    std::vector<hv::copy_segment>& segs = w.hdr_segs;
    segs.clear();
    for (tx_packet* p : w.tx_pkts) {
        hv::copy_segment s{};
        s.source.foreign.ref = p->req[0].gref;
        s.source.foreign.offset = p->req[0].offset;
        s.source.foreign.domid = core.dom;
        s.dest.virt = p->hdr;
        s.len = p->hdr_len;
        s.flags = GNTCOPY_source_gref;
        segs.push_back(s);
    }
    const int rc = tab->copy(segs.data(), uint32_t(segs.size()));
    bump(core.ctr.grant_copy_batches);
    bump(core.ctr.grant_copy_segments, segs.size());
    bump(core.ctr.header_copy_segments, segs.size());
    return rc;
}

// The switch decision for every packet of the batch: learn the source MAC,
// look up the destinations, and hand the frame to each (switch_to).
void datapath::impl::switch_batch(worker& w, const std::shared_ptr<queue>& qp, int hdr_rc) noexcept {
    vif_core& core = *qp->core;
    w.tx_dels.clear();
    w.tx_convs.clear();
    w.touched.clear();
    std::shared_ptr<vif> self;
    {
        std::lock_guard g(vifs_lock);
        auto it = vifs.find({core.dom, core.devid});
        if (it != vifs.end() && it->second->core.get() == &core) self = it->second;
    }
    const time_point now = clock_type::now();
    // A batch is almost always one flow: learn a source MAC and look a
    // destination up once per run of equal MACs, not once per frame. A
    // learn invalidates the remembered lookup (it may have moved that MAC).
    uint8_t learned[6], looked_up[6];
    bool have_learned = false, have_dests = false;
    rx_hold hold; // a destination's rx_lock across a run of frames to it
    uint64_t packets = 0, bytes = 0, slots = 0;
    for (uint32_t k = 0; k < w.tx_pkts.size(); ++k) {
        tx_packet& p = *w.tx_pkts[k];
        const int16_t st = hdr_rc < 0 ? int16_t(GNTST_general_error) : w.hdr_segs[k].status;
        // Received (it passed tx_check) whatever happens next: a frame whose
        // header cannot be read is counted in tx_packets and in
        // drop_copy_error, so the counters add up (docs/ARCHITECTURE.md,
        // "Counters").
        ++packets;
        bytes += p.len;
        slots += p.nslots;
        if (st != GNTST_okay) {
            // xenvif_tx_check_gop: the header could not be read.
            if (core.copy_log.allow())
                ZC_LOG(warn, tag, "vif%u.%u: header copy failed: %s", unsigned(core.dom), core.devid,
                       hv::gntst_name(st));
            p.status = NETIF_RSP_ERROR;
            bump(core.ctr.drop_copy_error);
            continue;
        }
        // checksum_setup / xenvif_set_skb_gso (netback/offload.hpp).
        if (check_offload(p.hdr, p.hdr_len, p.len, p.txflags, p.gso_type, p.gso_size, &p.off) != offload_verdict::ok) {
            bump(core.ctr.drop_bad_offload);
            if (core.drop_log.allow())
                ZC_LOG(info, tag, "vif%u.%u: checksum/GSO metadata does not match the frame (%u bytes, gso %u/%u)",
                       unsigned(core.dom), core.devid, p.len, unsigned(p.gso_type), unsigned(p.gso_size));
            continue;
        }
        const uint8_t* dst = p.hdr;
        const uint8_t* src = p.hdr + 6;
        // The vif scripts' antispoofing (source_check.hpp): dropped, counted,
        // answered OKAY as the guest's frame left (ebtables drops after netback).
        if (const auto v = check_source(core.params.mac, core.params.ipv4, p.hdr, p.hdr_len);
            v != source_verdict::ok) {
            bump(v == source_verdict::bad_mac ? core.ctr.drop_spoofed_mac : core.ctr.drop_spoofed_ip);
            continue;
        }
        if (self && !(have_learned && std::memcmp(src, learned, 6) == 0)) {
            hold.release();
            sw.learn(src, self);
            std::memcpy(learned, src, 6);
            have_learned = true;
            have_dests = false;
        }
        if (!(have_dests && std::memcmp(dst, looked_up, 6) == 0)) {
            if (!w.direct_pend.empty()) direct_run(w, qp, hold); // to the destinations it was switched to
            hold.release();
            // Deliveries made so far borrow these vifs' queues until the
            // batch is published.
            for (auto& v : w.dests) w.batch_vifs.push_back(std::move(v));
            sw.lookup(dst, self.get(), w.dests);
            std::memcpy(looked_up, dst, 6);
            have_dests = true;
        }
        if (p.direct) {
            w.direct_pend.push_back(&p); // direct.cpp direct_run, in order with the rest
            continue;
        }
        if (!w.direct_pend.empty()) direct_run(w, qp, hold);
        for (auto& dv : w.dests) switch_to(w, qp, p, *dv, now, hold);
        if (w.dests.size() > 1) bump(core.ctr.flood_extra, w.dests.size() - 1);
        if (w.dests.empty()) {
            bump(core.ctr.drop_no_dest);
            if (core.drop_log.allow())
                ZC_LOG(info, tag,
                       "vif%u.%u: no destination for %02x:%02x:%02x:%02x:%02x:%02x from "
                       "%02x:%02x:%02x:%02x:%02x:%02x (%u bytes, %u slots, first %u)",
                       unsigned(core.dom), core.devid, dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0],
                       src[1], src[2], src[3], src[4], src[5], p.len, unsigned(p.nslots), unsigned(p.hdr_len));
        }
    }
    if (!w.direct_pend.empty()) direct_run(w, qp, hold);
    bump(core.ctr.tx_packets, packets);
    bump(core.ctr.tx_bytes, bytes);
    bump(core.ctr.tx_slots, slots);
}

// One frame to one destination vif: direct into its RX ring when nothing
// waits there and it has room (a delivery of this batch), else behind the
// frames waiting for its RX buffers.
void datapath::impl::switch_to(worker& w, const std::shared_ptr<queue>& qp, tx_packet& p, vif& dv, time_point now,
                               rx_hold& h) noexcept {
    if (dv.up) {
        h.release();
        uplink_out(w, *qp, p, *dv.up);
        return;
    }
    vif_core& dc = *dv.core;
    if (dc.disabled.load(std::memory_order_relaxed) || dc.removed.load(std::memory_order_relaxed)) {
        bump(dc.ctr.drop_disabled);
        return;
    }
    const offload_verdict v = check_destination(p.off, p.len, p.gso_type, dc.params);
    if (v == offload_verdict::no_csum || v == offload_verdict::over_mtu) {
        bump(v == offload_verdict::no_csum ? qp->core->ctr.drop_no_csum : qp->core->ctr.drop_mtu);
        return;
    }
    // A checksum the destination cannot complete: we do, on the frame's
    // bytes in bounce buffers (offload.hpp, finish_conversions).
    const bool csum = v == offload_verdict::complete_csum;
    const rx_plan plan = plan_for(p.len, p.gso_type, dc);
    if (!plan.ok) {
        bump(qp->core->ctr.drop_unsupported);
        return;
    }
    const std::shared_ptr<queue>& dq = dv.queues[qp->index % dv.queues.size()];
    note_destination(*qp, dq); // placement.cpp: where this queue's frames go
    h.take(*dq);
    if (dq->rx_dead || dq->stalled) {
        bump(dc.ctr.drop_disabled);
        return;
    }
    if (opt.force_bounce || csum || dq->count != 0 || dq->rx.unconsumed() < plan.nring) {
        enqueue_waiting(w, qp, p, dq, plan.nring, now, csum);
        return;
    }
    delivery& d = add_delivery(w, dq, qp, p);
    d.nslots = p.nslots;
    d.gso_size = p.gso_size;
    d.gso_type = p.gso_type;
    reserve_rx(d, *dq, plan);
}

// Under dq's rx_lock: queue the frame behind the frames already waiting,
// bounded in entries, bytes and the RX slots they need (XSA-392: never an
// unbounded queue for a frontend that does not post buffers). It keeps the
// source's slots (zero copy) until delivered or converted to bounce buffers
// (convert_held), unless this destination, taking nothing for idle_ms,
// holds held_tx_slots of its sources' TX slots already:
// then it moves to bounce buffers at once, or is dropped (counted) when
// they are over a quota, so that the source keeps slots for its other
// destinations. `csum`: its checksum is to be completed, which needs its
// bytes in bounce buffers: it moves to them at once, or is dropped.
void datapath::impl::enqueue_waiting(worker& w, const std::shared_ptr<queue>& qp, tx_packet& p,
                                     const std::shared_ptr<queue>& dq, uint32_t nring, time_point now,
                                     bool csum) noexcept {
    vif_core& dc = *dq->core;
    if (dq->count >= dq->cap || dq->held_bytes + p.len > opt.rx_queue_bytes ||
        dq->held_slots + nring > rx_queue_slots) {
        bump(dc.ctr.drop_rx_full);
        return;
    }
    const uint32_t tx_slots = p.nslots + p.extra_count;
    const bool over = !opt.force_bounce && dq->count != 0 && dq->held_tx + tx_slots > held_tx_max &&
                      now - dq->last_rx >= std::chrono::milliseconds(opt.idle_ms);
    const bool first = dq->count == 0;
    const bool first_held = dq->nforeign == 0; // no zero-copy frame's hold timer is armed yet
    if (first) dq->last_rx = now; // stall clock starts when something waits
    rx_item& it = dq->at(dq->count);
    it = rx_item{};
    it.src = qp;
    it.pkt = &p;
    p.refs.fetch_add(1, std::memory_order_relaxed);
    it.src_core = qp->core;
    it.nslots = p.nslots;
    it.len = p.len;
    it.gso_size = p.gso_size;
    it.txflags = p.txflags;
    it.gso_type = p.gso_type;
    it.nring = uint8_t(nring);
    it.held_len = p.len;
    it.complete_csum = csum;
    it.tx_slots = uint8_t(tx_slots);
    dq->held_bytes += p.len;
    dq->held_slots += nring;
    dq->held_tx += tx_slots;
    it.seq = dq->next_seq++;
    it.queued = now;
    it.expires = now + std::chrono::milliseconds(opt.drain_timeout_ms);
    it.hold_until = now + std::chrono::milliseconds(opt.hold_ms);
    ++dq->count;
    ++dq->nforeign;
    dq->note_waiting();
    // The double-copy baseline converts at once, and so does a frame over
    // held_tx_slots; otherwise the owner's timers decide (convert_held).
    if (opt.force_bounce || over || csum) {
        conversion& cv = w.tx_convs.emplace_back();
        if (const bounce_rc rc = start_conversion(dq, it, cv); rc != bounce_rc::ok) {
            w.tx_convs.pop_back();
            if (over || csum) {
                // No bounce buffers for it: it does not wait on the source's
                // slots either. Taken off the tail again, counted.
                count_bounce_drop(rc, *qp->core, dc);
                dq->unpin(it);
                dq->held_bytes -= it.held_len;
                dq->held_slots -= it.nring;
                --dq->count;
                dq->note_waiting();
                it = rx_item{};
                p.refs.fetch_sub(1, std::memory_order_relaxed); // the batch still holds one
                return;
            }
        }
    }
    // A frame here only for its checksum (RX had room) did not wait.
    if (!opt.force_bounce && (!csum || !first || dq->rx.unconsumed() < nring)) bump(dc.ctr.queued);
    // Tell the frontend to notify when it posts (xenvif_rx_ring_slots_available).
    dq->rx.request_event_after(dq->rx.req_prod());
    // Another worker's queue: its owner arms the timers of what waits
    // (service_rx, convert_held), so it needs waking when they change: the
    // first item, the first zero-copy item (behind bounced ones, which have
    // no hold timer: without the wake-up its hold_ms went unnoticed and it
    // kept the source's slots until the drain timeout), a conversion
    // started, or the source running short (the pressure_hold_us timer).
    // Zero-copy items behind a zero-copy one are held and expire after it;
    // waking the owner for every batch made each unicast batch a
    // cross-worker wake-up while a receiver was behind.
    if (std::find(w.touched.begin(), w.touched.end(), dq) == w.touched.end()) w.touched.push_back(dq);
    dq->rx_rearm.store(true, std::memory_order_relaxed); // its timers (service_rx) take the new frame
    if (dq->w.load(std::memory_order_relaxed) != &w &&
        (first || (first_held && !it.bounced && !it.converting) || opt.force_bounce || runs_short(*qp, 0)))
        dq->rx_kick.store(true, std::memory_order_relaxed);
}

// The batch's copies, then its references: packets nobody else holds are
// complete now.
void datapath::impl::finish_tx_batch(worker& w, const std::shared_ptr<queue>& qp) noexcept {
    flush_uplink_tx(w);
    copy_and_publish(w, w.tx_dels, w.tx_convs);
    // Packets of earlier batches this pass completed (conversions) are
    // answered first, as before: a frontend sees its older frames done first.
    flush_done(w);
    // The batch's own references: its deliveries are published, what
    // nobody else holds is complete now, answered in one pass.
    std::vector<tx_packet*>& last = w.done_batch;
    last.clear();
    for (tx_packet* p : w.tx_pkts)
        if (drop_ref(*p)) last.push_back(p);
    if (!last.empty()) complete_tx(w, *qp, last.data(), uint32_t(last.size()));
    // Bounced frames are ready: deliver them if the destination has room,
    // and let the owners of the other queues re-arm their timers.
    for (auto& dq : w.touched) {
        drain_rx(w, dq);
        if (dq->rx_kick.load(std::memory_order_relaxed)) kick_owner(*dq, &w);
    }
    // Do not keep queues or vifs alive past the batch (remove_vif).
    w.touched.clear();
    w.dests.clear();
    w.batch_vifs.clear();
}

// ---------------------------------------------------------------------------
// TX completion: the responses of a packet go out once every copy out of its
// pages is done (xenvif_idx_release / make_tx_response / push_tx_responses).

void datapath::impl::put_ref(worker& w, const std::shared_ptr<queue>& src, tx_packet* pkt) noexcept {
    if (!pkt || !src) return;
    if (!drop_ref(*pkt)) return;
    w.done.emplace_back(src, pkt);
}

void datapath::impl::put_ref(worker& w, std::shared_ptr<queue>&& src, tx_packet* pkt) noexcept {
    if (!pkt || !src) return;
    if (!drop_ref(*pkt)) return;
    w.done.emplace_back(std::move(src), pkt);
}

void datapath::impl::flush_done(worker& w) noexcept {
    auto& list = w.done;
    if (list.empty()) return;
    // Usually every packet is from one queue: skip the sort then.
    auto by_queue = [](const auto& a, const auto& b) { return a.first.get() < b.first.get(); };
    if (!std::is_sorted(list.begin(), list.end(), by_queue)) std::stable_sort(list.begin(), list.end(), by_queue);
    std::vector<tx_packet*>& batch = w.done_batch;
    for (size_t i = 0; i < list.size();) {
        queue& q = *list[i].first;
        batch.clear();
        size_t end = i;
        while (end < list.size() && list[end].first.get() == &q) batch.push_back(list[end++].second);
        complete_tx(w, q, batch.data(), uint32_t(batch.size()));
        i = end;
    }
    list.clear();
}

void datapath::impl::complete_tx(worker& w, queue& q, tx_packet* const* pkts, uint32_t n) noexcept {
    bool notify = false;
    {
        std::lock_guard g(q.tx_lock);
        uint32_t slots = 0;
        for (uint32_t i = 0; i < n; ++i) {
            tx_packet& p = *pkts[i];
            slots += p.nslots + p.extra_count;
            if (!q.tx_dead) {
                tx_builder b{q};
                b.respond(p.req[0], p.extra_count, p.status);
                for (uint32_t s = 1; s < p.nslots; ++s) b.respond(p.req[s], 0, p.status);
            }
            q.free_pkts.push_back(p.index);
        }
        q.pending_slots.fetch_sub(slots, std::memory_order_relaxed);
        if (!q.tx_dead) notify = q.tx.push_responses_and_check_notify();
    }
    if (notify) notify_frontend(q, false); // the port is bound on the owner's handle
    // Slots came free: the owner may consume requests it had to leave.
    q.tx_kick.store(true, std::memory_order_relaxed);
    kick_owner(q, &w);
}

} // namespace zc::netback
