// SPDX-License-Identifier: MIT
// zc-netback's data path. See datapath.hpp for the contract.
//
// Threads and locks
// -----------------
// Every queue (one TX ring + one RX ring of a vif) is served by one worker
// thread, which blocks in poll() on its event-channel handle and an eventfd
// for wake-ups. The owning worker alone consumes the queue's TX requests and
// runs its RX timers. Other workers touch the queue only to
//   - deliver frames into its RX ring (reserve slots, later publish), and
//   - complete its TX packets whose frames they delivered (TX responses).
// Each side has its own lock:
//   tx_lock  the TX ring (requests and responses), the pending-packet pool,
//            tx_dead and the TX ring mapping;
//   rx_lock  the RX ring, the queue of frames waiting for RX buffers, the
//            stall state, rx_dead and the RX ring mapping.
// A thread holds at most one of these locks at a time and never calls the
// hypervisor's grant copy under one, so there is no lock order to get wrong
// and no deadlock. Event-channel handle calls are serialized per worker by
// ev_lock (also never nested with the others).
//
// Lifetime: vifs and queues are shared_ptr-owned; in-flight work (a batch, a
// frame waiting in another vif's queue) holds a reference. remove_vif sets
// tx_dead/rx_dead under the queue locks and unmaps the rings right there;
// whoever comes later sees "dead" under the lock and skips the ring.
//
// Copies per VM-to-VM frame
// -------------------------
// header: one gref->local grant copy of at most XEN_NETBACK_TX_COPY_LEN bytes
//         of the first slot (to read the MACs);
// payload: one gref->gref grant copy per destination RX slot, source TX page
//         to destination RX page (one_to_one layout: TX slot i -> RX slot i);
// fallback: gref->local into a bounce buffer, then local->gref, counted.
#include "netback/datapath.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "common/check.hpp"
#include "common/log.hpp"
#include "ring/netif_ring.hpp"
#include "netback/switch.hpp"
#include "netback/tx_check.hpp"
#include "pool/manager.hpp"

namespace zc::netback {

namespace {

constexpr const char* tag = "netback";

// legacy_slots_max, fatal_skb_slots, max_tx_slots, eth_hlen: tx_check.hpp.
constexpr uint32_t tx_copy_len = 128; // XEN_NETBACK_TX_COPY_LEN
// Data slots a Linux netfront accepts for one packet (xennet_get_responses).
constexpr uint32_t rx_max_data_slots = XEN_NETIF_NR_SLOTS_MIN;
constexpr uint32_t max_rx_ring_slots = max_tx_slots + 1; // data + the GSO extra
constexpr uint32_t ring_slots = tx_back_ring::size;

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

log::ratelimit g_drop_log{10, 1};
log::ratelimit g_copy_log{10, 1};
log::ratelimit g_stall_log{10, 1};

void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept { c.fetch_add(n, std::memory_order_relaxed); }

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

struct vif_counters {
    std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0}, tx_slots{0}, rx_slots{0},
        grant_copy_segments{0}, grant_copy_batches{0}, header_copy_segments{0}, vm_to_vm_segments{0},
        fallback_copies{0}, queued{0}, drop_no_dest{0}, drop_rx_full{0}, drop_malformed{0}, drop_copy_error{0},
        drop_unsupported{0}, drop_disabled{0}, rx_stalls{0}, notifies_sent{0}, events_received{0};
    std::atomic<uint64_t> batch_hist[8] = {};
};

} // namespace

// What a vif's queues share with it and with frames in flight: identity,
// features, counters, the disabled state. Outlives the vif while anything
// in flight refers to it.
struct vif_core {
    hv::domid_t dom = hv::domid_invalid;
    uint32_t devid = 0;
    vif_params params;
    vif_counters ctr;
    std::atomic<bool> disabled{false};
    std::atomic<bool> removed{false};
    std::mutex reason_lock; // protects reason
    std::string reason;
};

struct worker;
struct queue;

// A TX packet between its requests being consumed and its responses being
// sent. Lives in its queue's pool (at most one per ring slot).
struct tx_packet {
    netif_tx_request req[max_tx_slots]; // private copies; req[0].size is the first slot's own size
    pool::frame seg[max_tx_slots];      // foreign stamps of the slots' bytes
    uint8_t hdr[tx_copy_len];
    uint32_t len = 0;       // the packet's total size (the first request's size)
    uint16_t nslots = 0;
    uint16_t hdr_len = 0;
    uint16_t gso_size = 0;
    int16_t hdr_status = 0;
    uint8_t extra_count = 0;
    uint8_t txflags = 0;    // NETTXF_csum_blank | NETTXF_data_validated
    uint8_t gso_type = XEN_NETIF_GSO_TYPE_NONE;
    int8_t status = NETIF_RSP_OKAY;
    uint16_t index = 0;
    // Deliveries still reading the source pages. The TX responses go out
    // when it drops to zero (never before the copies are done).
    std::atomic<uint32_t> refs{0};
};

// A frame waiting in a destination queue for RX buffers.
struct rx_item {
    std::shared_ptr<queue> src;          // foreign: the queue owning `pkt`
    tx_packet* pkt = nullptr;            // foreign: holds one ref
    std::shared_ptr<vif_core> src_core;  // counters of the sender
    pool::frame bounce[max_tx_slots];    // bounced: local copies, one per slot
    uint16_t nslots = 0;
    uint32_t len = 0;
    uint16_t gso_size = 0;
    uint8_t txflags = 0;
    uint8_t gso_type = 0;
    bool bounced = false;
    bool converting = false;             // a bounce copy is in flight; its job owns the buffers
    uint64_t seq = 0;
    time_point expires{}, hold_until{};

    const pool::frame* segs() const noexcept { return bounced ? bounce : pkt->seg; }
};

struct queue {
    std::shared_ptr<vif_core> core;
    uint32_t index = 0;
    worker* w = nullptr;
    hv::evtchn_port_t tx_port = 0, rx_port = 0; // local ports (equal when shared)

    // ---- TX ----
    std::mutex tx_lock;
    tx_back_ring tx;
    hv::mapping tx_map;
    bool tx_dead = false;
    std::unique_ptr<tx_packet[]> packets;
    std::vector<uint16_t> free_pkts;
    std::atomic<uint32_t> pending_slots{0}; // TX slots consumed, response not yet sent
    bool tx_more = false;                   // owner only: a batch stopped early
    std::atomic<bool> tx_kick{false};       // responses went out: slots free again

    // ---- RX ----
    std::mutex rx_lock;
    rx_back_ring rx;
    hv::mapping rx_map;
    bool rx_dead = false;
    bool stalled = false;
    time_point last_rx{};
    std::unique_ptr<rx_item[]> items; // circular, `cap` entries
    uint32_t cap = 0, head = 0, count = 0, nforeign = 0;
    uint64_t next_seq = 1;
    uint8_t done[ring_slots] = {}; // response written, waiting for earlier slots to publish
    std::atomic<bool> rx_kick{false};

