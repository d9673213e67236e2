// SPDX-License-Identifier: MIT
// Vif lifetime: creating and destroying the datapath and its workers, adding
// a vif (mapping each queue's rings, binding its event channels, joining the
// switch) and removing it (unbinding, unmapping, giving back what waits),
// and the counters the control plane reads. Follows Linux interface.c
// (xenvif_alloc, xenvif_connect_data / xenvif_map_frontend_data_rings,
// xenvif_disconnect_data, xenvif_free).
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>

#include "netback/common.hpp"

namespace zc::netback {

datapath::datapath(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}

result<std::unique_ptr<datapath>> datapath::create(hv::port& port, const datapath_options& o, fatal_fn on_fatal,
                                                   std::string* why) noexcept {
    auto fail = [why](int e, const std::string& m) -> result<std::unique_ptr<datapath>> {
        if (why) *why = m;
        return err(e);
    };
    if (o.workers == 0 || o.workers > 64) return fail(-EINVAL, "workers must be 1..64");
    if (o.batch == 0 || o.batch > 1024) return fail(-EINVAL, "batch must be 1..1024");
    if (o.rx_queue_limit == 0 || o.rx_queue_limit > 65536) return fail(-EINVAL, "rx_queue_limit must be 1..65536");
    if (o.rx_queue_bytes < 65536) return fail(-EINVAL, "rx_queue_bytes must hold one 64 KiB frame");
    if ((o.bounce_src_quota && o.bounce_src_quota < 65536) || (o.bounce_dst_quota && o.bounce_dst_quota < 65536))
        return fail(-EINVAL, "a bounce quota must hold one 64 KiB frame");
    if (o.direct_per_peer == 0 || o.direct_per_peer > direct_cookies)
        return fail(-EINVAL, "direct_per_peer must be 1.." + std::to_string(direct_cookies));
    std::unique_ptr<impl> p(new (std::nothrow) impl(port, o, std::move(on_fatal)));
    if (!p) return fail(-ENOMEM, "out of memory");
    // The quotas' defaults: a quarter (sender) and an eighth (receiver) of
    // the bounce pool, at least one 64 KiB frame (datapath_options); none
    // for the double-copy baseline, which measures the copies.
    const uint64_t pool_bytes = uint64_t(o.bounce_buffers) * hv::page_size;
    const uint64_t src_default = o.force_bounce ? bounce_quota_off : std::max<uint64_t>(pool_bytes / 4, 65536);
    const uint64_t dst_default = o.force_bounce ? bounce_quota_off : std::max<uint64_t>(pool_bytes / 8, 65536);
    p->bounce_src_quota = o.bounce_src_quota ? o.bounce_src_quota : src_default;
    p->bounce_dst_quota = o.bounce_dst_quota ? o.bounce_dst_quota : dst_default;
    p->held_tx_max = o.held_tx_slots ? o.held_tx_slots : ring_slots / 2;
    auto tab = port.open_gnttab();
    if (!tab) return fail(tab.error(), "open gnttab");
    p->tab = std::move(*tab);
    auto shr = port.open_gntshr();
    if (!shr) return fail(shr.error(), "open gntshr");
    p->shr = std::move(*shr);
    pool::manager_options mo;
    mo.bounce_buf_size = uint32_t(hv::page_size); // a fallback frame's bytes are packed (copy.cpp alloc_bounce)
    mo.bounce_buffers = o.bounce_buffers;
    mo.max_grants = 0; // netback never grants: pools for peers are not used here
    auto m = pool::manager::create(*p->shr, p->tab.get(), mo);
    if (!m) return fail(m.error(), "pool manager");
    p->mgr = std::move(*m);
    for (uint32_t i = 0; i < o.workers; ++i) {
        auto w = std::make_unique<worker>();
        w->dp = p.get();
        w->id = i;
        auto ev = port.open_evtchn();
        if (!ev) return fail(ev.error(), "open evtchn");
        w->ev = std::move(*ev);
        w->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->wake_fd < 0) return fail(-errno, "eventfd");
        p->workers.push_back(std::move(w));
    }
    for (auto& w : p->workers) {
        worker* wp = w.get();
        impl* ip = p.get();
        wp->th = std::thread([ip, wp] { ip->run(*wp); });
    }
    return std::unique_ptr<datapath>(new datapath(std::move(p)));
}

