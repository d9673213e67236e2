// SPDX-License-Identifier: MIT
// Uplinks: zc-netback's switch ports to the wire and the host, over AF_XDP
// (docs/ARCHITECTURE.md, "Uplinks").
//   guest -> wire: one grant copy per TX slot, guest TX page -> a UMEM
//     frame (batched with the TX batch), then the AF_XDP TX ring;
//   wire -> guest: the UMEM frame the kernel filled waits in the
//     destination queue like a bounce buffer and is grant-copied once into
//     the guest's RX page (copy.cpp, the same code as VM-to-VM).
#include "netback/uplink.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>

#include "netback/common.hpp"
#include "proto/checksum.hpp"

namespace zc::netback {

uplink::~uplink() {
    if (stop_fd >= 0) ::close(stop_fd);
}

// ---------------------------------------------------------------------------
// Setup and teardown.

int datapath::add_uplink(const uplink_options& o, std::string* why) noexcept {
    impl& d = *_p;
    auto mode = link::parse_xdp_mode(o.mode);
    if (!mode) {
        if (why) *why = "bad --xdp-mode '" + o.mode + "' (any, zc, copy or skb)";
        return -EINVAL;
    }
    auto u = std::make_shared<uplink>();
    u->opt = o;
    link::xsk_options xo;
    xo.ifname = o.ifname;
    xo.queue = o.queue;
    xo.mode = *mode;
    xo.frames = o.frames;
    xo.ring = o.ring;
    xo.batch = std::min(o.batch, o.ring);
    auto l = link::xsk_link::open(xo, why);
    if (!l) return l.error();
    u->link = std::move(*l);
    u->max_len = u->link->mtu() + eth_hlen + 4;
    u->dest_quota = o.dest_quota ? o.dest_quota : std::max<uint32_t>(1, o.frames / 8);
    // Frames for the host's own MAC belong to the kernel.
    if (int rc = u->link->prog().add_pass_mac(u->link->if_mac()); rc < 0) {
        if (why) *why = std::string("setting the host MAC in the XDP program: ") + std::strerror(-rc);
        return rc;
    }
    u->stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->stop_fd < 0) return -errno;
    d.uplink_add_port(u);
    uplink* raw = u.get();
    raw->th = std::thread([&d, raw] { d.uplink_rx_loop(*raw); });
    ZC_LOG(info, tag, "uplink %s: AF_XDP %s mode, MTU %u", o.ifname.c_str(), link::to_string(raw->link->mode()),
           raw->link->mtu());
    return 0;
}

// Its switch port: a learning port with a larger table whose entries age.
void datapath::impl::uplink_add_port(const std::shared_ptr<uplink>& u) noexcept {
    u->port = std::make_shared<vif>();
    u->port->core = std::make_shared<vif_core>();
    u->port->core->dom = hv::domid_invalid;
    u->port->core->devid = uint32_t(uplinks.size());
    u->port->up = u.get();
    l2_switch<vif>::port_opts po;
    po.max_learned = 4096;
    po.aging = std::chrono::seconds(u->opt.aging_s);
    sw.add(u->port, mac_addr{}, po);
    uplinks.push_back(u);
}

int datapath::add_uplink_inproc(const uplink_options& o, uint32_t mtu, wire_sink sink, std::string* why) noexcept {
    impl& d = *_p;
    auto u = std::make_shared<uplink>();
    u->opt = o;
    pool::pool_options po; // as link::xsk_link's UMEM: 4 KiB frames, never grown
    po.buf_size = 4096;
    po.chunk_pages = o.frames;
    po.initial_chunks = 1;
    po.max_pages = o.frames;
    po.max_grants = o.frames;
    auto p = pool::pool::create(po, nullptr);
    if (!p) {
        if (why) *why = "allocating the in-process uplink's frames";
        return p.error();
    }
    u->own = std::move(*p);
    u->sink = std::move(sink);
    u->max_len = mtu + eth_hlen + 4;
    u->dest_quota = o.dest_quota ? o.dest_quota : std::max<uint32_t>(1, o.frames / 8);
    d.uplink_add_port(u);
    return int(d.uplinks.size() - 1);
}