    rx_item& at(uint32_t i) noexcept { return items[(head + i) % cap]; }
};

struct vif {
    std::shared_ptr<vif_core> core;
    std::vector<std::shared_ptr<queue>> queues;
};

struct fatal_note {
    hv::domid_t dom;
    uint32_t devid;
    std::string reason;
};

// Where the frame for one delivery comes from and goes to.
struct delivery {
    std::shared_ptr<queue> dq;
    std::shared_ptr<queue> src;           // foreign: owner of pkt
    tx_packet* pkt = nullptr;             // foreign: holds one ref
    std::shared_ptr<vif_core> src_core;
    pool::frame seg[max_tx_slots];        // bounced: owned local frames
    uint16_t nslots = 0;
    uint32_t len = 0;
    uint16_t gso_size = 0;
    uint8_t txflags = 0, gso_type = 0;
    bool bounced = false;
    bool one_to_one = true;
    bool extra = false;
    uint8_t ndata = 0, nring = 0;
    RING_IDX first = 0;
    netif_rx_request req[max_rx_ring_slots];
    uint16_t slot_len[max_rx_ring_slots];
    int16_t slot_status[max_rx_ring_slots];
};

// A foreign item being copied into bounce buffers.
struct conversion {
    std::shared_ptr<queue> dq;
    uint64_t seq = 0;
    std::shared_ptr<queue> src;
    tx_packet* pkt = nullptr;
    std::shared_ptr<vif_core> src_core;
    pool::frame bounce[max_tx_slots];
    uint16_t nslots = 0;
    bool failed = false;
};

struct worker {
    datapath::impl* dp = nullptr;
    uint32_t id = 0;
    std::thread th;
    int wake_fd = -1;
    std::unique_ptr<hv::evtchn> ev;
    std::mutex ev_lock; // serializes calls on `ev`

    std::mutex lock; // protects queues, gen
    std::vector<std::shared_ptr<queue>> queues;
    uint64_t gen = 0;
    std::atomic<bool> stop{false};

    // Worker-private.
    std::vector<std::shared_ptr<queue>> snap;
    uint64_t snap_gen = ~uint64_t{0};
    std::vector<fatal_note> fatals;
    // TX packets whose last reference this worker dropped; answered in
    // batches per source queue (flush_done).
    std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>> done;
    // Scratch of process_tx / copy_and_publish / publish / flush_done, kept
    // across batches: allocating (and growing) these per batch of 64 frames
    // was a measurable part of the per-packet cost. Only process_tx uses
    // tx_pkts, tx_dels, tx_convs, dests and touched (it is not re-entered);
    // copy_and_publish and flush_done are not re-entered either.
    std::vector<tx_packet*> tx_pkts;
    std::vector<hv::copy_segment> hdr_segs;
    std::vector<delivery> tx_dels;
    std::vector<conversion> tx_convs;
    std::vector<std::shared_ptr<vif>> dests;
    std::vector<std::shared_ptr<queue>> touched;
    std::vector<hv::copy_segment> copy_segs;
    struct seg_owner {
        int32_t del;   // >= 0: delivery index
        int32_t conv;  // >= 0: conversion index
        uint8_t slot;  // delivery: RX ring slot (relative)
    };
    std::vector<seg_owner> seg_own;
    std::vector<vif_core*> cores;
    std::vector<uint32_t> order; // publish / flush_done: grouping by queue
    std::vector<tx_packet*> done_batch;

    void kick() noexcept {
        uint64_t one = 1;
        (void)!::write(wake_fd, &one, sizeof one);
    }
    void notify(hv::evtchn_port_t port, vif_core& c) noexcept {
        std::lock_guard g(ev_lock);
        if (ev->notify(port) == 0) bump(c.ctr.notifies_sent);
    }
};

// ---------------------------------------------------------------------------

struct datapath::impl {
    hv::port& port;
    datapath_options opt;
    fatal_fn on_fatal;
    std::unique_ptr<hv::gnttab> tab;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<pool::manager> mgr;
    std::vector<std::unique_ptr<worker>> workers;
    std::atomic<uint32_t> next_worker{0};

    mutable std::mutex vifs_lock; // protects vifs (the registry; the switch has its own lock)
    std::map<std::pair<hv::domid_t, uint32_t>, std::shared_ptr<vif>> vifs;
    l2_switch<vif> sw;

    impl(hv::port& p, const datapath_options& o, fatal_fn f) : port(p), opt(o), on_fatal(std::move(f)) {}

    // ---- helpers ----
    void fatal(worker& w, vif_core& c, const std::string& why) noexcept;
    void run(worker& w) noexcept;
    void process_tx(worker& w, const std::shared_ptr<queue>& q) noexcept;
    time_point service_rx(worker& w, const std::shared_ptr<queue>& q) noexcept;
    void drain_rx(worker& w, const std::shared_ptr<queue>& dq) noexcept;
    void copy_and_publish(worker& w, std::vector<delivery>& dels, std::vector<conversion>& convs) noexcept;
    void finish_conversions(worker& w, std::vector<conversion>& convs) noexcept;
    void publish(worker& w, std::vector<delivery>& dels) noexcept;
    void put_ref(worker& w, const std::shared_ptr<queue>& src, tx_packet* pkt) noexcept;
    void complete_tx(worker& w, queue& q, tx_packet* const* pkts, uint32_t n) noexcept;
    void release_bounce(pool::frame* f, uint32_t n) noexcept;
    bool start_conversion(const std::shared_ptr<queue>& dq, rx_item& it, conversion& cv) noexcept;
    void drop_item(worker& w, rx_item& it, std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>>& refs) noexcept;
    void remove_locked_out(const std::shared_ptr<vif>& v) noexcept;

    void flush_done(worker& w) noexcept;
};