datapath::~datapath() {
    if (!_p) return;
    _p->stop_uplinks(); // no more frames from the wire; their UMEMs go last, with impl
    for (auto& w : _p->workers) {
        w->stop.store(true, std::memory_order_release);
        w->kick();
    }
    for (auto& w : _p->workers)
        if (w->th.joinable()) w->th.join();
    std::vector<std::pair<hv::domid_t, uint32_t>> keys;
    {
        std::lock_guard g(_p->vifs_lock);
        for (auto& [k, v] : _p->vifs) keys.push_back(k);
    }
    for (auto& k : keys) remove_vif(k.first, k.second);
    for (auto& w : _p->workers) {
        w->snap.clear();
        if (w->wake_fd >= 0) ::close(w->wake_fd);
    }
}

int datapath::add_vif(const vif_params& prm, std::string* why) noexcept {
    impl& d = *_p;
    auto fail = [why](int e, const std::string& m) {
        if (why) *why = m;
        return e;
    };
    if (prm.queues.empty() || prm.queues.size() > 64) return fail(-EINVAL, "a vif needs 1..64 queues");
    if (prm.frontend == hv::domid_invalid || prm.frontend >= hv::domid_self) return fail(-EINVAL, "bad frontend domid");
    {
        std::lock_guard g(d.vifs_lock);
        if (d.vifs.count({prm.frontend, prm.devid})) return fail(-EEXIST, "vif already present");
    }
    auto core = std::make_shared<vif_core>();
    core->dom = prm.frontend;
    core->devid = prm.devid;
    core->params = prm;
    core->retired = d.retired;
    auto v = std::make_shared<vif>();
    v->core = core;
    for (uint32_t qi = 0; qi < prm.queues.size(); ++qi) {
        if (int rc = d.setup_queue(*v, qi, why); rc < 0) {
            d.remove_locked_out(v);
            return rc;
        }
    }
    if (int rc = d.attach_direct(*core, why); rc < 0) {
        d.remove_locked_out(v);
        return rc;
    }
    {
        std::lock_guard g(d.vifs_lock);
        if (d.vifs.count({prm.frontend, prm.devid})) {
            d.remove_locked_out(v);
            return fail(-EEXIST, "vif already present");
        }
        d.vifs[{prm.frontend, prm.devid}] = v;
    }
    d.sw.add(v, prm.mac);
    for (auto& q : v->queues) {
        {
            // Not yet visible to any worker: nothing can move it meanwhile.
            worker* o = q->w.load(std::memory_order_relaxed);
            std::lock_guard g(o->lock);
            o->queues.push_back(q);
            ++o->gen;
        }
        // Requests may already be waiting: look once without an event.
        q->tx_kick.store(true, std::memory_order_relaxed);
        q->rx_kick.store(true, std::memory_order_relaxed);
        kick_owner(*q, nullptr);
    }
    return 0;
}

// Queue `qi` of `v` (xenvif_connect_data): its pools, its rings mapped
// (xenvif_map_frontend_data_rings), its event channels bound. On failure
// the caller undoes what was done with remove_locked_out (the queue is in
// v.queues as soon as it has something to undo).
int datapath::impl::setup_queue(vif& v, uint32_t qi, std::string* why) noexcept {
    auto fail = [why](int e, const std::string& m) {
        if (why) *why = m;
        return e;
    };
    const queue_params& qp = v.core->params.queues[qi];
    auto q = std::make_shared<queue>();
    q->core = v.core;
    q->index = qi;
    q->packets.reset(new (std::nothrow) tx_packet[ring_slots]);
    q->cap = 2 * opt.rx_queue_limit; // zero-copy frames up to the limit, bounced ones behind them
    q->items.reset(new (std::nothrow) rx_item[q->cap]);
    if (!q->packets || !q->items) return fail(-ENOMEM, "out of memory");
    q->free_pkts.reserve(ring_slots);
    for (uint32_t i = ring_slots; i-- > 0;) {
        q->packets[i].index = uint16_t(i);
        q->free_pkts.push_back(uint16_t(i));
    }
    q->w.store(pick_worker(), std::memory_order_relaxed);
    v.queues.push_back(q);
    hv::domid_t dom = v.core->dom;
    int16_t st = 0;
    auto tm = tab->map(1, &dom, &qp.tx_ring_ref, true, &st);
    if (!tm)
        return fail(-EFAULT, format("queue %u: cannot map tx-ring-ref %u: %s", qi, qp.tx_ring_ref, hv::gntst_name(st)));
    q->tx_map = *tm;
    if (!q->tx.attach(q->tx_map.addr))
        return fail(-EINVAL, format("queue %u: TX ring claims more requests than it holds", qi));
    auto rm = tab->map(1, &dom, &qp.rx_ring_ref, true, &st);
    if (!rm)
        return fail(-EFAULT, format("queue %u: cannot map rx-ring-ref %u: %s", qi, qp.rx_ring_ref, hv::gntst_name(st)));
    q->rx_map = *rm;
    if (!q->rx.attach(q->rx_map.addr))
        return fail(-EINVAL, format("queue %u: RX ring claims more requests than it holds", qi));
    if (int rc = bind_queue(*q, qp, qi, why); rc < 0) return rc;
    q->last_rx = clock_type::now();
    return 0;
}