int datapath::inject_from_wire(size_t index, const uint8_t* frame, uint32_t len) noexcept {
    impl& d = *_p;
    if (index >= d.uplinks.size() || d.uplinks[index]->link) return -ENOENT;
    uplink& u = *d.uplinks[index];
    if (len > u.own->buf_size()) return -EMSGSIZE;
    pool::frame f;
    if (u.alloc(f) < 0) return -ENOBUFS;
    std::memcpy(u.frames().data(f), frame, len);
    f.len = uint16_t(len);
    std::vector<std::shared_ptr<vif>> dests;
    std::vector<std::shared_ptr<queue>> touched;
    d.uplink_receive(u, &f, 1, dests, touched);
    return 0;
}

uint32_t datapath::uplink_frames_in_use(size_t index) const noexcept {
    if (index >= _p->uplinks.size() || !_p->uplinks[index]->own) return 0;
    return _p->uplinks[index]->own->counters().in_use;
}

uint32_t uplink::send(pool::frame* fs, uint32_t n) noexcept {
    if (link) return link->send(fs, n);
    for (uint32_t i = 0; i < n; ++i) {
        if (sink) sink(own->data(fs[i]), fs[i].len);
        own->release(fs[i]);
    }
    return n;
}

void datapath::impl::stop_uplinks() noexcept {
    for (auto& u : uplinks) {
        uint64_t one = 1;
        (void)!::write(u->stop_fd, &one, sizeof one);
    }
    for (auto& u : uplinks) {
        if (u->th.joinable()) u->th.join();
        sw.remove(u->port.get());
    }
}

std::vector<uplink_info> datapath::uplinks() const {
    std::vector<uplink_info> out;
    for (auto& u : _p->uplinks) {
        uplink_info i{};
        i.ifname = u->opt.ifname;
        i.stats = u->snapshot();
        if (!u->link) {
            i.mode = "inproc";
            i.mtu = u->max_len - eth_hlen - 4;
            out.push_back(std::move(i));
            continue;
        }
        i.mode = link::to_string(u->link->mode());
        std::memcpy(i.mac.b.data(), u->link->if_mac(), 6);
        i.mtu = u->link->mtu();
        const auto pc = u->link->prog().counters();
        i.xdp_redirected = pc.redirected;
        i.xdp_passed = pc.passed_host + pc.passed_group;
        i.xdp_runts = pc.runts;
        const auto xc = u->link->counters();
        i.fill_starved = xc.fill_starved;
        i.tx_wakeups = xc.tx_wakeups;
        i.rx_wakeups = xc.rx_wakeups;
        out.push_back(std::move(i));
    }
    return out;
}

// ---------------------------------------------------------------------------
// Guest -> wire.

// One guest frame to an uplink: a UMEM frame and the grant-copy segments
// that fill it (run by flush_uplink_tx with the rest of the batch).
void datapath::impl::uplink_out(worker& w, const queue& q, const tx_packet& p, uplink& u) noexcept {
    if (p.gso_type != XEN_NETIF_GSO_TYPE_NONE) {
        uplink_out_gso(w, q, p, u);
        return;
    }
    if (p.len > u.max_len || p.len > u.max_frame()) {
        bump(u.drop_oversize);
        return;
    }
    pool::frame f;
    if (u.alloc(f) < 0) {
        bump(u.drop_no_buffer);
        return;
    }
    uplink_tx& t = w.up_tx.emplace_back();
    t.up = &u;
    t.src = q.core.get();
    t.txflags = p.txflags;
    t.seg_begin = uint32_t(w.up_segs.size());
    uint8_t* dst = u.frames().data(f);
    uint32_t off = 0;
    for (uint32_t i = 0; i < p.nslots; ++i) {
        const pool::frame& s = p.seg[i];
        if (s.len == 0) continue;
        hv::copy_segment c{};
        c.source.foreign.ref = s.gref;
        c.source.foreign.offset = s.offset;
        c.source.foreign.domid = s.domid;
        c.dest.virt = dst + off;
        c.len = s.len;
        c.flags = GNTCOPY_source_gref;
        w.up_segs.push_back(c);
        off += s.len;
    }
    f.len = uint16_t(off);
    t.f = f;
    t.seg_end = uint32_t(w.up_segs.size());
    bump(q.core->ctr.grant_copy_segments, t.seg_end - t.seg_begin);
}