namespace {

// RX slot layout of a frame for one destination (Linux xenvif_rx_skb fills
// every RX page completely; we keep TX slot i -> RX slot i so that each RX
// slot takes exactly one grant copy, and pack only when that would exceed
// what a netfront accepts).
struct rx_plan {
    bool ok = false;
    bool one_to_one = true;
    bool extra = false;
    uint8_t ndata = 0, nring = 0;
};

rx_plan plan_for(const pool::frame* seg, uint32_t nslots, uint32_t len, uint8_t gso_type, const vif_core& dst) {
    rx_plan p;
    uint32_t nonempty = 0;
    for (uint32_t i = 0; i < nslots; ++i) nonempty += seg[i].len != 0;
    const bool sg = dst.params.feature_sg;
    if (sg && nonempty <= rx_max_data_slots) {
        p.one_to_one = true;
        p.ndata = uint8_t(nonempty);
    } else {
        p.one_to_one = false;
        const uint32_t n = std::max<uint32_t>(1, (len + hv::page_size - 1) / hv::page_size);
        if (!sg && n > 1) return p; // needs SG the frontend did not ask for
        p.ndata = uint8_t(n);
    }
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

void bucket(vif_counters& c, uint32_t n) noexcept {
    uint32_t b = 0;
    while (b < 7 && (2u << b) <= n) ++b;
    bump(c.batch_hist[b]);
}

} // namespace

// ---------------------------------------------------------------------------
// Fatal errors: Linux xenvif_fatal_tx_err. The vif stops being served; the
// reason is logged once and reported once, after the worker dropped its locks.

void datapath::impl::fatal(worker& w, vif_core& c, const std::string& why) noexcept {
    if (c.disabled.exchange(true)) return;
    {
        std::lock_guard g(c.reason_lock);
        c.reason = why;
    }
    ZC_LOG(error, tag, "vif%u.%u: fatal error, disabling: %s", unsigned(c.dom), c.devid, why.c_str());
    w.fatals.push_back({c.dom, c.devid, why});
}

// ---------------------------------------------------------------------------
// TX: Linux xenvif_tx_build_gops / xenvif_get_extras / xenvif_count_requests /
// xenvif_set_skb_gso, then the switch and the copies.

namespace {

struct tx_builder {
    queue& q;
    worker& w;
    datapath::impl& dp;
    // Responses written while building (drops); pushed once at the end.
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

} // namespace

void datapath::impl::process_tx(worker& w, const std::shared_ptr<queue>& qp) noexcept {
    queue& q = *qp;
    vif_core& core = *q.core;
    std::vector<tx_packet*>& pkts = w.tx_pkts;
    pkts.clear();
    bool notify = false;
    bool more = false;
    {
        std::lock_guard g(q.tx_lock);
        if (q.tx_dead || core.disabled.load(std::memory_order_relaxed)) {
            q.tx_more = false;
            return;
        }
        tx_builder b{q, w, *this};
        for (;;) {
            if (pkts.size() >= opt.batch) {
                more = true;
                break;
            }
            // xenvif_tx_build_gops: a frontend claiming more requests than
            // the ring holds is broken or hostile.
            const RING_IDX prod = q.tx.req_prod();
            if (RING_IDX(prod - q.tx.req_cons) > tx_back_ring::size) {
                fatal(w, core, format("impossible number of requests: req_prod %u req_cons %u size %u", prod,
                                      q.tx.req_cons, tx_back_ring::size));
                break;
            }
            int work_to_do = int(q.tx.unconsumed());
            if (!work_to_do) break;
            if (q.free_pkts.empty()) break; // every slot is pending already

            // xenvif_get_extras, xenvif_count_requests, the header and page
            // checks, xenvif_set_skb_gso: netback/tx_check.cpp (a pure
            // function, so that bench_netback measures this very code).
            tx_check_result r;
            check_tx_packet(q.tx, q.tx.req_cons, work_to_do, r);
            q.tx.req_cons += r.consumed;
            // Drop reasons are logged even when the chain turns out fatal
            // later: Linux logs them as it finds them.
            if (r.drop != tx_drop_reason::none && g_drop_log.allow()) {
                if (r.drop == tx_drop_reason::too_many_slots)
                    ZC_LOG(warn, tag, "vif%u.%u: too many slots (%u > %u), dropping packet", unsigned(core.dom),
                           core.devid, r.drop_arg[0], r.drop_arg[1]);
                else if (r.drop == tx_drop_reason::slot_oversize)
                    ZC_LOG(warn, tag, "vif%u.%u: slot size %u > remaining size %u, dropping packet",
                           unsigned(core.dom), core.devid, r.drop_arg[0], r.drop_arg[1]);
                else
                    ZC_LOG(warn, tag, "vif%u.%u: bad packet size %u", unsigned(core.dom), core.devid, r.drop_arg[0]);
            }
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
                b.tx_err(r.first, r.extra_count, r.frags, r.nfrags);
                continue;
            }
            const netif_tx_request& txreq = r.first;
            const uint32_t slots = r.nfrags;
            const uint32_t extra_count = r.extra_count;

            // Accepted: the slots are ours until the TX responses go out.
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
            p.refs.store(1, std::memory_order_relaxed); // the batch's reference
            for (uint32_t i = 0; i < p.nslots; ++i) {
                auto f = mgr->stamp_foreign(core.dom, p.req[i].gref, p.req[i].offset, p.req[i].size, true);
                // Bounds were checked above; stamp_foreign re-checks them.
                p.seg[i] = f ? *f : pool::frame{};
            }
            q.pending_slots.fetch_add(p.nslots + extra_count, std::memory_order_relaxed);
            pkts.push_back(&p);
        }
        if (b.wrote) notify = q.tx.push_responses_and_check_notify();
        if (!more && !core.disabled.load(std::memory_order_relaxed)) more = q.tx.final_check_for_requests() &&
                                                                             !q.free_pkts.empty();
        q.tx_more = more && !core.disabled.load(std::memory_order_relaxed);
    }
    if (notify) q.w->notify(q.tx_port, core);
    if (pkts.empty()) return;
    bucket(core.ctr, uint32_t(pkts.size()));

    // Header copies: gref -> local, one hypercall for the batch.
    std::vector<hv::copy_segment>& segs = w.hdr_segs;
    segs.clear();
    for (tx_packet* p : pkts) {
        hv::copy_segment s{};
        s.source.foreign.ref = p->req[0].gref;
        s.source.foreign.offset = p->req[0].offset;
        s.source.foreign.domid = core.dom;
        s.dest.virt = p->hdr;
        s.len = p->hdr_len;
        s.flags = GNTCOPY_source_gref;
        segs.push_back(s);
    }
    int rc = tab->copy(segs.data(), uint32_t(segs.size()));
    bump(core.ctr.grant_copy_batches);
    bump(core.ctr.grant_copy_segments, segs.size());
    bump(core.ctr.header_copy_segments, segs.size());

    std::vector<delivery>& dels = w.tx_dels;
    std::vector<conversion>& convs = w.tx_convs;
    std::vector<std::shared_ptr<vif>>& dests = w.dests;
    std::vector<std::shared_ptr<queue>>& touched = w.touched;
    dels.clear();
    convs.clear();
    touched.clear();
    std::shared_ptr<vif> self;
    {
        std::lock_guard g(vifs_lock);
        auto it = vifs.find({core.dom, core.devid});
        if (it != vifs.end() && it->second->core.get() == &core) self = it->second;
    }
    const time_point now = clock_type::now();