// The worker for a new queue: the one serving the fewest queues (ties: the
// lowest id), counting the queues assigned but not yet served. A counter
// taken round-robin in connect order keeps going after vifs leave, so churn
// piles the survivors onto some workers and leaves others idle; Linux gives
// every queue its own kthread (xenvif_connect_data) and lets the scheduler
// spread them, which a fixed set of workers imitates by filling the least
// loaded first. Concurrent add_vif calls may tie on a count: harmless.
// Where the queue then stays depends on its traffic (placement.cpp).
worker* datapath::impl::pick_worker() noexcept {
    worker* best = nullptr;
    for (auto& w : workers)
        if (!best || w->assigned.load(std::memory_order_relaxed) < best->assigned.load(std::memory_order_relaxed))
            best = w.get();
    best->assigned.fetch_add(1, std::memory_order_relaxed);
    return best;
}

// The frontend's event channels of one queue bound on `on`'s handle (one
// port, or two when split). Returns 0, or the remote port that failed; what
// was bound before the failure is unbound again.
hv::evtchn_port_t bind_ports(worker& on, hv::domid_t dom, const queue_params& qp, hv::evtchn_port_t& tx,
                             hv::evtchn_port_t& rx) noexcept {
    std::lock_guard g(on.ev_lock);
    auto tp = on.ev->bind_interdomain(dom, qp.tx_evtchn);
    if (!tp) return qp.tx_evtchn;
    tx = rx = *tp;
    if (qp.rx_evtchn == qp.tx_evtchn) return 0;
    auto rp = on.ev->bind_interdomain(dom, qp.rx_evtchn);
    if (!rp) {
        (void)on.ev->unbind(*tp);
        tx = rx = 0;
        return qp.rx_evtchn;
    }
    rx = *rp;
    return 0;
}

// The queue's event channels on its worker's handle.
int datapath::impl::bind_queue(queue& q, const queue_params& qp, uint32_t qi, std::string* why) noexcept {
    // The caller's undo takes ev_lock itself: bind_ports never returns with
    // it held (a frontend that dies during the handshake makes the bind fail).
    std::lock_guard b(q.bind_lock);
    const hv::evtchn_port_t bad_port = bind_ports(*q.w.load(), q.core->dom, qp, q.tx_port, q.rx_port);
    if (!bad_port) return 0;
    if (why) *why = format("queue %u: cannot bind event channel %u", qi, bad_port);
    return -ENOENT;
}

// Take the vif's queues away from everyone: workers, rings, event channels.
// In-flight users see tx_dead/rx_dead under the queue locks.
void datapath::impl::remove_locked_out(const std::shared_ptr<vif>& v) noexcept {
    v->core->removed.store(true, std::memory_order_relaxed);
    packet_refs drops;
    for (auto& q : v->queues) {
        // Under bind_lock: a move of the queue (placement.cpp) is either
        // done, and its new owner is the one to leave, or sees `removed`
        // and does not start.
        std::unique_lock b(q->bind_lock);
        worker* o = q->w.load(std::memory_order_relaxed);
        if (o) {
            std::lock_guard g(o->lock);
            auto& qs = o->queues;
            auto it = std::find(qs.begin(), qs.end(), q);
            if (it != qs.end()) {
                qs.erase(it);
                ++o->gen;
                // Its worker drops its snapshot of the queue list (and with
                // it the last reference to this queue, whose counters then
                // join retired_stats) when it wakes: wake it now, not at
                // its next event, which may never come.
                o->kick();
            }
        }
        if (o) o->assigned.fetch_sub(1, std::memory_order_relaxed);
        if (o && q->tx_port) {
            std::lock_guard g(o->ev_lock);
            (void)o->ev->unbind(q->tx_port);
            if (q->rx_port != q->tx_port) (void)o->ev->unbind(q->rx_port);
        }
        b.unlock();
        {
            std::lock_guard g(q->tx_lock);
            q->tx_dead = true;
            q->tx.detach();
            if (q->tx_map.addr) (void)tab->unmap(q->tx_map);
        }
        {
            std::lock_guard g(q->rx_lock);
            q->rx_dead = true;
            // Frames waiting for this vif: their sources get their slots back.
            while (q->count) {
                // An empty bounced item's loss was counted already (a failed
                // fallback copy, or discard_held), as in drop_expired.
                if (!(q->at(0).bounced && q->at(0).len == 0)) bump(q->core->ctr.drop_disabled);
                drop_item(q->at(0), *q->core, drops);
                q->pop_head();
            }
            q->nforeign = 0;
            q->held_tx = 0;
            q->rx.detach();
            if (q->rx_map.addr) (void)tab->unmap(q->rx_map);
        }
    }
    complete_refs_now(drops);
    // The direct path: what this vif held as a receiver is completed, what
    // it had outstanding as a sender is dropped (direct.cpp).
    direct_receiver_gone(*v->core);
    direct_sender_gone(*v->core);
}