// The batch's copies into UMEM frames (one hypercall), checksums, then the
// AF_XDP TX rings. Runs before the batch's TX responses go out.
void datapath::impl::flush_uplink_tx(worker& w) noexcept {
    if (w.up_tx.empty()) return;
    const int rc = w.up_segs.empty() ? 0 : tab->copy(w.up_segs.data(), uint32_t(w.up_segs.size()));
    if (!w.up_segs.empty()) bump(w.up_tx.front().src->ctr.grant_copy_batches);
    // Frames of one uplink go out together, in order.
    std::stable_sort(w.up_tx.begin(), w.up_tx.end(), [](const uplink_tx& a, const uplink_tx& b) { return a.up < b.up; });
    std::vector<pool::frame> out;
    for (size_t i = 0; i < w.up_tx.size();) {
        uplink& u = *w.up_tx[i].up;
        out.clear();
        uint64_t bytes = 0;
        for (; i < w.up_tx.size() && w.up_tx[i].up == &u; ++i) {
            uplink_tx& t = w.up_tx[i];
            bool ok = rc == 0;
            for (uint32_t k = t.seg_begin; ok && k < t.seg_end; ++k) ok = w.up_segs[k].status == GNTST_okay;
            if (!ok) {
                bump(u.drop_copy_error);
                bump(t.src->ctr.drop_copy_error);
                u.frames().release(t.f);
                continue;
            }
            if (t.gso) fix_gso_headers(u.frames().data(t.f), t);
            if (t.gso || (t.txflags & NETTXF_csum_blank)) {
                if (!complete_checksum(u.frames().data(t.f), t.f.len)) {
                    bump(u.drop_bad_csum);
                    u.frames().release(t.f);
                    continue;
                }
                bump(u.csum_completed);
            }
            bytes += t.f.len;
            out.push_back(t.f);
        }
        if (out.empty()) continue;
        const uint32_t sent = u.send(out.data(), uint32_t(out.size()));
        bump(u.to_wire_frames, sent);
        bump(u.to_wire_bytes, bytes); // approximate when the ring was full
        if (sent < out.size()) bump(u.drop_tx_ring_full, out.size() - sent);
    }
    w.up_tx.clear();
    w.up_segs.clear();
}

// ---------------------------------------------------------------------------
// Wire -> guest.

// Under nothing: queue a UMEM frame for `dv` like a bounce buffer; the
// owner of the queue grant-copies it into the guest's RX page (copy.cpp).
void datapath::impl::uplink_deliver(uplink& u, vif& dv, pool::frame& f,
                                    std::vector<std::shared_ptr<queue>>& touched) noexcept {
    vif_core& dc = *dv.core;
    if (dv.queues.empty() || dc.disabled.load(std::memory_order_relaxed) ||
        dc.removed.load(std::memory_order_relaxed)) {
        bump(u.drop_vif_full);
        u.frames().release(f);
        return;
    }
    const std::shared_ptr<queue>& dq = dv.queues[0];
    const time_point now = clock_type::now();
    uint32_t charged = 0; // bounce bytes of the frame (0: a UMEM frame)
    std::lock_guard g(dq->rx_lock);
    if (dq->rx_dead || dq->stalled || dq->count >= dq->cap) {
        bump(u.drop_vif_full);
        bump(dc.ctr.drop_rx_full);
        u.frames().release(f);
        return;
    }
    if (dq->count >= u.dest_quota) {
        // This destination holds its share of the UMEM already (the quota is
        // charged after receipt: one queue's fill ring cannot know the
        // destination in advance). The frame moves to the shared bounce pool,
        // within the uplink's and the destination's bounce quotas.
        pool::frame b[max_tx_slots];
        uint32_t nbuf = 0;
        const bounce_rc rc = alloc_bounce(*u.port->core, dc, f.len, b, nbuf, charged);
        if (rc != bounce_rc::ok || nbuf != 1) {
            if (rc == bounce_rc::ok) free_bounce(b, nbuf, *u.port->core, dc, charged);
            else count_bounce_drop(rc, *u.port->core, dc);
            charged = 0;
            bump(u.drop_vif_full);
            u.frames().release(f);
            return;
        }
        std::memcpy(mgr->bounce()->data(b[0]), u.frames().data(f), f.len);
        b[0].domid = dc.dom;
        u.frames().release(f);
        f = b[0];
        bump(u.quota_fallbacks);
        bump(dc.ctr.fallback_copies);
    }
    if (dq->count == 0) dq->last_rx = now;
    rx_item& it = dq->at(dq->count);
    it = rx_item{};
    it.bounced = true;
    it.bounce[0] = f;
    it.nslots = 1;
    it.len = f.len;
    it.src_core = u.port->core;
    it.bounce_bytes = charged;
    it.seq = dq->next_seq++;
    it.expires = now + std::chrono::milliseconds(opt.drain_timeout_ms);
    it.hold_until = now;
    ++dq->count;
    dq->note_waiting();
    dq->rx.request_event_after(dq->rx.req_prod());
    bump(u.to_vif_frames);
    if (std::find(touched.begin(), touched.end(), dq) == touched.end()) touched.push_back(dq);
}