    for (uint32_t k = 0; k < pkts.size(); ++k) {
        tx_packet& p = *pkts[k];
        const int16_t st = rc < 0 ? int16_t(GNTST_general_error) : segs[k].status;
        if (st != GNTST_okay) {
            // xenvif_tx_check_gop: the header could not be read.
            if (g_copy_log.allow())
                ZC_LOG(warn, tag, "vif%u.%u: header copy failed: %s", unsigned(core.dom), core.devid,
                       hv::gntst_name(st));
            p.status = NETIF_RSP_ERROR;
            bump(core.ctr.drop_copy_error);
            continue;
        }
        bump(core.ctr.tx_packets);
        bump(core.ctr.tx_bytes, p.len);
        bump(core.ctr.tx_slots, p.nslots);
        const uint8_t* dst = p.hdr;
        const uint8_t* src = p.hdr + 6;
        if (self) sw.learn(src, self);
        sw.lookup(dst, self.get(), dests);
        uint32_t delivered_somewhere = 0;
        for (auto& dv : dests) {
            vif_core& dc = *dv->core;
            if (dc.disabled.load(std::memory_order_relaxed) || dc.removed.load(std::memory_order_relaxed)) {
                bump(dc.ctr.drop_disabled);
                continue;
            }
            rx_plan plan = plan_for(p.seg, p.nslots, p.len, p.gso_type, dc);
            if (!plan.ok) {
                bump(core.ctr.drop_unsupported);
                continue;
            }
            ++delivered_somewhere;
            const std::shared_ptr<queue>& dq = dv->queues[q.index % dv->queues.size()];
            bool kick_owner = false;
            std::lock_guard g(dq->rx_lock);
            if (dq->rx_dead || dq->stalled) {
                bump(dc.ctr.drop_disabled);
                continue;
            }
            // Direct: nothing waiting ahead of us and room in the RX ring.
            if (!opt.force_bounce && dq->count == 0 && dq->rx.unconsumed() >= plan.nring) {
                delivery& d = dels.emplace_back();
                d.dq = dq;
                d.src = qp;
                d.pkt = &p;
                p.refs.fetch_add(1, std::memory_order_relaxed);
                d.src_core = q.core;
                std::copy(p.seg, p.seg + p.nslots, d.seg);
                d.nslots = p.nslots;
                d.len = p.len;
                d.gso_size = p.gso_size;
                d.txflags = p.txflags;
                d.gso_type = p.gso_type;
                d.one_to_one = plan.one_to_one;
                d.extra = plan.extra;
                d.ndata = plan.ndata;
                d.nring = plan.nring;
                d.first = dq->rx.req_cons;
                for (uint32_t i = 0; i < plan.nring; ++i)
                    d.req[i] = dq->rx.read_request<netif_rx_request>(d.first + i); // RING_COPY_REQUEST
                dq->rx.req_cons += plan.nring;
                continue;
            }
            // Queue behind the frames already waiting, bounded (XSA-392: never
            // an unbounded queue for a frontend that does not post buffers).
            if (dq->count >= dq->cap) {
                bump(dc.ctr.drop_rx_full);
                continue;
            }
            if (dq->count == 0) dq->last_rx = now; // stall clock starts when something waits
            rx_item& it = dq->at(dq->count);
            it = rx_item{};
            it.src = qp;
            it.pkt = &p;
            p.refs.fetch_add(1, std::memory_order_relaxed);
            it.src_core = q.core;
            it.nslots = p.nslots;
            it.len = p.len;
            it.gso_size = p.gso_size;
            it.txflags = p.txflags;
            it.gso_type = p.gso_type;
            it.seq = dq->next_seq++;
            it.expires = now + std::chrono::milliseconds(opt.drain_timeout_ms);
            it.hold_until = now + std::chrono::milliseconds(opt.hold_ms);
            ++dq->count;
            ++dq->nforeign;
            if (!opt.force_bounce) bump(dc.ctr.queued);
            // Give the source its slots back now when holding them would
            // hurt: forced, too many zero-copy frames waiting here, or the
            // source's ring half full of pending slots.
            if (opt.force_bounce || dq->nforeign > opt.rx_queue_limit ||
                q.pending_slots.load(std::memory_order_relaxed) > tx_back_ring::size / 2) {
                conversion& cv = convs.emplace_back();
                if (!start_conversion(dq, it, cv)) convs.pop_back();
            }
            // Tell the frontend to notify when it posts (xenvif_rx_ring_slots_available).
            dq->rx.request_event_after(dq->rx.req_prod());
            kick_owner = dq->w != &w;
            if (std::find(touched.begin(), touched.end(), dq) == touched.end()) touched.push_back(dq);
            if (kick_owner) dq->rx_kick.store(true, std::memory_order_relaxed);
        }
        if (!delivered_somewhere && dests.empty()) {
            bump(core.ctr.drop_no_dest);
            if (g_drop_log.allow())
                ZC_LOG(info, tag,
                       "vif%u.%u: no destination for %02x:%02x:%02x:%02x:%02x:%02x from "
                       "%02x:%02x:%02x:%02x:%02x:%02x (%u bytes, %u slots, first %u)",
                       unsigned(core.dom), core.devid, dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0],
                       src[1], src[2], src[3], src[4], src[5], p.len, unsigned(p.nslots), unsigned(p.hdr_len));
        }
    }

    copy_and_publish(w, dels, convs);

    // The batch's references: packets nobody else holds are complete now.
    for (tx_packet* p : pkts) put_ref(w, qp, p);
    flush_done(w);
    // Bounced frames are ready: deliver them if the destination has room,
    // and let the owners of the other queues re-arm their timers.
    for (auto& dq : touched) {
        drain_rx(w, dq);
        if (dq->w != &w) dq->w->kick();
    }
    // Do not keep queues or vifs alive past the batch (remove_vif).
    touched.clear();
    dests.clear();
}

// Under dq's rx_lock: move a zero-copy item's bytes to bounce buffers (the
// copy itself runs later, outside the lock). False when no bounce buffers.
bool datapath::impl::start_conversion(const std::shared_ptr<queue>& dqp, rx_item& it, conversion& cv) noexcept {
    queue& dq = *dqp;
    pool::pool* bp = mgr->bounce();
    if (!bp || it.bounced || it.converting) return false;
    for (uint32_t i = 0; i < it.nslots; ++i) {
        cv.bounce[i] = pool::frame{};
        if (it.pkt->seg[i].len == 0) continue;
        if (bp->alloc_frame(cv.bounce[i], 0) < 0) {
            release_bounce(cv.bounce, i);
            return false;
        }
        cv.bounce[i].len = it.pkt->seg[i].len;
    }
    cv.dq = dqp;
    cv.seq = it.seq;
    cv.src = it.src;
    cv.pkt = it.pkt;
    cv.src_core = it.src_core;
    cv.nslots = it.nslots;
    std::copy(cv.bounce, cv.bounce + it.nslots, it.bounce);
    it.converting = true;
    // The item no longer pins the source: the conversion job holds the ref.
    it.src.reset();
    --dq.nforeign;
    return true;
}

void datapath::impl::release_bounce(pool::frame* f, uint32_t n) noexcept {
    pool::pool* bp = mgr->bounce();
    for (uint32_t i = 0; i < n; ++i)
        if (f[i].kind == pool::seg_kind::local && bp) bp->release(f[i]);
}