// Completing other vifs' packets needs a worker context for the response
// batching; use a private one (no worker loop involved).
void datapath::impl::complete_refs_now(packet_refs& refs) noexcept {
    if (refs.empty()) return;
    worker tmp;
    tmp.dp = this;
    for (auto& r : refs) {
        if (r.second->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
        complete_tx(tmp, *r.first, &r.second, 1);
    }
}

int datapath::remove_vif(hv::domid_t frontend, uint32_t devid) noexcept {
    impl& d = *_p;
    std::shared_ptr<vif> v;
    {
        std::lock_guard g(d.vifs_lock);
        auto it = d.vifs.find({frontend, devid});
        if (it == d.vifs.end()) return -ENOENT;
        v = it->second;
        d.vifs.erase(it);
    }
    d.sw.remove(v.get());
    d.remove_locked_out(v);
    // Frames still in flight elsewhere from this frontend's grants must not
    // be sent once the last vif of the domain is gone: revoke them in the
    // pool manager, so that a frame waiting elsewhere that refers to them is
    // dropped (drop_copy_error) rather than copied.
    bool last = true;
    {
        std::lock_guard g(d.vifs_lock);
        for (auto& [k, o] : d.vifs)
            if (k.first == frontend) last = false;
    }
    if (last) d.mgr->revoke_foreign(frontend);
    return 0;
}

std::vector<vif_info> datapath::vifs() const {
    std::vector<vif_info> out;
    std::lock_guard g(_p->vifs_lock);
    for (auto& [k, v] : _p->vifs) {
        vif_info i{};
        vif_core& c = *v->core;
        i.frontend = c.dom;
        i.devid = c.devid;
        i.mac = c.params.mac;
        i.queues = uint32_t(v->queues.size());
        i.disabled = c.disabled.load();
        i.mtu = c.params.mtu;
        i.rx_stalled = false;
        for (auto& q : v->queues) {
            queue_info qi;
            qi.index = q->index;
            if (worker* o = q->w.load(std::memory_order_relaxed)) qi.worker = o->id;
            {
                std::lock_guard tg(q->tx_lock);
                if (!q->tx_dead) qi.tx_unconsumed = std::min<uint32_t>(q->tx.req_prod() - q->tx.req_cons, ring_slots);
                qi.tx_in_flight = q->pending_slots.load(std::memory_order_relaxed);
            }
            std::lock_guard qg(q->rx_lock);
            i.rx_stalled = i.rx_stalled || q->stalled;
            if (!q->rx_dead) qi.rx_posted = std::min<uint32_t>(q->rx.req_prod() - q->rx.req_cons, ring_slots);
            qi.held_frames = q->count;
            qi.held_bytes = q->held_bytes;
            qi.stalled = q->stalled;
            i.queue_state.push_back(qi);
        }
        {
            std::lock_guard rg(c.reason_lock);
            i.disabled_reason = c.reason;
        }
        i.zc_direct = c.direct != nullptr;
        if (c.direct) i.direct_outstanding = c.direct->outstanding.load(std::memory_order_relaxed);
        i.stats = c.ctr.snapshot();
        i.bounce_src_bytes = c.bounce_src.load(std::memory_order_relaxed);
        i.bounce_dst_bytes = c.bounce_dst.load(std::memory_order_relaxed);
        out.push_back(std::move(i));
    }
    return out;
}

hv::op_counters datapath::hv_counters() const noexcept {
    hv::op_counters t = _p->tab->counters();
    t += _p->shr->counters();
    for (auto& w : _p->workers) {
        std::lock_guard g(w->ev_lock);
        t += w->ev->counters();
    }
    return t;
}

vif_stats datapath::retired_stats() const {
    std::lock_guard g(_p->retired->lock);
    return _p->retired->stats;
}

uint32_t datapath::bounce_in_use() const noexcept {
    pool::pool* b = _p->mgr->bounce();
    return b ? b->counters().in_use : 0;
}

} // namespace zc::netback
