// SPDX-License-Identifier: MIT
// The direct path (docs/ARCHITECTURE.md, "Direct path (guest to guest)";
// wire format ring/zc_direct.hpp): a frame whose payload the sender granted
// to the destination's domain reaches the destination as its headers plus a
// descriptor; zc-netback copies no payload. The sender's TX request stays
// outstanding under a cookie of the receiver's (direct_rx) until the
// receiver puts the cookie on its release ring; then the TX response goes
// out. Everything a receiver can write (its release ring) is read once and
// checked; a cookie only ever matches a descriptor given to that receiver.
#include <algorithm>
#include <cerrno>

#include "netback/common.hpp"

namespace zc::netback {

namespace zd = ring::zc_direct;

namespace {

constexpr uint16_t gen_mask = uint16_t((1u << (16 - direct_cookie_bits)) - 1);
constexpr uint32_t direct_rx_slots = 3; // the headers, rx_grant, rx_desc

uint16_t cookie_of(uint32_t idx, uint16_t gen) noexcept { return uint16_t((gen << direct_cookie_bits) | idx); }

// Under d.lock: the outstanding count of sender `s` (a new entry at 0).
uint32_t& sender_count(direct_rx& d, const void* s) noexcept {
    auto& v = d.per_sender;
    if (!v.empty() && v.back().first == s) return v.back().second;
    for (auto& e : v)
        if (e.first == s) return e.second;
    return v.emplace_back(s, 0).second;
}

// Under d.lock: sender `s` was listed by sender_count but holds nothing.
void sender_done_empty(direct_rx& d, const void* s) noexcept {
    auto& v = d.per_sender;
    for (size_t i = v.size(); i-- > 0;)
        if (v[i].first == s && v[i].second == 0) {
            v[i] = v.back();
            v.pop_back();
            return;
        }
}

// Under d.lock: one of sender `s`'s descriptors is no longer outstanding.
void sender_done(direct_rx& d, const void* s) noexcept {
    auto& v = d.per_sender;
    for (size_t i = v.size(); i-- > 0;) {
        if (v[i].first != s) continue;
        if (--v[i].second == 0) {
            v[i] = v.back();
            v.pop_back();
        }
        return;
    }
}

// Under d.lock: the entry `cookie` names, if it is outstanding, leaves the
// table; its sender's queue and packet go to `out`.
bool take_locked(direct_rx& d, uint16_t cookie, packet_refs& out) noexcept {
    const uint32_t idx = cookie & (direct_cookies - 1);
    direct_entry& e = d.e[idx];
    if (!e.src || e.gen != (cookie >> direct_cookie_bits)) return false;
    out.emplace_back(std::move(e.src), e.pkt);
    e.src.reset();
    e.pkt = nullptr;
    e.gen = uint16_t((e.gen + 1) & gen_mask);
    sender_done(d, e.sender);
    e.sender = nullptr;
    d.free.push_back(uint16_t(idx));
    return true; // the caller lowers `outstanding` once for all it took
}

} // namespace

// add_vif: map the frontend's release ring (its zc-direct-release-ring-ref).
int datapath::impl::attach_direct(vif_core& c, std::string* why) noexcept {
    if (!c.params.zc_direct) return 0;
    auto d = std::make_unique<direct_rx>();
    hv::domid_t dom = c.dom;
    int16_t st = 0;
    auto m = tab->map(1, &dom, &c.params.zc_release_ring_ref, true, &st);
    if (!m) {
        if (why)
            *why = format("cannot map zc-direct-release-ring-ref %u: %s", c.params.zc_release_ring_ref,
                          hv::gntst_name(st));
        return -EFAULT;
    }
    d->map = *m;
    if (!d->ring.attach(d->map.addr)) {
        (void)tab->unmap(d->map);
        if (why) *why = "release ring claims more requests than it holds";
        return -EINVAL;
    }
    d->free.reserve(direct_cookies);
    d->per_sender.reserve(16);
    for (uint32_t i = direct_cookies; i-- > 0;) d->free.push_back(uint16_t(i));
    c.direct = std::move(d);
    return 0;
}

// switch_batch, for a run of direct-path requests in a row with the same
// destinations (w.direct_pend, switched to w.dests): deliver each one's
// descriptor to the one destination its headers switch to, if that is the
// domain the payload is granted to and it is on the direct path and ready;
// otherwise answer NETIF_RSP_ERROR (the sender sends it again on the
// ordinary path). The run takes its cookies under one hold of the
// receiver's table lock and its RX slots under one hold of the queue's
// rx_lock (not both per frame: bench/PROFILE.md), in order, so a refused
// frame is never overtaken by a later one of the run. A delivered frame's
// delivery borrows the batch's reference; its cookie holds one of its own
// until released.
void datapath::impl::direct_run(worker& w, const std::shared_ptr<queue>& qp, rx_hold& h) noexcept {
    std::vector<tx_packet*>& run = w.direct_pend;
    if (run.empty()) return;
    vif_core& sc = *qp->core;
    auto refuse = [&sc](tx_packet& p, const char* why) {
        p.status = NETIF_RSP_ERROR;
        bump(sc.ctr.direct_errors);
        if (sc.drop_log.allow())
            ZC_LOG(info, tag, "vif%u.%u: direct frame to d%u refused: %s", unsigned(sc.dom), sc.devid,
                   unsigned(p.direct_dom), why);
    };
    vif* dv = w.dests.size() == 1 && !w.dests[0]->up ? w.dests[0].get() : nullptr;
    vif_core* dc = dv ? dv->core.get() : nullptr;
    const char* why = nullptr;
    if (!dc)
        why = "the switch does not deliver it to exactly one guest";
    else if (!dc->direct)
        why = "the destination is not on the direct path";
    else if (dc->disabled.load(std::memory_order_relaxed) || dc->removed.load(std::memory_order_relaxed))
        why = "the destination is disabled";
    // Frames that pass the per-frame checks stay in `run`, in order.
    size_t n = 0;
    for (tx_packet* p : run) {
        const char* pw = why;
        if (pw) {
        } else if (dc->dom != p->direct_dom) {
            pw = "the switch picks another domain than the payload is granted to";
        } else if (!(dc->params.mac == mac_addr::load(p->hdr))) {
            pw = "the destination MAC is not the vif's configured MAC";
        } else if (check_destination(p->off, p->len, p->gso_type, dc->params) != offload_verdict::ok) {
            pw = "the destination does not accept the frame (mtu, checksum)";
        }
        if (pw) refuse(*p, pw);
        else run[n++] = p;
    }
    run.resize(n);
    if (run.empty()) return;
    if (w.direct_cookie_buf.size() < n) w.direct_cookie_buf.resize(n);
    uint16_t* cookies = w.direct_cookie_buf.data();
    h.release(); // the table's lock is never held with a queue's
    const size_t held = direct_hold(*dc, qp, run.data(), n, cookies);
    const std::shared_ptr<queue>& dq = dv->queues[qp->index % dv->queues.size()];
    size_t sent = 0;
    if (held) {
        h.take(*dq);
        // Behind waiting frames it would overtake them: refused, the
        // sender's copy goes behind them.
        for (; sent < held; ++sent) {
            if (dq->rx_dead || dq->stalled || dq->count != 0 || dq->rx.unconsumed() < direct_rx_slots) break;
            tx_packet& p = *run[sent];
            delivery& d = add_delivery(w, dq, qp, p);
            d.nslots = 1;
            d.gso_size = 0;
            d.gso_type = XEN_NETIF_GSO_TYPE_NONE;
            d.direct = true;
            d.cookie = cookies[sent];
            rx_plan plan;
            plan.ok = true;
            plan.ndata = 1;
            plan.nring = uint8_t(direct_rx_slots);
            reserve_rx(d, *dq, plan);
        }
        if (sent < held) {
            h.release();
            direct_cancel(w, *dc, cookies + sent, uint32_t(held - sent));
        }
    }
    for (size_t k = sent; k < n; ++k)
        refuse(*run[k], k < held ? "the destination has no RX slots free or frames waiting"
                                 : "too many descriptors outstanding at the destination");
    run.clear();
}

// Cookies of `dc` for the first of the `n` packets `pkts` that it has room
// for (each entry holds one reference of its packet), in `cookies`; returns
// how many. None when `dc` is going away or the sender is; fewer than `n`
// when the table or the per-sender bound fills up.
size_t datapath::impl::direct_hold(vif_core& dc, const std::shared_ptr<queue>& qp, tx_packet* const* pkts, size_t n,
                                   uint16_t* cookies) noexcept {
    direct_rx& d = *dc.direct;
    std::lock_guard g(d.lock);
    if (d.dead || qp->core->removed.load(std::memory_order_relaxed)) return 0;
    uint32_t& out = sender_count(d, qp->core.get()); // stays listed: released when it drops to 0
    size_t k = 0;
    for (; k < n && !d.free.empty() && out < opt.direct_per_peer; ++k) {
        const uint16_t idx = d.free.back();
        d.free.pop_back();
        direct_entry& e = d.e[idx];
        e.src = qp;
        e.pkt = pkts[k];
        e.sender = qp->core.get();
        ++out;
        // The entry's own reference from the start: a receiver may put a
        // cookie it guessed on its release ring before the descriptor is out.
        pkts[k]->refs.fetch_add(1, std::memory_order_relaxed);
        cookies[k] = cookie_of(idx, e.gen);
    }
    if (out == 0) sender_done_empty(d, qp->core.get());
    d.outstanding.fetch_add(uint32_t(k), std::memory_order_relaxed);
    return k;
}

// Descriptors that did not reach the receiver: their cookies go, and with
// them the references they held.
void datapath::impl::direct_cancel(worker& w, vif_core& dc, const uint16_t* cookies, uint32_t n) noexcept {
    packet_refs refs;
    {
        std::lock_guard g(dc.direct->lock);
        for (uint32_t i = 0; i < n; ++i) (void)take_locked(*dc.direct, cookies[i], refs);
        dc.direct->outstanding.fetch_sub(uint32_t(refs.size()), std::memory_order_relaxed);
    }
    for (auto& r : refs) put_ref(w, r.first, r.second);
}

// copy.cpp: a descriptor's one copy is its headers, from the header copy
// (local) into the receiver's first RX slot.
void datapath::impl::add_direct_segments(worker& w, delivery& d, uint32_t di) noexcept {
    for (uint32_t j = 0; j < d.nring; ++j) {
        d.slot_len[j] = 0;
        d.slot_status[j] = GNTST_okay;
    }
    hv::copy_segment c{};
    c.source.virt = d.pkt->hdr;
    c.flags = GNTCOPY_dest_gref;
    c.dest.foreign.ref = d.req[0].gref;
    c.dest.foreign.offset = 0;
    c.dest.foreign.domid = d.dq->core->dom;
    c.len = d.pkt->hdr_len;
    w.copy_segs.push_back(c);
    w.seg_own.push_back({int32_t(di), -1, 0});
    d.slot_len[0] = d.pkt->hdr_len; // counted in grant_copy_segments by add_delivery_segments
}

// rx.cpp, under dq's rx_lock: the headers' response, then rx_grant and
// rx_desc in the next two slots (each took an RX request, as the GSO extra).
void datapath::impl::write_direct_responses(queue& dq, delivery& d, rx_tally& t) noexcept {
    const tx_packet& p = *d.pkt;
    netif_rx_response r{};
    r.id = d.req[0].id;
    r.offset = 0;
    uint16_t fl = NETRXF_extra_info;
    if (d.txflags & NETTXF_csum_blank)
        fl |= NETRXF_csum_blank | NETRXF_data_validated;
    else if (d.txflags & NETTXF_data_validated)
        fl |= NETRXF_data_validated;
    r.flags = fl;
    const bool failed = d.slot_status[0] != GNTST_okay;
    r.status = failed ? d.slot_status[0] : int16_t(d.slot_len[0]);
    dq.rx.write_response(d.first, r);
    const zd::rx_grant g{zd::extra_rx_grant, XEN_NETIF_EXTRA_FLAG_MORE, d.src_core->dom, p.direct_gref};
    dq.rx.write_response(d.first + 1, zd::to_extra(g));
    const zd::rx_desc ds{zd::extra_rx_desc, 0, p.direct_offset, p.direct_len, d.cookie};
    dq.rx.write_response(d.first + 2, zd::to_extra(ds));
    for (uint32_t j = 0; j < direct_rx_slots; ++j) dq.done[(d.first + j) & (ring_slots - 1)] = 1;
    if (failed) {
        // Only the receiver's own RX grant can fail (the source is local).
        d.direct_failed = true;
        bump(dq.core->ctr.drop_rx_grant);
        return;
    }
    ++t.packets;
    t.bytes += d.len;
    t.slots += 1;
    bump(d.src_core->ctr.direct_frames);
    bump(d.src_core->ctr.direct_bytes, p.direct_len);
}

// serve_queues: whether queue 0 of a vif on the direct path has releases.
bool datapath::impl::releases_pending(queue& q) noexcept {
    direct_rx* d = q.index == 0 ? q.core->direct.get() : nullptr;
    if (!d) return false;
    std::lock_guard g(d->lock);
    return !d->dead && d->ring.attached() && d->ring.unconsumed() != 0;
}

// The receiver's release ring (on its first queue's TX event): each cookie
// it names completes that sender's TX request; an unknown, stale or
// duplicate cookie is counted and answered NETIF_RSP_ERROR, and never
// matches a descriptor given to another receiver (the table is this vif's).
void datapath::impl::process_releases(worker& w, queue& q) noexcept {
    direct_rx* d = q.index == 0 ? q.core->direct.get() : nullptr;
    if (!d) return;
    vif_core& c = *q.core;
    packet_refs refs;
    uint32_t bad = 0, seen = 0;
    bool notify = false, impossible = false, more = false;
    RING_IDX prod = 0, cons = 0;
    {
        std::lock_guard g(d->lock);
        if (d->dead || !d->ring.attached()) return;
        zd::release_back_ring& rg = d->ring;
        for (;;) {
            prod = rg.req_prod();
            cons = rg.req_cons;
            if (RING_IDX(prod - cons) > zd::release_back_ring::size) {
                impossible = true;
                break;
            }
            uint32_t n = rg.unconsumed();
            if (!n) {
                if (!rg.final_check_for_requests()) break;
                continue;
            }
            // At most a ring's worth per pass: the rest on the next (tx_kick).
            if (seen + n > zd::release_back_ring::size) {
                n = zd::release_back_ring::size - seen;
                more = true;
            }
            for (uint32_t i = 0; i < n; ++i) {
                const auto rq = rg.read_request<zc_direct_release_request>(rg.req_cons++);
                zc_direct_release_response rs{rq.cookie, NETIF_RSP_OKAY};
                if (!take_locked(*d, rq.cookie, refs)) {
                    rs.status = NETIF_RSP_ERROR;
                    ++bad;
                }
                rg.write_response(rg.rsp_prod_pvt++, rs);
            }
            seen += n;
            if (more) break;
        }
        d->outstanding.fetch_sub(uint32_t(refs.size()), std::memory_order_relaxed);
        // Counted before the receiver can see the answers.
        bump(c.ctr.direct_releases, refs.size());
        bump(c.ctr.direct_bad_releases, bad);
        if (seen) notify = rg.push_responses_and_check_notify();
    }
    if (impossible) fatal(w, c, format("impossible number of releases: req_prod %u req_cons %u size %u", prod, cons,
                                       zd::release_back_ring::size));
    if (more) q.tx_kick.store(true, std::memory_order_relaxed);
    if (notify) notify_frontend(q, false);
    if (bad) {
        if (c.drop_log.allow())
            ZC_LOG(warn, tag, "vif%u.%u: %u releases of unknown, stale or duplicate cookies ignored", unsigned(c.dom),
                   c.devid, bad);
    }
    for (auto& r : refs) put_ref(w, std::move(r.first), r.second);
    flush_done(w);
}

// remove_locked_out: the receiver goes; every sender's request it still
// held is completed (the sender gets its buffer back), reported, and the
// release ring unmapped.
void datapath::impl::direct_receiver_gone(vif_core& c) noexcept {
    if (!c.direct) return;
    direct_rx& d = *c.direct;
    packet_refs refs;
    {
        std::lock_guard g(d.lock);
        d.dead = true;
        for (uint32_t i = 0; i < direct_cookies; ++i)
            if (d.e[i].src) (void)take_locked(d, cookie_of(i, d.e[i].gen), refs);
        d.outstanding.fetch_sub(uint32_t(refs.size()), std::memory_order_relaxed);
        d.ring.detach();
        if (d.map.addr) (void)tab->unmap(d.map);
        d.map = hv::mapping{};
    }
    if (refs.empty()) return;
    bump(c.ctr.direct_teardown_completed, refs.size());
    ZC_LOG(info, tag, "vif%u.%u: gone with %zu direct-path requests of its senders outstanding: completed",
           unsigned(c.dom), c.devid, refs.size());
    complete_refs_now(refs);
}

// remove_locked_out: the sender goes; its cookies at every receiver are
// dropped (its rings are gone: nothing to answer), so that a late release
// matches nothing (counted as a bad release) and frees no one else's.
void datapath::impl::direct_sender_gone(const vif_core& c) noexcept {
    std::vector<std::shared_ptr<vif_core>> receivers;
    {
        std::lock_guard g(vifs_lock);
        for (auto& [k, v] : vifs)
            if (v->core->direct && v->core.get() != &c) receivers.push_back(v->core);
    }
    packet_refs gone; // dropped outside the lock (the last reference to a queue may go)
    for (auto& rc : receivers) {
        direct_rx& d = *rc->direct;
        std::lock_guard g(d.lock);
        const size_t before = gone.size();
        for (uint32_t i = 0; i < direct_cookies; ++i)
            if (d.e[i].src && d.e[i].sender == &c) (void)take_locked(d, cookie_of(i, d.e[i].gen), gone);
        d.outstanding.fetch_sub(uint32_t(gone.size() - before), std::memory_order_relaxed);
    }
}

} // namespace zc::netback