// One grant-copy call for every delivery and conversion of a pass, then the
// responses.
void datapath::impl::copy_and_publish(worker& w, std::vector<delivery>& dels,
                                      std::vector<conversion>& convs) noexcept {
    std::vector<hv::copy_segment>& segs = w.copy_segs;
    std::vector<worker::seg_owner>& own = w.seg_own;
    std::vector<vif_core*>& cores = w.cores;
    segs.clear();
    own.clear();
    cores.clear();
    auto note_core = [&cores](vif_core* c) {
        if (std::find(cores.begin(), cores.end(), c) == cores.end()) cores.push_back(c);
    };

    for (uint32_t di = 0; di < dels.size(); ++di) {
        delivery& d = dels[di];
        const hv::domid_t ddom = d.dq->core->dom;
        vif_core& sc = *d.src_core;
        note_core(&sc);
        // RX ring slot of data slot j: the extra sits after the first.
        auto ring_slot = [&d](uint32_t j) { return uint8_t(j == 0 ? 0 : j + (d.extra ? 1 : 0)); };
        for (uint32_t j = 0; j < d.nring; ++j) {
            d.slot_len[j] = 0;
            d.slot_status[j] = GNTST_okay;
        }
        auto add = [&](const pool::frame& s, uint32_t s_off, uint32_t j, uint32_t d_off, uint32_t len) {
            hv::copy_segment c{};
            if (s.kind == pool::seg_kind::foreign) {
                c.source.foreign.ref = s.gref;
                c.source.foreign.offset = uint16_t(s.offset + s_off);
                c.source.foreign.domid = s.domid;
                c.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
                bump(sc.ctr.vm_to_vm_segments);
            } else {
                c.source.virt = mgr->bounce()->data(s) + s_off;
                c.flags = GNTCOPY_dest_gref;
            }
            const uint8_t rs = ring_slot(j);
            c.dest.foreign.ref = d.req[rs].gref;
            c.dest.foreign.offset = uint16_t(d_off);
            c.dest.foreign.domid = ddom;
            c.len = uint16_t(len);
            segs.push_back(c);
            own.push_back({int32_t(di), -1, rs});
            bump(sc.ctr.grant_copy_segments);
        };
        uint32_t j = 0, off = 0;
        for (uint32_t i = 0; i < d.nslots; ++i) {
            const pool::frame& s = d.seg[i];
            if (s.len == 0) continue;
            if (d.one_to_one) {
                add(s, 0, j, 0, s.len);
                d.slot_len[ring_slot(j)] = s.len;
                ++j;
                continue;
            }
            uint32_t s_off = 0;
            while (s_off < s.len) {
                const uint32_t k = std::min<uint32_t>(uint32_t(hv::page_size) - off, s.len - s_off);
                add(s, s_off, j, off, k);
                off += k;
                s_off += k;
                d.slot_len[ring_slot(j)] = uint16_t(off);
                if (off == hv::page_size) {
                    ++j;
                    off = 0;
                }
            }
        }
    }
    for (uint32_t ci = 0; ci < convs.size(); ++ci) {
        conversion& cv = convs[ci];
        vif_core& sc = *cv.src_core;
        note_core(&sc);
        for (uint32_t i = 0; i < cv.nslots; ++i) {
            const pool::frame& s = cv.pkt->seg[i];
            if (s.len == 0) continue;
            hv::copy_segment c{};
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = s.offset;
            c.source.foreign.domid = s.domid;
            c.dest.virt = mgr->bounce()->data(cv.bounce[i]);
            c.len = s.len;
            c.flags = GNTCOPY_source_gref;
            segs.push_back(c);
            own.push_back({-1, int32_t(ci), 0});
            bump(sc.ctr.grant_copy_segments);
        }
    }
    if (!segs.empty()) {
        const int rc = tab->copy(segs.data(), uint32_t(segs.size()));
        for (vif_core* c : cores) bump(c->ctr.grant_copy_batches);
        for (size_t i = 0; i < segs.size(); ++i) {
            const int16_t st = rc < 0 ? int16_t(GNTST_general_error) : segs[i].status;
            if (st == GNTST_okay) continue;
            if (own[i].del >= 0) dels[size_t(own[i].del)].slot_status[own[i].slot] = st;
            else convs[size_t(own[i].conv)].failed = true;
        }
    }
    finish_conversions(w, convs);
    publish(w, dels);
}

void datapath::impl::finish_conversions(worker& w, std::vector<conversion>& convs) noexcept {
    for (conversion& cv : convs) {
        bool adopted = false;
        if (cv.dq) {
            std::lock_guard g(cv.dq->rx_lock);
            if (!cv.dq->rx_dead) {
                for (uint32_t i = 0; i < cv.dq->count; ++i) {
                    rx_item& it = cv.dq->at(i);
                    if (it.seq != cv.seq || !it.converting) continue;
                    if (cv.failed) {
                        // The source's grant went away under us: the frame is
                        // lost; leave a bounced item that the drain drops.
                        it.len = 0;
                    }
                    it.converting = false;
                    it.bounced = true;
                    it.pkt = nullptr;
                    adopted = true;
                    break;
                }
            }
        }
        if (cv.failed) {
            bump(cv.src_core->ctr.drop_copy_error);
            if (g_copy_log.allow())
                ZC_LOG(warn, tag, "vif%u.%u: fallback copy failed", unsigned(cv.src_core->dom), cv.src_core->devid);
        } else {
            bump(cv.src_core->ctr.fallback_copies);
        }
        if (!adopted) release_bounce(cv.bounce, cv.nslots);
        put_ref(w, cv.src, cv.pkt);
        cv.src.reset();
    }
    convs.clear();
}

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
        if (k && dels[k].dq.get() < dels[k - 1].dq.get()) grouped = false;
    }
    if (!grouped)
        std::stable_sort(order.begin(), order.end(),
                         [&dels](uint32_t a, uint32_t b) { return dels[a].dq.get() < dels[b].dq.get(); });
    const time_point now = clock_type::now();
    for (size_t i = 0; i < order.size();) {
        queue& dq = *dels[order[i]].dq;
        vif_core& dc = *dq.core;
        size_t end = i;
        while (end < order.size() && dels[order[end]].dq.get() == &dq) ++end;
        bool notify = false;
        {
            std::lock_guard g(dq.rx_lock);
            if (!dq.rx_dead) {
                for (size_t k = i; k < end; ++k) {
                    delivery& d = dels[order[k]];
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
                    if (failed || d.len == 0) {
                        bump(d.src_core->ctr.drop_copy_error);
                    } else {
                        bump(dc.ctr.rx_packets);
                        bump(dc.ctr.rx_bytes, d.len);
                        bump(dc.ctr.rx_slots, d.ndata);
                    }
                }
                // Responses go out in ring order: another worker may still be
                // copying into slots reserved before ours.
                while (dq.rx.rsp_prod_pvt != dq.rx.req_cons && dq.done[dq.rx.rsp_prod_pvt & (ring_slots - 1)]) {
                    dq.done[dq.rx.rsp_prod_pvt & (ring_slots - 1)] = 0;
                    ++dq.rx.rsp_prod_pvt;
                }
                notify = dq.rx.push_responses_and_check_notify();
                dq.last_rx = now;
            }
        }
        if (notify) dq.w->notify(dq.rx_port, dc);
        for (size_t k = i; k < end; ++k) {
            delivery& d = dels[order[k]];
            if (d.bounced) {
                release_bounce(d.seg, d.nslots);
            } else if (d.pkt) {
                put_ref(w, d.src, d.pkt);
            }
        }
        i = end;
    }
    dels.clear();
}