void datapath::impl::uplink_receive(uplink& u, pool::frame* fs, uint32_t n, std::vector<std::shared_ptr<vif>>& dests,
                                    std::vector<std::shared_ptr<queue>>& touched) noexcept {
    for (uint32_t i = 0; i < n; ++i) {
        pool::frame& f = fs[i];
        const uint8_t* h = u.frames().data(f);
        bump(u.from_wire_frames);
        bump(u.from_wire_bytes, f.len);
        if (f.len < eth_hlen) {
            bump(u.drop_runt);
            u.frames().release(f);
            continue;
        }
        // The MTU bounds the frame after its Ethernet header, and after one
        // 802.1Q tag when it carries one (max_len allows for the tag).
        if (f.len > u.max_len || (uint32_t(f.len) + 4 > u.max_len && !(h[12] == 0x81 && h[13] == 0x00))) {
            bump(u.drop_rx_oversize);
            u.frames().release(f);
            continue;
        }
        sw.learn(h + 6, u.port);
        dests.clear();
        sw.lookup(h, u.port.get(), dests);
        std::erase_if(dests, [](const std::shared_ptr<vif>& v) { return v->up != nullptr; });
        if (dests.empty()) {
            bump(u.drop_no_dest);
            u.frames().release(f);
            continue;
        }
        // Every destination but the last gets a copy of its own.
        for (size_t k = 0; k + 1 < dests.size(); ++k) {
            pool::frame c;
            if (u.alloc(c) < 0) {
                bump(u.drop_no_buffer);
                continue;
            }
            std::memcpy(u.frames().data(c), h, f.len);
            c.len = f.len;
            bump(u.flood_copies);
            uplink_deliver(u, *dests[k], c, touched);
        }
        uplink_deliver(u, *dests.back(), f, touched);
    }
    for (auto& dq : touched) {
        dq->rx_kick.store(true, std::memory_order_relaxed);
        kick_owner(*dq, nullptr);
    }
    touched.clear();
    dests.clear();
}

void datapath::impl::uplink_rx_loop(uplink& u) noexcept {
    const uint32_t batch = std::max<uint32_t>(1, u.opt.batch);
    std::vector<pool::frame> fs(batch);
    std::vector<std::shared_ptr<vif>> dests;
    std::vector<std::shared_ptr<queue>> touched;
    for (;;) {
        if (u.link->wait(u.stop_fd, -1) & POLLIN) break;
        for (;;) {
            const uint32_t n = u.link->receive(fs.data(), batch);
            if (n == 0) break;
            uplink_receive(u, fs.data(), n, dests, touched);
            if (n < batch) break;
        }
    }
}

} // namespace zc::netback
