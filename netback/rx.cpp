// SPDX-License-Identifier: MIT
// RX: a destination queue's RX ring and the frames waiting for its buffers.
// The RX slot layout of a frame (plan_for), publishing responses in ring
// order (Linux xenvif_rx_data_slot / xenvif_rx_extra_slot /
// xenvif_rx_copy_flush), draining waiting frames (xenvif_rx_action), and
// the timers: drop of expired frames (xenvif_rx_queue_drop_expired), stall
// detection (xenvif_rx_queue_stalled / xenvif_rx_queue_ready, as fixed for
// XSA-392) and the move of long-held frames to bounce buffers.
#include <algorithm>

#include "netback/common.hpp"

namespace zc::netback {

// Linux xenvif_rx_skb / xenvif_rx_data_slot: every RX page is filled
// before the next one (xenvif_rx_next_chunk), so a frame needs
// ceil(len / 4096) data slots whatever its TX layout, and its headers are in
// the first slot unless the frame is shorter. A netfront without SG takes
// one page only.
rx_plan plan_for(uint32_t len, uint8_t gso_type, const vif_core& dst) {
    rx_plan p;
    const uint32_t n = std::max<uint32_t>(1, (len + hv::page_size - 1) / hv::page_size);
    if (n > 1 && !dst.params.feature_sg) return p; // needs SG the frontend did not ask for
    p.ndata = uint8_t(n);
    if (gso_type != XEN_NETIF_GSO_TYPE_NONE) {
        // Linux xenvif_rx_next_skb: the GSO extra goes only to a frontend that
        // negotiated the type (gso_mask); otherwise Linux segments in software,
        // which a copy-only path cannot do: drop, counted.
        const bool want = gso_type == XEN_NETIF_GSO_TYPE_TCPV4 ? dst.params.feature_gso_tcpv4
                                                                : dst.params.feature_gso_tcpv6;
        if (!want) return p;
        p.extra = true;
    }
    p.nring = uint8_t(p.ndata + (p.extra ? 1 : 0));
    p.ok = true;
    return p;
}

uint32_t needed_of(const rx_item& it, const vif_core& dc, rx_plan* out) {
    rx_plan p = plan_for(it.len, it.gso_type, dc);
    if (out) *out = p;
    return p.ok ? p.nring : 1;
}

void reserve_rx(delivery& d, queue& dq, const rx_plan& plan) noexcept {
    d.extra = plan.extra;
    d.ndata = plan.ndata;
    d.nring = plan.nring;
    d.first = dq.rx.req_cons;
    for (uint32_t i = 0; i < plan.nring; ++i)
        d.req[i] = dq.rx.read_request<netif_rx_request>(d.first + i); // RING_COPY_REQUEST
    dq.rx.req_cons += plan.nring;
}

// ---------------------------------------------------------------------------
// Publish: the responses of copied deliveries, each RX ring locked and
// pushed once per pass.

void datapath::impl::publish(worker& w, std::vector<delivery>& dels) noexcept {
    // Group by destination so that each RX ring is locked and pushed once.
    // A batch almost always goes to one destination, and when it does not,
    // an index is ordered rather than the deliveries themselves: each is
    // about a kilobyte with three shared_ptrs, and stable_sort moving them
    // was a fifth of zc-netback's time at 64-byte frames. Stable, so that
    // each destination's deliveries keep their ring order.
    std::vector<uint32_t>& order = w.order;
    order.resize(dels.size());
    bool grouped = true;
    for (uint32_t k = 0; k < dels.size(); ++k) {
        order[k] = k;
        if (k && dels[k].dq < dels[k - 1].dq) grouped = false;
    }
    if (!grouped)
        std::stable_sort(order.begin(), order.end(),
                         [&dels](uint32_t a, uint32_t b) { return dels[a].dq < dels[b].dq; });
    const time_point now = clock_type::now();
    for (size_t i = 0; i < order.size();) {
        const queue* dq = dels[order[i]].dq;
        size_t end = i;
        while (end < order.size() && dels[order[end]].dq == dq) ++end;
        publish_to(w, dels, i, end, now);
        i = end;
    }
    dels.clear();
}

// The deliveries dels[order[begin..end)], all to one queue.
void datapath::impl::publish_to(worker& w, std::vector<delivery>& dels, size_t begin, size_t end,
                                time_point now) noexcept {
    const std::vector<uint32_t>& order = w.order;
    queue& dq = *dels[order[begin]].dq;
    bool notify = false;
    {
        std::lock_guard g(dq.rx_lock);
        if (!dq.rx_dead) {
            rx_tally t;
            for (size_t k = begin; k < end; ++k) write_rx_responses(dq, dels[order[k]], t);
            vif_core& dc = *dq.core;
            bump(dc.ctr.rx_packets, t.packets);
            bump(dc.ctr.rx_bytes, t.bytes);
            bump(dc.ctr.rx_slots, t.slots);
            // Responses go out in ring order: another worker may still be
            // copying into slots reserved before ours.
            while (dq.rx.rsp_prod_pvt != dq.rx.req_cons && dq.done[dq.rx.rsp_prod_pvt & (ring_slots - 1)]) {
                dq.done[dq.rx.rsp_prod_pvt & (ring_slots - 1)] = 0;
                ++dq.rx.rsp_prod_pvt;
            }
            notify = dq.rx.push_responses_and_check_notify();
            dq.last_rx = now;
        } else {
            // The destination went away between reservation and publish.
            for (size_t k = begin; k < end; ++k) {
                bump(dq.core->ctr.drop_disabled);
                dels[order[k]].direct_failed = dels[order[k]].direct;
            }
        }
    }
    if (notify) notify_frontend(dq, true);
    for (size_t k = begin; k < end; ++k) {
        delivery& d = dels[order[k]];
        if (d.direct_failed) direct_cancel(w, *dq.core, &d.cookie, 1); // its descriptor was not delivered
        if (d.bounced) {
            free_bounce(d.seg, d.nslots, *d.src_core, *dq.core, d.bounce_bytes);
        } else if (d.owns_ref) {
            put_ref(w, d.src_hold, d.pkt);
        } // else it borrowed its TX batch's reference (see delivery)
    }
}

// Under dq's rx_lock: the RX responses of one delivery, marked done; what
// it delivered is added to `t` (the caller bumps the counters once).
void datapath::impl::write_rx_responses(queue& dq, delivery& d, rx_tally& t) noexcept {
    if (d.direct) {
        write_direct_responses(dq, d, t); // direct.cpp
        return;
    }
    bool failed = false;
    for (uint32_t j = 0; j < d.nring; ++j) {
        const RING_IDX idx = d.first + j;
        if (d.extra && j == 1) {
            // xenvif_rx_extra_slot: the GSO extra after the first data slot.
            netif_extra_info e{};
            e.type = XEN_NETIF_EXTRA_TYPE_GSO;
            e.flags = 0;
            e.u.gso.size = d.gso_size;
            e.u.gso.type = d.gso_type;
            dq.rx.write_response(idx, e);
        } else {
            // xenvif_rx_data_slot.
            netif_rx_response r{};
            r.id = d.req[j].id;
            r.offset = 0;
            const uint32_t last_data = d.extra && d.nring == 2 ? 0 : d.nring - 1u;
            uint16_t fl = j == last_data ? 0 : NETRXF_more_data;
            if (j == 0) {
                if (d.txflags & NETTXF_csum_blank)
                    fl |= NETRXF_csum_blank | NETRXF_data_validated;
                else if (d.txflags & NETTXF_data_validated)
                    fl |= NETRXF_data_validated;
                if (d.extra) fl |= NETRXF_extra_info;
            }
            r.flags = fl;
            // xenvif_rx_copy_flush: a failed copy's status replaces the length.
            r.status = d.slot_status[j] == GNTST_okay ? int16_t(d.slot_len[j]) : d.slot_status[j];
            if (d.slot_status[j] != GNTST_okay) failed = true;
            dq.rx.write_response(idx, r);
        }
        dq.done[idx & (ring_slots - 1)] = 1;
    }
    if (failed && d.rx_grant_fault) {
        bump(dq.core->ctr.drop_rx_grant); // the receiver's own grant (run_copy_batch)
    } else if (failed || d.len == 0) {
        bump(d.src_core->ctr.drop_copy_error);
    } else {
        ++t.packets;
        t.bytes += d.len;
        t.slots += d.ndata;
    }
}

// ---------------------------------------------------------------------------
// Frames waiting for RX buffers.

// Under the queue's rx_lock: release what an item holds (a converting
// item's job owns its buffers and reference, finds the item gone and
// releases them itself); packet references go to `refs`. `dst` is the
// queue's vif (its bounce quota).
void datapath::impl::drop_item(rx_item& it, vif_core& dst, packet_refs& refs) noexcept {
    if (it.converting) {
    } else if (it.bounced) {
        free_bounce(it.bounce, it.nslots, *it.src_core, dst, it.bounce_bytes);
        it.bounce_bytes = 0;
    } else if (it.pkt) {
        refs.emplace_back(std::move(it.src), it.pkt);
    }
    it.pkt = nullptr; // pop_head resets the rest
}

// Under dq's rx_lock: a zero-copy item that may neither keep its source's
// slots nor move to bounce buffers gives the slots back now; its drop was
// counted by the caller. It stays in place (the queue is in order) as an
// empty bounced item that the drain and drop_expired pop uncounted.
void datapath::impl::discard_held(queue& dq, rx_item& it, packet_refs& refs) noexcept {
    dq.unpin(it);
    refs.emplace_back(std::move(it.src), it.pkt);
    it.pkt = nullptr;
    it.bounced = true;
    it.nslots = 0;
    it.len = 0;
}

// Deliver waiting frames while the RX ring has room (xenvif_rx_action).
void datapath::impl::drain_rx(worker& w, const std::shared_ptr<queue>& dqp) noexcept {
    std::vector<delivery> dels;
    packet_refs drops;
    for (;;) {
        if (!take_rx_items(dqp, dels, drops)) break;
        for (auto& r : drops) put_ref(w, r.first, r.second);
        drops.clear();
        const bool full = dels.size() >= opt.batch;
        if (!dels.empty()) {
            std::vector<conversion> none;
            copy_and_publish(w, dels, none);
        }
        if (!full) break;
    }
    flush_done(w);
}

// Takes dq's rx_lock: up to a batch of waiting frames that fit in the RX
// ring become deliveries; those that can no longer go are dropped (counted).
// False when the queue is dead.
bool datapath::impl::take_rx_items(const std::shared_ptr<queue>& dqp, std::vector<delivery>& dels,
                                   packet_refs& drops) noexcept {
    queue& dq = *dqp;
    vif_core& dc = *dq.core;
    std::lock_guard g(dq.rx_lock);
    if (dq.rx_dead) return false;
    while (dq.count > 0 && dels.size() < opt.batch) {
        rx_item& it = dq.at(0);
        if (it.converting) break; // keep the order; its job finishes soon
        const bool src_gone = !it.bounced && (!it.src || it.src->core->removed.load(std::memory_order_relaxed) ||
                                              mgr->revoked(it.pkt->seg[0]));
        rx_plan plan;
        needed_of(it, dc, &plan);
        if (src_gone || !plan.ok || it.len == 0) {
            if (src_gone) bump(it.src_core->ctr.drop_copy_error);
            else if (!plan.ok) bump(it.src_core->ctr.drop_unsupported);
            if (!it.bounced) dq.unpin(it);
            drop_item(it, dc, drops);
            dq.pop_head();
            continue;
        }
        if (dq.rx.unconsumed() < plan.nring) {
            // xenvif_rx_ring_slots_available: ask for an event, re-check.
            dq.rx.request_event_after(dq.rx.req_prod());
            if (dq.rx.unconsumed() < plan.nring) break;
        }
        delivery& d = dels.emplace_back();
        d.dq = &dq; // kept alive by drain_rx's caller
        d.core_hold = std::move(it.src_core);
        d.src_core = d.core_hold.get();
        d.bounced = it.bounced;
        d.nslots = it.nslots;
        if (it.bounced) {
            std::copy(it.bounce, it.bounce + it.nslots, d.seg);
            d.bounce_bytes = it.bounce_bytes; // the delivery's now (publish_to frees it)
            it.bounce_bytes = 0;
        } else {
            d.src_hold = std::move(it.src);
            d.src = d.src_hold.get();
            d.pkt = it.pkt;
            d.owns_ref = true; // the item's reference
            dq.unpin(it);
        }
        d.len = it.len;
        d.gso_size = it.gso_size;
        d.txflags = it.txflags;
        d.gso_type = it.gso_type;
        reserve_rx(d, dq, plan);
        dq.pop_head();
    }
    return true;
}

// The queue's timers, run by its owner when they are due, after its RX
// event or kick, or when frames were queued for it (worker.cpp
// poll_timeout); returns when they want to run next.
time_point datapath::impl::service_rx(worker& w, const std::shared_ptr<queue>& dqp) noexcept {
    queue& dq = *dqp;
    vif_core& dc = *dq.core;
    time_point next = time_point::max();
    packet_refs drops;
    std::vector<conversion> convs;
    bool stalled_now = false;
    {
        std::lock_guard g(dq.rx_lock);
        if (dq.rx_dead) return next;
        const time_point now = clock_type::now();
        drop_expired(dq, now, drops);
        if (opt.stall_timeout_ms) stalled_now = check_rx_stall(dq, now, next);
        convert_held(dqp, now, next, convs, drops);
        if (dq.count) next = std::min(next, dq.at(0).expires);
        dq.note_waiting(); // `stalled` may have changed
    }
    if (stalled_now && dc.stall_log.allow())
        ZC_LOG(info, tag, "vif%u.%u: guest RX stalled (too few RX slots for %u ms)", unsigned(dc.dom), dc.devid,
               opt.stall_timeout_ms);
    for (auto& r : drops) put_ref(w, r.first, r.second);
    if (!convs.empty()) {
        std::vector<delivery> none;
        copy_and_publish(w, none, convs);
    }
    flush_done(w);
    drain_rx(w, dqp);
    return next;
}

// Under rx_lock: drop (counted) what a disabled vif would receive, and
// frames that waited drain_timeout (xenvif_rx_queue_drop_expired).
void datapath::impl::drop_expired(queue& dq, time_point now, packet_refs& drops) noexcept {
    vif_core& dc = *dq.core;
    auto pop_head = [&](std::atomic<uint64_t>& counter) {
        rx_item& it = dq.at(0);
        if (!it.bounced && !it.converting) dq.unpin(it);
        // An empty bounced item's loss was counted already (a failed fallback
        // copy, or discard_held).
        if (!(it.bounced && it.len == 0)) bump(counter);
        drop_item(it, dc, drops);
        dq.pop_head();
    };
    if (dc.disabled.load(std::memory_order_relaxed)) {
        // A disabled vif receives nothing: give every waiting frame's
        // source its slots back.
        while (dq.count && !dq.at(0).converting) pop_head(dc.ctr.drop_disabled);
    }
    while (dq.count && !dq.at(0).converting && dq.at(0).expires <= now) pop_head(dc.ctr.drop_rx_full);
}

// Under rx_lock: stall detection, XSA-392. Compares the free slots with what
// the frame at the head needs, not with 1 (a frontend keeping a single slot
// free would otherwise never count as stalled). True when it just stalled.
bool datapath::impl::check_rx_stall(queue& dq, time_point now, time_point& next) noexcept {
    vif_core& dc = *dq.core;
    const uint32_t avail = dq.rx.unconsumed();
    const uint32_t needed = dq.count ? needed_of(dq.at(0), dc) : 0;
    const auto stall = std::chrono::milliseconds(opt.stall_timeout_ms);
    if (!dq.stalled && dq.count && avail < needed) {
        if (now - dq.last_rx >= stall) {
            // xenvif_queue_carrier_off: new frames for this queue are
            // dropped at once; what waits expires as usual.
            dq.stalled = true;
            bump(dc.ctr.rx_stalls);
            dq.rx.request_event_after(dq.rx.req_prod());
            return true;
        }
        next = std::min(next, dq.last_rx + stall);
    } else if (dq.stalled && avail >= needed) {
        // xenvif_queue_ready / xenvif_queue_carrier_on: enough slots for
        // the head frame (or nothing waits any more).
        dq.stalled = false;
        dq.last_rx = now;
    } else if (dq.stalled) {
        dq.rx.request_event_after(dq.rx.req_prod());
    }
    return false;
}

// Under rx_lock: a zero-copy frame moves to bounce buffers (copy.cpp) and
// gives the source its TX slots back when it has held them hold_ms, or
// pressure_hold_us while its source runs short, this destination has
// published nothing for as long and has room for what the source would
// send next (half of rx_queue_bytes), or while this destination, taking
// nothing for idle_ms, holds more of its sources' TX slots than
// held_tx_slots. A destination that keeps taking frames paces its sources
// instead (each frame copied once). A frame that must move but gets no
// bounce buffers (over the sender's or this vif's quota, or the pool dry)
// keeps waiting while this destination takes frames (it paces the source,
// its frames leave as it posts buffers); once it has taken nothing for
// idle_ms the frame is dropped, counted: the source gets its
// slots back either way, as Linux drops what does not fit a vif's RX queue.
void datapath::impl::convert_held(const std::shared_ptr<queue>& dqp, time_point now, time_point& next,
                                  std::vector<conversion>& convs, packet_refs& drops) noexcept {
    queue& dq = *dqp;
    const auto pressure_hold = std::chrono::microseconds(opt.pressure_hold_us);
    const time_point idle_since = dq.last_rx;
    const bool room = dq.held_bytes <= opt.rx_queue_bytes / 2;
    const auto idle_after = std::chrono::milliseconds(opt.idle_ms);
    const bool idle = now - idle_since >= idle_after;
    if (!idle && dq.held_tx > held_tx_max) next = std::min(next, idle_since + idle_after);
    // Slots this pass gives back per source: convert only what it needs.
    std::pair<const queue*, uint32_t> freeing[4] = {};
    auto freeing_of = [&freeing](const queue* src) -> uint32_t* {
        for (auto& f : freeing)
            if (f.first == src || !f.first) {
                f.first = src;
                return &f.second;
            }
        return nullptr; // more sources than tracked: count nothing for them
    };
    for (uint32_t i = 0; i < dq.count; ++i) {
        rx_item& it = dq.at(i);
        if (it.bounced || it.converting) continue;
        bool go = it.hold_until <= now || (idle && dq.held_tx > held_tx_max);
        uint32_t* fr = it.src ? freeing_of(it.src.get()) : nullptr;
        if (!go && room && it.src && runs_short(*it.src, fr ? *fr : 0)) {
            const time_point at = std::max(idle_since, it.queued) + pressure_hold;
            if (at <= now) go = true;
            else next = std::min(next, at);
        }
        if (go) {
            conversion& cv = convs.emplace_back();
            const uint32_t slots = it.tx_slots;
            if (const bounce_rc rc = start_conversion(dqp, it, cv); rc != bounce_rc::ok) {
                convs.pop_back();
                if (!idle) { // retried when it would count as idle
                    next = std::min(next, std::max(idle_since + idle_after, now + std::chrono::milliseconds(1)));
                    break;
                }
                count_bounce_drop(rc, *it.src_core, *dq.core);
                discard_held(dq, it, drops);
            }
            if (fr) *fr += slots;
        } else {
            next = std::min(next, it.hold_until);
        }
    }
}

} // namespace zc::netback