// ---------------------------------------------------------------------------
// TX completion: the responses of a packet go out once every copy out of its
// pages is done (xenvif_idx_release / make_tx_response / push_tx_responses).

void datapath::impl::put_ref(worker& w, const std::shared_ptr<queue>& src, tx_packet* pkt) noexcept {
    if (!pkt || !src) return;
    if (pkt->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    w.done.emplace_back(src, pkt);
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
                tx_builder b{q, w, *this};
                b.respond(p.req[0], p.extra_count, p.status);
                for (uint32_t s = 1; s < p.nslots; ++s) b.respond(p.req[s], 0, p.status);
            }
            q.free_pkts.push_back(p.index);
        }
        q.pending_slots.fetch_sub(slots, std::memory_order_relaxed);
        if (!q.tx_dead) notify = q.tx.push_responses_and_check_notify();
    }
    if (notify) q.w->notify(q.tx_port, *q.core); // the port is bound on the owner's handle
    // Slots came free: the owner may consume requests it had to leave.
    q.tx_kick.store(true, std::memory_order_relaxed);
    if (q.w != &w) q.w->kick();
}

// ---------------------------------------------------------------------------
// RX: frames waiting for buffers (Linux xenvif_rx_action, drop of expired
// frames xenvif_rx_queue_drop_expired, stall detection
// xenvif_rx_queue_stalled / xenvif_rx_queue_ready as fixed for XSA-392).

void datapath::impl::drop_item(worker& w, rx_item& it,
                               std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>>& refs) noexcept {
    if (it.converting) {
        // The conversion job owns the buffers and the packet reference; it
        // finds the item gone and releases them.
    } else if (it.bounced) {
        release_bounce(it.bounce, it.nslots);
    } else if (it.pkt) {
        refs.emplace_back(std::move(it.src), it.pkt);
    }
    (void)w;
    it = rx_item{};
}

namespace {
uint32_t needed_of(const rx_item& it, const vif_core& dc, rx_plan* out = nullptr) {
    rx_plan p = plan_for(it.segs(), it.nslots, it.len, it.gso_type, dc);
    if (out) *out = p;
    return p.ok ? p.nring : 1;
}
} // namespace

void datapath::impl::drain_rx(worker& w, const std::shared_ptr<queue>& dqp) noexcept {
    queue& dq = *dqp;
    vif_core& dc = *dq.core;
    std::vector<delivery> dels;
    std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>> drops;
    for (;;) {
        {
            std::lock_guard g(dq.rx_lock);
            if (dq.rx_dead) break;
            while (dq.count > 0 && dels.size() < opt.batch) {
                rx_item& it = dq.at(0);
                if (it.converting) break; // keep the order; its job finishes soon
                const bool src_gone =
                    !it.bounced && (!it.src || it.src->core->removed.load(std::memory_order_relaxed) ||
                                    mgr->revoked(it.pkt->seg[0]));
                rx_plan plan;
                needed_of(it, dc, &plan);
                if (src_gone || !plan.ok || it.len == 0) {
                    if (src_gone) bump(it.src_core->ctr.drop_copy_error);
                    else if (!plan.ok) bump(it.src_core->ctr.drop_unsupported);
                    if (!it.bounced) --dq.nforeign;
                    drop_item(w, it, drops);
                    dq.head = (dq.head + 1) % dq.cap;
                    --dq.count;
                    continue;
                }
                if (dq.rx.unconsumed() < plan.nring) {
                    // xenvif_rx_ring_slots_available: ask for an event, re-check.
                    dq.rx.request_event_after(dq.rx.req_prod());
                    if (dq.rx.unconsumed() < plan.nring) break;
                }
                delivery& d = dels.emplace_back();
                d.dq = dqp;
                d.src_core = it.src_core;
                d.bounced = it.bounced;
                d.nslots = it.nslots;
                std::copy(it.segs(), it.segs() + it.nslots, d.seg);
                if (!it.bounced) {
                    d.src = std::move(it.src);
                    d.pkt = it.pkt;
                    --dq.nforeign;
                }
                d.len = it.len;
                d.gso_size = it.gso_size;
                d.txflags = it.txflags;
                d.gso_type = it.gso_type;
                d.one_to_one = plan.one_to_one;
                d.extra = plan.extra;
                d.ndata = plan.ndata;
                d.nring = plan.nring;
                d.first = dq.rx.req_cons;
                for (uint32_t i = 0; i < plan.nring; ++i)
                    d.req[i] = dq.rx.read_request<netif_rx_request>(d.first + i); // RING_COPY_REQUEST
                dq.rx.req_cons += plan.nring;
                it = rx_item{};
                dq.head = (dq.head + 1) % dq.cap;
                --dq.count;
            }
        }
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

time_point datapath::impl::service_rx(worker& w, const std::shared_ptr<queue>& dqp) noexcept {
    queue& dq = *dqp;
    vif_core& dc = *dq.core;
    time_point next = time_point::max();
    std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>> drops;
    std::vector<conversion> convs;
    bool stalled_now = false;
    {
        std::lock_guard g(dq.rx_lock);
        if (dq.rx_dead) return next;
        const time_point now = clock_type::now();
        auto pop_head = [&](std::atomic<uint64_t>& counter) {
            rx_item& it = dq.at(0);
            if (!it.bounced && !it.converting) --dq.nforeign;
            bump(counter);
            drop_item(w, it, drops);
            dq.head = (dq.head + 1) % dq.cap;
            --dq.count;
        };
        if (dc.disabled.load(std::memory_order_relaxed)) {
            // A disabled vif receives nothing: give every waiting frame's
            // source its slots back.
            while (dq.count && !dq.at(0).converting) pop_head(dc.ctr.drop_disabled);
        }
        // xenvif_rx_queue_drop_expired: frames that waited drain_timeout.
        while (dq.count && !dq.at(0).converting && dq.at(0).expires <= now) pop_head(dc.ctr.drop_rx_full);

        // Stall detection, XSA-392: compare the free slots with what the
        // frame at the head needs, not with 1 (a frontend keeping a single
        // slot free would otherwise never count as stalled).
        if (opt.stall_timeout_ms) {
            const uint32_t avail = dq.rx.unconsumed();
            const uint32_t needed = dq.count ? needed_of(dq.at(0), dc) : 0;
            const auto stall = std::chrono::milliseconds(opt.stall_timeout_ms);
            if (!dq.stalled && dq.count && avail < needed) {
                if (now - dq.last_rx >= stall) {
                    // xenvif_queue_carrier_off: new frames for this queue
                    // are dropped at once; what waits expires as usual.
                    dq.stalled = true;
                    stalled_now = true;
                    bump(dc.ctr.rx_stalls);
                    dq.rx.request_event_after(dq.rx.req_prod());
                } else {
                    next = std::min(next, dq.last_rx + stall);
                }
            } else if (dq.stalled && avail >= needed) {
                // xenvif_queue_ready / xenvif_queue_carrier_on: enough slots
                // for the head frame (or nothing waits any more).
                dq.stalled = false;
                dq.last_rx = now;
            } else if (dq.stalled) {
                dq.rx.request_event_after(dq.rx.req_prod());
            }
        }

        // Frames that held the source's slots long enough (or while the
        // source runs out of slots) move to bounce buffers.
        for (uint32_t i = 0; i < dq.count; ++i) {
            rx_item& it = dq.at(i);
            if (it.bounced || it.converting) continue;
            const bool pressure = it.src && it.src->pending_slots.load(std::memory_order_relaxed) >
                                                tx_back_ring::size / 2;
            if (it.hold_until <= now || pressure || dq.nforeign > opt.rx_queue_limit) {
                conversion& cv = convs.emplace_back();
                if (!start_conversion(dqp, it, cv)) { // no bounce buffers now; retried later
                    convs.pop_back();
                    break;
                }
            } else {
                next = std::min(next, it.hold_until);
            }
        }
        if (dq.count) next = std::min(next, dq.at(0).expires);
    }
    if (stalled_now && g_stall_log.allow())
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

// ---------------------------------------------------------------------------
// The worker loop: block on the event channels and the wake-up eventfd,
// never spin.

void datapath::impl::run(worker& w) noexcept {
    std::vector<hv::evtchn_port_t> ports;
    while (!w.stop.load(std::memory_order_acquire)) {
        {
            std::lock_guard g(w.lock);
            if (w.gen != w.snap_gen) {
                w.snap = w.queues;
                w.snap_gen = w.gen;
            }
        }
        // Timers and leftover work decide how long we may sleep.
        time_point next = time_point::max();
        bool busy = false;
        for (auto& q : w.snap) {
            next = std::min(next, service_rx(w, q));
            if (q->tx_more || q->tx_kick.load(std::memory_order_relaxed) ||
                q->rx_kick.load(std::memory_order_relaxed))
                busy = true;
        }
        int timeout = -1;
        if (busy) {
            timeout = 0;
        } else if (next != time_point::max()) {
            const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_type::now()).count();
            timeout = int(std::clamp<int64_t>(d + 1, 0, 60000));
        }
        pollfd fds[2] = {{w.ev->fd(), POLLIN, 0}, {w.wake_fd, POLLIN, 0}};
        int pr = ::poll(fds, 2, timeout);
        if (pr < 0 && errno != EINTR) {
            ZC_LOG(error, tag, "worker %u: poll: %s", w.id, std::strerror(errno));
            ::usleep(1000);
        }
        if (w.stop.load(std::memory_order_acquire)) break;
        if (fds[1].revents & POLLIN) {
            uint64_t cnt;
            (void)!::read(w.wake_fd, &cnt, sizeof cnt);
        }
        {
            std::lock_guard g(w.lock);
            if (w.gen != w.snap_gen) {
                w.snap = w.queues;
                w.snap_gen = w.gen;
            }
        }
        ports.clear();
        // A deliverable port keeps the handle's fd readable, so when poll
        // says it is not there is nothing to collect: skip pending() (a
        // read() each) on the passes that only continue a long TX batch.
        if (fds[0].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
            std::lock_guard g(w.ev_lock);
            for (;;) {
                auto p = w.ev->pending();
                if (!p) break;
                ports.push_back(*p);
            }
        }
        for (auto& q : w.snap) {
            bool tx = q->tx_more || q->tx_kick.exchange(false, std::memory_order_relaxed);
            bool rx = q->rx_kick.exchange(false, std::memory_order_relaxed);
            for (auto p : ports) {
                if (p == q->tx_port || p == q->rx_port) bump(q->core->ctr.events_received);
                if (p == q->tx_port) tx = true;
                if (p == q->rx_port) rx = true;
            }
            if (tx) process_tx(w, q);
            if (rx) drain_rx(w, q);
        }
        {
            // Unmask after the work: an event that came meanwhile fires again.
            std::lock_guard g(w.ev_lock);
            for (auto p : ports) (void)w.ev->unmask(p);
        }
        if (!w.fatals.empty()) {
            auto fs = std::move(w.fatals);
            w.fatals.clear();
            for (auto& f : fs)
                if (on_fatal) on_fatal(f.dom, f.devid, f.reason);
        }
    }
}

// ---------------------------------------------------------------------------

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
    std::unique_ptr<impl> p(new (std::nothrow) impl(port, o, std::move(on_fatal)));
    if (!p) return fail(-ENOMEM, "out of memory");
    auto tab = port.open_gnttab();
    if (!tab) return fail(tab.error(), "open gnttab");
    p->tab = std::move(*tab);
    auto shr = port.open_gntshr();
    if (!shr) return fail(shr.error(), "open gntshr");
    p->shr = std::move(*shr);
    pool::manager_options mo;
    mo.bounce_buf_size = uint32_t(hv::page_size); // one bounce buffer per TX slot (a slot never crosses its page)
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
    auto v = std::make_shared<vif>();
    v->core = core;

    auto undo = [&d, &v]() { d.remove_locked_out(v); };
    for (uint32_t qi = 0; qi < prm.queues.size(); ++qi) {
        const queue_params& qp = prm.queues[qi];
        auto q = std::make_shared<queue>();
        q->core = core;
        q->index = qi;
        q->w = d.workers[d.next_worker.fetch_add(1) % d.workers.size()].get();
        q->packets.reset(new (std::nothrow) tx_packet[ring_slots]);
        q->cap = 2 * d.opt.rx_queue_limit; // zero-copy frames up to the limit, bounced ones behind them
        q->items.reset(new (std::nothrow) rx_item[q->cap]);
        if (!q->packets || !q->items) {
            undo();
            return fail(-ENOMEM, "out of memory");
        }
        q->free_pkts.reserve(ring_slots);
        for (uint32_t i = ring_slots; i-- > 0;) {
            q->packets[i].index = uint16_t(i);
            q->free_pkts.push_back(uint16_t(i));
        }
        v->queues.push_back(q);
        hv::domid_t dom = prm.frontend;
        int16_t st = 0;
        auto tm = d.tab->map(1, &dom, &qp.tx_ring_ref, true, &st);
        if (!tm) {
            undo();
            return fail(-EFAULT, format("queue %u: cannot map tx-ring-ref %u: %s", qi, qp.tx_ring_ref, hv::gntst_name(st)));
        }
        q->tx_map = *tm;
        if (!q->tx.attach(q->tx_map.addr)) {
            undo();
            return fail(-EINVAL, format("queue %u: TX ring claims more requests than it holds", qi));
        }
        auto rm = d.tab->map(1, &dom, &qp.rx_ring_ref, true, &st);
        if (!rm) {
            undo();
            return fail(-EFAULT, format("queue %u: cannot map rx-ring-ref %u: %s", qi, qp.rx_ring_ref, hv::gntst_name(st)));
        }
        q->rx_map = *rm;
        if (!q->rx.attach(q->rx_map.addr)) {
            undo();
            return fail(-EINVAL, format("queue %u: RX ring claims more requests than it holds", qi));
        }
        // undo() takes ev_lock itself: never call it with ev_lock held (a
        // frontend that dies during the handshake makes the bind fail).
        hv::evtchn_port_t bad_port = 0;
        {
            std::lock_guard g(q->w->ev_lock);
            auto tp = q->w->ev->bind_interdomain(dom, qp.tx_evtchn);
            if (!tp) {
                bad_port = qp.tx_evtchn;
            } else {
                q->tx_port = q->rx_port = *tp;
                if (qp.rx_evtchn != qp.tx_evtchn) {
                    auto rp = q->w->ev->bind_interdomain(dom, qp.rx_evtchn);
                    if (!rp) bad_port = qp.rx_evtchn;
                    else q->rx_port = *rp;
                }
            }
        }
        if (bad_port) {
            undo();
            return fail(-ENOENT, format("queue %u: cannot bind event channel %u", qi, bad_port));
        }
        q->last_rx = clock_type::now();
    }
    {
        std::lock_guard g(d.vifs_lock);
        if (d.vifs.count({prm.frontend, prm.devid})) {
            undo();
            return fail(-EEXIST, "vif already present");
        }
        d.vifs[{prm.frontend, prm.devid}] = v;
    }
    d.sw.add(v, prm.mac);
    for (auto& q : v->queues) {
        {
            std::lock_guard g(q->w->lock);
            q->w->queues.push_back(q);
            ++q->w->gen;
        }
        // Requests may already be waiting: look once without an event.
        q->tx_kick.store(true, std::memory_order_relaxed);
        q->rx_kick.store(true, std::memory_order_relaxed);
        q->w->kick();
    }
    return 0;
}

// Take the vif's queues away from everyone: workers, rings, event channels.
// In-flight users see tx_dead/rx_dead under the queue locks.
void datapath::impl::remove_locked_out(const std::shared_ptr<vif>& v) noexcept {
    v->core->removed.store(true, std::memory_order_relaxed);
    std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>> drops;
    for (auto& q : v->queues) {
        if (q->w) {
            std::lock_guard g(q->w->lock);
            auto& qs = q->w->queues;
            auto it = std::find(qs.begin(), qs.end(), q);
            if (it != qs.end()) {
                qs.erase(it);
                ++q->w->gen;
            }
        }
        if (q->w && q->tx_port) {
            std::lock_guard g(q->w->ev_lock);
            (void)q->w->ev->unbind(q->tx_port);
            if (q->rx_port != q->tx_port) (void)q->w->ev->unbind(q->rx_port);
        }
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
                rx_item& it = q->at(0);
                bump(q->core->ctr.drop_disabled);
                // A converting item's job finds it gone and frees its buffers.
                if (it.converting) {
                } else if (it.bounced) {
                    release_bounce(it.bounce, it.nslots);
                } else if (it.pkt) {
                    drops.emplace_back(std::move(it.src), it.pkt);
                }
                it = rx_item{};
                q->head = (q->head + 1) % q->cap;
                --q->count;
            }
            q->nforeign = 0;
            q->rx.detach();
            if (q->rx_map.addr) (void)tab->unmap(q->rx_map);
        }
    }
    // Completing other vifs' packets needs a worker context for the
    // response batching; use a private one (no worker loop involved).
    if (!drops.empty()) {
        worker tmp;
        tmp.dp = this;
        for (auto& r : drops) {
            if (r.second->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
            complete_tx(tmp, *r.first, &r.second, 1);
        }
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
    // be sent once the last vif of the domain is gone (seed 003's revocation).
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
        i.rx_stalled = false;
        for (auto& q : v->queues) {
            std::lock_guard qg(q->rx_lock);
            i.rx_stalled = i.rx_stalled || q->stalled;
        }
        {
            std::lock_guard rg(c.reason_lock);
            i.disabled_reason = c.reason;
        }
        auto rd = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
        vif_stats& s = i.stats;
        const vif_counters& x = c.ctr;
        s.tx_packets = rd(x.tx_packets);
        s.tx_bytes = rd(x.tx_bytes);
        s.rx_packets = rd(x.rx_packets);
        s.rx_bytes = rd(x.rx_bytes);
        s.tx_slots = rd(x.tx_slots);
        s.rx_slots = rd(x.rx_slots);
        s.grant_copy_segments = rd(x.grant_copy_segments);
        s.grant_copy_batches = rd(x.grant_copy_batches);
        s.header_copy_segments = rd(x.header_copy_segments);
        s.vm_to_vm_segments = rd(x.vm_to_vm_segments);
        s.fallback_copies = rd(x.fallback_copies);
        s.queued = rd(x.queued);
        s.drop_no_dest = rd(x.drop_no_dest);
        s.drop_rx_full = rd(x.drop_rx_full);
        s.drop_malformed = rd(x.drop_malformed);
        s.drop_copy_error = rd(x.drop_copy_error);
        s.drop_unsupported = rd(x.drop_unsupported);
        s.drop_disabled = rd(x.drop_disabled);
        s.rx_stalls = rd(x.rx_stalls);
        s.notifies_sent = rd(x.notifies_sent);
        s.events_received = rd(x.events_received);
        for (int b = 0; b < 8; ++b) s.batch_hist[b] = rd(x.batch_hist[b]);
        out.push_back(std::move(i));
    }
    return out;
}

hv::op_counters datapath::hv_counters() const noexcept {
    hv::op_counters t = _p->tab->counters();
    auto add = [&t](const hv::op_counters& c) {
        t.copy_batches += c.copy_batches;
        t.copy_segments += c.copy_segments;
        t.copy_bytes += c.copy_bytes;
        t.copy_errors += c.copy_errors;
        t.maps += c.maps;
        t.unmaps += c.unmaps;
        t.shares += c.shares;
        t.unshares += c.unshares;
        t.notifies += c.notifies;
    };
    add(_p->shr->counters());
    for (auto& w : _p->workers) {
        std::lock_guard g(w->ev_lock);
        add(w->ev->counters());
    }
    return t;
}

uint32_t datapath::bounce_in_use() const noexcept {
    pool::pool* b = _p->mgr->bounce();
    return b ? b->counters().in_use : 0;
}

} // namespace zc::netback
