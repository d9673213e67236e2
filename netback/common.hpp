// SPDX-License-Identifier: MIT
// zc-netback's data path, private part: the structs the data-path files
// share (vif_core, queue, tx_packet, rx_item, delivery, conversion, worker),
// the declaration of datapath::impl, constants and small helpers. Follows
// Linux drivers/net/xen-netback/common.h (struct xenvif, xenvif_queue).
// The data path is split as Linux splits xen-netback: interface.cpp (vif
// lifetime, interface.c), tx.cpp (TX, netback.c), copy.cpp (the grant-copy
// batch and bounce copies), rx.cpp (RX, rx.c), worker.cpp (the threads),
// placement.cpp (which worker serves a queue).

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
// Placement (placement.cpp): a queue may move to another worker, so that
// both ends of its traffic are served by one worker (no cross-worker
// delivery, kick or wake-up per batch). Only the current owner moves it,
// between two passes of its loop, so everything marked "owner only" is
// handed over whole: the new owner sees it after taking its worker::lock
// (refresh_snapshot). The queue's bind_lock protects the binding: `w` and
// the local ports. Notifying the frontend (notify_frontend) takes bind_lock
// and then the owner's ev_lock; a move and remove_locked_out take bind_lock
// and then the workers' lock and ev_lock, one at a time. bind_lock is never
// taken while holding any other lock, so that order is the only one.
// Threads that read `w` without bind_lock only kick the owner
// (kick_owner): a kick of the old owner is harmless, and the move sets the
// queue's kick flags for the new one.
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
//         to destination RX page, every RX page filled before the next
//         (Linux xenvif_rx_next_chunk);
// fallback: gref->local into bounce buffers (the frame's bytes packed,
//           ceil(len / 4096) buffers), then local->gref, counted; charged
//           to the sender's and the receiver's bounce quotas.
// (copy.cpp is where the payload copies are made; see docs/ARCHITECTURE.md,
// "Copies per path".)
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "netback/counters.hpp"
#include "netback/datapath.hpp"
#include "netback/source_check.hpp"
#include "netback/offload.hpp"
#include "netback/switch.hpp"
#include "netback/tx_check.hpp"
#include "pool/manager.hpp"
#include "ring/netif_ring.hpp"
#include "ring/zc_direct.hpp"

namespace zc::netback {

inline constexpr const char* tag = "netback";

// legacy_slots_max, fatal_skb_slots, max_tx_slots, eth_hlen: tx_check.hpp.
inline constexpr uint32_t tx_copy_len = 128; // XEN_NETBACK_TX_COPY_LEN
// Data slots a Linux netfront accepts for one packet (xennet_get_responses).
inline constexpr uint32_t rx_max_data_slots = XEN_NETIF_NR_SLOTS_MIN;
inline constexpr uint32_t max_rx_ring_slots = max_tx_slots + 1; // data + the GSO extra
inline constexpr uint32_t ring_slots = tx_back_ring::size;
// A netfront stops its queue when fewer TX slots than this are free (Linux
// xen-netfront netfront_tx_slot_available): the source "runs short".
inline constexpr uint32_t tx_short_slots = XEN_NETIF_NR_SLOTS_MIN + 1;
// RX slots the frames waiting for one queue may need: two RX rings' worth.
inline constexpr uint32_t rx_queue_slots = 2 * ring_slots;

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept { c.fetch_add(n, std::memory_order_relaxed); }

inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// The live counters of a vif: atomic copies of vif_stats' fields
// (netback/counters.hpp), bumped by whichever worker sees the event.
struct vif_counters {
#define ZC_NETBACK_ATOMIC_(name, unit, drop, help) std::atomic<uint64_t> name{0};
    ZC_NETBACK_VIF_COUNTERS(ZC_NETBACK_ATOMIC_)
#undef ZC_NETBACK_ATOMIC_
    std::atomic<uint64_t> batch_hist[batch_hist_buckets] = {};

    vif_stats snapshot() const noexcept {
        vif_stats s;
#define ZC_NETBACK_READ_(name, unit, drop, help) s.name = name.load(std::memory_order_relaxed);
        ZC_NETBACK_VIF_COUNTERS(ZC_NETBACK_READ_)
#undef ZC_NETBACK_READ_
        for (unsigned b = 0; b < batch_hist_buckets; ++b) s.batch_hist[b] = batch_hist[b].load(std::memory_order_relaxed);
        return s;
    }
};

// The counters of vifs gone (datapath::retired_stats).
struct retired_totals {
    std::mutex lock; // protects stats
    vif_stats stats;
};

struct queue;
struct tx_packet;

// The direct path at a receiving vif (docs/ARCHITECTURE.md, "Direct path
// (guest to guest)"; wire format ring/zc_direct.hpp; direct.cpp): the
// senders' TX requests whose payload descriptors it was given, each under a
// cookie until it puts the cookie on its release ring. A cookie is the
// entry's index in the low bits and the entry's generation in the high
// bits, so that a stale or duplicated cookie matches nothing.
inline constexpr uint32_t direct_cookie_bits = 10;
inline constexpr uint32_t direct_cookies = 1u << direct_cookie_bits; // entries per receiver
struct direct_entry {
    std::shared_ptr<queue> src; // the sender's queue owning `pkt`; null: free
    tx_packet* pkt = nullptr;   // holds one reference until released
    const void* sender = nullptr; // the sender's vif_core (per-sender bound)
    uint16_t gen = 0;
};
struct direct_rx {
    std::mutex lock; // protects everything below; never held with another lock
    hv::mapping map; // the release ring page, granted by the frontend
    ring::zc_direct::release_back_ring ring;
    bool dead = false; // the vif is being removed: no new cookies
    direct_entry e[direct_cookies];
    std::vector<uint16_t> free;                  // free entry indices
    // Outstanding per sending vif with any: a flat list (a receiver has few
    // senders at a time; at most direct_cookies), scanned from the last used.
    std::vector<std::pair<const void*, uint32_t>> per_sender;
    std::atomic<uint32_t> outstanding{0};        // gauge (vif_info)
};

// What a vif's queues share with it and with frames in flight: identity,
// features, counters, the disabled state. Outlives the vif while anything
// in flight refers to it (Linux struct xenvif).
struct vif_core {
    hv::domid_t dom = hv::domid_invalid;
    uint32_t devid = 0;
    vif_params params;
    vif_counters ctr;
    std::atomic<bool> disabled{false};
    std::atomic<bool> removed{false};
    std::mutex reason_lock; // protects reason
    std::string reason;
    // Log rate limits of the lines about this vif (its frontend can trigger
    // them): one per vif, so that a noisy guest does not silence the lines
    // about the others.
    log::ratelimit drop_log{10, 1};
    log::ratelimit copy_log{10, 1};
    log::ratelimit stall_log{10, 1};
    std::shared_ptr<retired_totals> retired;
    // Bounce-pool bytes held for frames this vif sent / frames waiting for
    // it (datapath_options::bounce_src_quota / bounce_dst_quota; copy.cpp
    // alloc_bounce and free_bounce).
    std::atomic<uint64_t> bounce_src{0}, bounce_dst{0};
    // The direct path's receiver state (direct.cpp): non-null when the vif
    // negotiated feature-zc-direct. Set before the vif is published.
    std::unique_ptr<direct_rx> direct;

    vif_core() = default;
    vif_core(const vif_core&) = delete;
    vif_core& operator=(const vif_core&) = delete;
    // The last frame in flight for this vif is done: its counters join the
    // retired totals.
    ~vif_core() {
        if (!retired) return;
        const vif_stats s = ctr.snapshot();
        std::lock_guard g(retired->lock);
        retired->stats += s;
    }
};

struct worker;
struct queue;

// Late EOI of one event channel (Linux xen_irq_lateeoi_locked, XSA-332):
// the spurious events in a row (events that found no work) and, while the
// port's unmask is held back, when it is due. Owner only; worker.cpp.
struct eoi_state {
    uint8_t spurious = 0;
    time_point due = time_point::max(); // max: not held back
};

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
    offload_info off;       // from check_offload (switch_batch)
    // A direct-path request (ring/zc_direct.hpp): slot 0 is the headers
    // (hdr_len == req[0].size), the payload stays in the sender's grant.
    bool direct = false;
    hv::domid_t direct_dom = 0;   // the domain the payload is granted to
    uint32_t direct_gref = 0;
    uint16_t direct_offset = 0, direct_len = 0;
    // Deliveries still reading the source pages. The TX responses go out
    // when it drops to zero (never before the copies are done).
    std::atomic<uint32_t> refs{0};
};

// A frame waiting in a destination queue for RX buffers.
struct rx_item {
    std::shared_ptr<queue> src;          // foreign: the queue owning `pkt`
    tx_packet* pkt = nullptr;            // foreign: holds one ref
    std::shared_ptr<vif_core> src_core;  // counters of the sender
    pool::frame bounce[max_tx_slots];    // bounced: the frame's bytes packed, `nslots` buffers
    uint16_t nslots = 0;                 // zero copy: the packet's slots; bounced: buffers
    uint32_t len = 0;
    uint16_t gso_size = 0;
    uint8_t txflags = 0;
    uint8_t gso_type = 0;
    uint8_t nring = 0;                   // RX slots it needs (rx_plan::nring; counted in queue::held_slots)
    bool bounced = false;
    bool converting = false;             // a bounce copy is in flight; its job owns the buffers
    bool complete_csum = false;          // to bounce buffers at once, its checksum completed there (offload.hpp)
    uint32_t held_len = 0;               // counted in queue::held_bytes (len may become 0 on a failed copy)
    uint32_t bounce_bytes = 0;           // charged on src_core's and the queue's bounce quotas (copy.cpp)
    uint8_t tx_slots = 0;                // zero copy: the source's TX slots it holds (queue::held_tx)
    uint64_t seq = 0;
    time_point queued{}, expires{}, hold_until{};

    const pool::frame* segs() const noexcept { return bounced ? bounce : pkt->seg; }
};

// One queue of a vif (Linux struct xenvif_queue).
struct queue {
    std::shared_ptr<vif_core> core;
    uint32_t index = 0;
    std::mutex bind_lock;                       // protects changes of w, tx_port, rx_port (placement)
    std::atomic<worker*> w{nullptr};            // the owner; written under bind_lock
    hv::evtchn_port_t tx_port = 0, rx_port = 0; // local ports on w's handle (equal when shared)
    eoi_state tx_eoi, rx_eoi;                   // rx_eoi unused when the port is shared
    // Placement (placement.cpp), owner only: where this queue's frames went
    // since the last look (a majority vote over destination queues), the
    // frames switched, consecutive looks with one dominant destination on
    // another worker, and the last move.
    std::weak_ptr<queue> dst;
    const queue* dst_raw = nullptr;
    uint32_t dst_votes = 0, dst_hits = 0, sent = 0, streak = 0;
    time_point moved_at{}, looked_at{};
    std::atomic<uint64_t> load{0};              // frames switched per second (last look)
    std::atomic<worker*> move_to{nullptr};      // a move asked by another queue's owner
    // RX timers (service_rx): the owner runs them when due, when its RX
    // event or kick came, or when rx_rearm says frames were queued.
    time_point rx_timer = time_point::min();    // owner only
    std::atomic<bool> rx_rearm{false};

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
    tx_credit credit;                       // owner only: the vif's `rate` (Linux tx_credit_exceeded)

    // ---- RX ----
    std::mutex rx_lock;
    rx_back_ring rx;
    hv::mapping rx_map;
    bool rx_dead = false;
    bool stalled = false;
    time_point last_rx{};
    std::unique_ptr<rx_item[]> items; // circular, `cap` entries
    uint32_t cap = 0, head = 0, count = 0, nforeign = 0;
    // count != 0 or stalled, written under rx_lock (note_waiting): a queue
    // with nothing waiting has no RX timer to run, so poll_timeout skips it
    // when every queue's timers are re-armed (worker::rearm_all).
    std::atomic<bool> waiting{false};
    uint64_t held_bytes = 0;   // bytes of the waiting frames (datapath_options::rx_queue_bytes)
    uint32_t held_slots = 0;   // RX slots they need (rx_queue_slots)
    uint32_t held_tx = 0;      // TX slots of the sources their zero-copy frames hold (datapath_options::held_tx_slots)
    uint64_t next_seq = 1;
    uint8_t done[ring_slots] = {}; // response written, waiting for earlier slots to publish
    std::atomic<bool> rx_kick{false};

    rx_item& at(uint32_t i) noexcept { return items[(head + i) % cap]; }
    // Under rx_lock: the head item leaves the queue (its frame already moved
    // or released); what it still refers to is reset.
    void pop_head() noexcept {
        rx_item& it = items[head];
        held_bytes -= it.held_len;
        held_slots -= it.nring;
        it = rx_item{};
        head = (head + 1) % cap;
        --count;
        note_waiting();
    }
    void note_waiting() noexcept { waiting.store(count != 0 || stalled, std::memory_order_relaxed); }
    // Under rx_lock: a zero-copy item no longer holds its source's slots
    // (delivered, converted or dropped).
    void unpin(rx_item& it) noexcept {
        --nforeign;
        held_tx -= it.tx_slots;
        it.tx_slots = 0;
    }
};

// Placement, on the hot path (switch_to, owner of `q`): one frame of `q`
// went to `dq`. A majority vote (Boyer-Moore) finds the destination that
// takes most of the queue's frames without a table.
inline void note_destination(queue& q, const std::shared_ptr<queue>& dq) noexcept {
    ++q.sent;
    if (dq.get() == q.dst_raw) {
        ++q.dst_votes;
        ++q.dst_hits;
    } else if (q.dst_votes == 0) {
        q.dst = dq;
        q.dst_raw = dq.get();
        q.dst_votes = q.dst_hits = 1;
    } else {
        --q.dst_votes;
    }
}

// Whether a source queue's frontend is (nearly) out of TX slots: fewer
// free than a netfront needs to send its largest packet, not counting
// `freeing` slots whose conversion is already started (rx.cpp convert_held).
inline bool runs_short(const queue& src, uint32_t freeing) noexcept {
    return src.pending_slots.load(std::memory_order_relaxed) + tx_short_slots > ring_slots + freeing;
}

struct uplink;

struct vif {
    std::shared_ptr<vif_core> core;
    std::vector<std::shared_ptr<queue>> queues;
    uplink* up = nullptr; // non-null: this switch port is an uplink (uplink.cpp), queues is empty
};

// A guest frame on its way to an uplink (uplink.cpp): the UMEM frame its
// grant-copy segments [seg_begin, seg_end) of worker::up_segs fill.
struct uplink_tx {
    uplink* up = nullptr;
    vif_core* src = nullptr;
    pool::frame f;
    uint32_t seg_begin = 0, seg_end = 0;
    uint8_t txflags = 0;
    // One segment of a software-segmented GSO frame (uplink_gso.cpp):
    // headers to fix up once the payload is in.
    uint8_t gso = 0;           // XEN_NETIF_GSO_TYPE_* of the super-frame, 0: a plain frame
    bool gso_last = false;
    uint16_t l3 = 0, l4 = 0;   // header offsets in the frame
    uint32_t gso_index = 0;    // segment number
    uint32_t gso_mss = 0;
};

struct fatal_note {
    hv::domid_t dom;
    uint32_t devid;
    std::string reason;
};

// RX slot layout of a frame for one destination: ceil(len / 4096) data
// slots, every RX page filled before the next (Linux xenvif_rx_skb), plus
// the GSO extra. rx.cpp.
struct rx_plan {
    bool ok = false;
    bool extra = false;
    uint8_t ndata = 0, nring = 0;
};
rx_plan plan_for(uint32_t len, uint8_t gso_type, const vif_core& dst);
// RX ring slots the item needs at `dc` (1 when it cannot go there at all).
uint32_t needed_of(const rx_item& it, const vif_core& dc, rx_plan* out = nullptr);

// Where the frame for one delivery comes from and goes to.
//
// A delivery made by a TX batch (switch_to, direct_run) borrows: its queues
// and vif are kept alive by the batch (the source queue by the caller of
// process_tx, the destinations by worker::batch_vifs) and the packet by the
// batch's own reference, which is dropped only after copy_and_publish
// (finish_tx_batch). No shared_ptr copy and no reference count per frame:
// those atomics were a measurable part of the per-frame cost at 64 bytes
// (bench/PROFILE.md). A delivery of a waiting frame (take_rx_items) owns
// what the rx_item owned: `src_hold`, `core_hold` and, when `owns_ref`, one
// of pkt's references; its destination is kept alive by drain_rx's caller.
struct delivery {
    // Constructed once per frame: only what every path reads is initialised
    // (value-initialising its kilobyte was a measurable part of the per-frame
    // cost at 64 bytes); the arrays are written before they are read.
    delivery() noexcept {}
    queue* dq = nullptr;
    queue* src = nullptr;                 // foreign: owner of pkt
    tx_packet* pkt = nullptr;             // foreign: its seg[] are the slots
    vif_core* src_core = nullptr;
    bool owns_ref = false;                // holds one of pkt's references (a waiting frame's)
    std::shared_ptr<queue> src_hold;      // a waiting frame's: keeps src alive
    std::shared_ptr<vif_core> core_hold;  // a waiting frame's: keeps src_core alive
    union {                               // left uninitialised by the constructor
        pool::frame seg[max_tx_slots];    // bounced: owned local frames (written when bounced is set)
    };
    uint16_t nslots = 0;
    uint32_t len = 0;
    uint16_t gso_size = 0;
    uint8_t txflags = 0, gso_type = 0;
    bool bounced = false;
    bool extra = false;
    bool rx_grant_fault = false;          // a copy failed on the destination's own grant
    uint32_t bounce_bytes = 0;            // bounced: charged on src_core's and dq's quotas
    bool direct = false;                  // a direct-path descriptor: headers, then two extras (direct.cpp)
    bool direct_failed = false;           // its header did not arrive: the cookie is cancelled
    uint16_t cookie = 0;
    uint8_t ndata = 0, nring = 0;
    RING_IDX first = 0;
    netif_rx_request req[max_rx_ring_slots];
    uint16_t slot_len[max_rx_ring_slots];
    int16_t slot_status[max_rx_ring_slots];

    const pool::frame* segs() const noexcept { return bounced ? seg : pkt->seg; }
};
// Under dq's rx_lock: take plan.nring RX requests of `dq` for `d`
// (RING_COPY_REQUEST each) and record the layout. rx.cpp.
void reserve_rx(delivery& d, queue& dq, const rx_plan& plan) noexcept;

// A foreign item being copied into bounce buffers.
struct conversion {
    std::shared_ptr<queue> dq;
    uint64_t seq = 0;
    std::shared_ptr<queue> src;
    tx_packet* pkt = nullptr;
    std::shared_ptr<vif_core> src_core;
    pool::frame bounce[max_tx_slots];     // the frame's bytes packed
    uint16_t nslots = 0;                  // pkt's slots
    uint16_t nbuf = 0;                    // bounce buffers
    uint32_t bounce_bytes = 0;            // charged on src_core's and dq's quotas
    bool failed = false;
    bool complete_csum = false;           // rx_item::complete_csum
    bool csum_failed = false;             // complete_checksum could not parse it (dropped, drop_no_csum)
};

// Why a fallback got no bounce buffers (alloc_bounce).
enum class bounce_rc { ok, src_quota, dst_quota, no_buffers };

// TX packets whose last reference was dropped, with their queue.
using packet_refs = std::vector<std::pair<std::shared_ptr<queue>, tx_packet*>>;

// A data-path thread (Linux: the per-queue kthreads and NAPI context).
struct worker {
    datapath::impl* dp = nullptr;
    uint32_t id = 0;
    std::thread th;
    int wake_fd = -1;
    std::unique_ptr<hv::evtchn> ev;
    std::mutex ev_lock; // serializes calls on `ev`

    std::mutex lock; // protects queues, gen
    std::atomic<uint32_t> assigned{0}; // queues given to this worker (pick_worker, a move), until removed
    std::vector<std::shared_ptr<queue>> queues;
    uint64_t gen = 0;
    std::atomic<bool> stop{false};
    time_point placed_at{}; // worker-private: the last placement look (placement.cpp)

    // Worker-private.
    std::vector<std::shared_ptr<queue>> snap;
    uint64_t snap_gen = ~uint64_t{0};
    std::vector<fatal_note> fatals;
    // A TX batch queued frames or a vif was disabled: every queue's RX
    // timers look again (a source running short changes convert_held).
    bool rearm_all = true;
    // TX packets whose last reference this worker dropped; answered in
    // batches per source queue (flush_done).
    packet_refs done;
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
    // The destinations of earlier lookups of this TX batch: the batch's
    // deliveries borrow their queues (see delivery) until finish_tx_batch.
    std::vector<std::shared_ptr<vif>> batch_vifs;
    std::vector<std::shared_ptr<queue>> touched;
    // switch_batch: direct-path requests in a row with the same destinations
    // (direct.cpp direct_run), and their cookies.
    std::vector<tx_packet*> direct_pend;
    std::vector<uint16_t> direct_cookie_buf;
    std::vector<hv::copy_segment> copy_segs;
    struct seg_owner {
        int32_t del;   // >= 0: delivery index
        int32_t conv;  // >= 0: conversion index
        uint8_t slot;  // delivery: RX ring slot (relative)
    };
    std::vector<seg_owner> seg_own;
    // The sending vifs of a copy pass, with their segment counts: counted
    // once per pass (copy_and_publish), not per delivery.
    struct core_tally {
        vif_core* core;
        uint64_t segs, vm_to_vm, hdr_payload;
    };
    std::vector<core_tally> cores;
    std::vector<uint32_t> order; // publish / flush_done: grouping by queue
    std::vector<tx_packet*> done_batch;
    // uplink.cpp: guest frames to uplinks in this TX batch, and their copies.
    std::vector<uplink_tx> up_tx;
    std::vector<hv::copy_segment> up_segs;

    void kick() noexcept {
        uint64_t one = 1;
        (void)!::write(wake_fd, &one, sizeof one);
    }
    void notify(hv::evtchn_port_t port, vif_core& c) noexcept {
        std::lock_guard g(ev_lock);
        if (ev->notify(port) == 0) bump(c.ctr.notifies_sent);
    }
};

// interface.cpp: binds a queue's frontend ports on `on`'s handle; 0 or
// the remote port that failed (nothing stays bound then).
hv::evtchn_port_t bind_ports(worker& on, hv::domid_t dom, const queue_params& qp, hv::evtchn_port_t& tx,
                             hv::evtchn_port_t& rx) noexcept;

// Notifies q's frontend on its TX or RX port, on the handle the port is
// bound to, whichever worker calls (see "Placement" above).
inline void notify_frontend(queue& q, bool rx) noexcept {
    std::lock_guard b(q.bind_lock);
    const hv::evtchn_port_t p = rx ? q.rx_port : q.tx_port;
    if (p) q.w.load(std::memory_order_relaxed)->notify(p, *q.core);
}

// Wakes q's owner unless it is `self`, after the caller set one of q's kick
// flags: the flag is published before the owner is read, and a move sets
// the flags again after changing the owner, so neither side misses it.
// A queue of `self` stays its own meanwhile (only the owner moves it), so
// that case needs neither the fence nor a kick.
inline void kick_owner(queue& q, const worker* self) noexcept {
    if (self && q.w.load(std::memory_order_relaxed) == self) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    worker* o = q.w.load(std::memory_order_seq_cst);
    if (o && o != self) o->kick();
}

// Drops one reference of p; true when it was the last (the caller then
// completes p). The holder of the only reference needs no atomic write: no
// one else can take one (references are only ever taken by a holder).
inline bool drop_ref(tx_packet& p) noexcept {
    return p.refs.load(std::memory_order_acquire) == 1 || p.refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
}

// switch_batch holds the rx_lock of one destination queue across a run of
// frames to it (a batch is almost always one flow), not once per frame.
// Released before anything that takes another lock (the switch's, a
// direct-path table, an uplink) and at the end of the batch, so that a
// thread still holds at most one queue lock ("Threads and locks").
struct rx_hold {
    queue* q = nullptr;
    rx_hold() = default;
    rx_hold(const rx_hold&) = delete;
    rx_hold& operator=(const rx_hold&) = delete;
    ~rx_hold() { release(); }
    void take(queue& dq) noexcept {
        if (q == &dq) return;
        release();
        dq.rx_lock.lock();
        q = &dq;
    }
    void release() noexcept {
        if (q) q->rx_lock.unlock();
        q = nullptr;
    }
};

// Appends to w's TX batch a delivery of p (borrowing the batch's reference
// and queues, see delivery) from its source queue `src` to `dq`, with the packet's length and flags;
// the caller sets the slot count, the GSO fields and reserves the RX slots.
inline delivery& add_delivery(worker& w, const std::shared_ptr<queue>& dq, const std::shared_ptr<queue>& src,
                              tx_packet& p) noexcept {
    delivery& d = w.tx_dels.emplace_back();
    d.dq = dq.get();
    d.src = src.get();
    d.pkt = &p; // borrows the batch's reference (see delivery)
    d.src_core = src->core.get();
    d.len = p.len;
    d.txflags = p.txflags;
    return d;
}

// ---------------------------------------------------------------------------

struct datapath::impl {
    hv::port& port;
    datapath_options opt;
    fatal_fn on_fatal;
    std::unique_ptr<hv::gnttab> tab;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<pool::manager> mgr;
    std::vector<std::unique_ptr<worker>> workers;
    std::shared_ptr<retired_totals> retired = std::make_shared<retired_totals>();

    mutable std::mutex vifs_lock; // protects vifs (the registry; the switch has its own lock)
    std::map<std::pair<hv::domid_t, uint32_t>, std::shared_ptr<vif>> vifs;
    l2_switch<vif> sw;
    std::vector<std::shared_ptr<uplink>> uplinks; // added before vifs connect; fixed afterwards
    // datapath_options' bounce quotas and held_tx_slots with the defaults
    // resolved (create).
    uint64_t bounce_src_quota = 0, bounce_dst_quota = 0;
    uint32_t held_tx_max = 0;

    impl(hv::port& p, const datapath_options& o, fatal_fn f) : port(p), opt(o), on_fatal(std::move(f)) {}

    // ---- worker.cpp: the loop, fatal errors ----
    void run(worker& w) noexcept;
    void fatal(worker& w, vif_core& c, const std::string& why) noexcept;
    void report_fatals(worker& w) noexcept;
    int poll_timeout(worker& w) noexcept;
    void serve_queues(worker& w, std::vector<hv::evtchn_port_t>& ports) noexcept;

    // ---- tx.cpp: TX intake, switching, TX completion ----
    void process_tx(worker& w, const std::shared_ptr<queue>& q) noexcept;
    void read_tx_ring(worker& w, queue& q) noexcept;
    tx_packet* accept_tx_packet(queue& q, const tx_check_result& r) noexcept;
    int copy_headers(worker& w, vif_core& core) noexcept;
    void switch_batch(worker& w, const std::shared_ptr<queue>& q, int hdr_rc) noexcept;
    void switch_to(worker& w, const std::shared_ptr<queue>& q, tx_packet& p, vif& dv, time_point now,
                   rx_hold& h) noexcept;
    void enqueue_waiting(worker& w, const std::shared_ptr<queue>& q, tx_packet& p,
                         const std::shared_ptr<queue>& dq, uint32_t nring, time_point now,
                         bool csum = false) noexcept;
    void finish_tx_batch(worker& w, const std::shared_ptr<queue>& q) noexcept;
    void put_ref(worker& w, const std::shared_ptr<queue>& src, tx_packet* pkt) noexcept;
    void put_ref(worker& w, std::shared_ptr<queue>&& src, tx_packet* pkt) noexcept;
    void flush_done(worker& w) noexcept;
    void complete_tx(worker& w, queue& q, tx_packet* const* pkts, uint32_t n) noexcept;

    // ---- copy.cpp: the grant-copy batch, bounce conversions ----
    void copy_and_publish(worker& w, std::vector<delivery>& dels, std::vector<conversion>& convs) noexcept;
    void add_delivery_segments(worker& w, delivery& d, uint32_t di) noexcept;
    void add_conversion_segments(worker& w, conversion& cv, uint32_t ci) noexcept;
    void run_copy_batch(worker& w, std::vector<delivery>& dels, std::vector<conversion>& convs) noexcept;
    void attribute_rx_faults(std::vector<delivery>& dels) noexcept;
    bounce_rc start_conversion(const std::shared_ptr<queue>& dq, rx_item& it, conversion& cv) noexcept;
    void finish_conversions(worker& w, std::vector<conversion>& convs) noexcept;
    void complete_bounced_checksum(conversion& cv) noexcept;
    void release_bounce(pool::frame* f, uint32_t n) noexcept;
    bounce_rc alloc_bounce(vif_core& src, vif_core& dst, uint32_t len, pool::frame* out, uint32_t& nbuf,
                           uint32_t& charged) noexcept;
    void free_bounce(pool::frame* f, uint32_t n, vif_core& src, vif_core& dst, uint32_t charged) noexcept;
    static void count_bounce_drop(bounce_rc rc, vif_core& src, vif_core& dst) noexcept;

    // ---- rx.cpp: RX publish, drain, timers ----
    void publish(worker& w, std::vector<delivery>& dels) noexcept;
    void publish_to(worker& w, std::vector<delivery>& dels, size_t begin, size_t end, time_point now) noexcept;
    struct rx_tally {
        uint64_t packets = 0, bytes = 0, slots = 0;
    };
    void write_rx_responses(queue& dq, delivery& d, rx_tally& t) noexcept;
    void drain_rx(worker& w, const std::shared_ptr<queue>& dq) noexcept;
    bool take_rx_items(const std::shared_ptr<queue>& dq, std::vector<delivery>& dels, packet_refs& drops) noexcept;
    time_point service_rx(worker& w, const std::shared_ptr<queue>& dq) noexcept;
    void drop_expired(queue& dq, time_point now, packet_refs& drops) noexcept;
    bool check_rx_stall(queue& dq, time_point now, time_point& next) noexcept;
    void convert_held(const std::shared_ptr<queue>& dq, time_point now, time_point& next,
                      std::vector<conversion>& convs, packet_refs& drops) noexcept;
    void drop_item(rx_item& it, vif_core& dst, packet_refs& refs) noexcept;
    void discard_held(queue& dq, rx_item& it, packet_refs& refs) noexcept;

    // ---- direct.cpp: the direct path (ring/zc_direct.hpp) ----
    void direct_run(worker& w, const std::shared_ptr<queue>& q, rx_hold& h) noexcept;
    size_t direct_hold(vif_core& dc, const std::shared_ptr<queue>& q, tx_packet* const* pkts, size_t n,
                       uint16_t* cookies) noexcept;
    void direct_cancel(worker& w, vif_core& dc, const uint16_t* cookies, uint32_t n) noexcept;
    void add_direct_segments(worker& w, delivery& d, uint32_t di) noexcept;
    void write_direct_responses(queue& dq, delivery& d, rx_tally& t) noexcept;
    bool releases_pending(queue& q) noexcept;
    void process_releases(worker& w, queue& q) noexcept;
    int attach_direct(vif_core& c, std::string* why) noexcept;
    void direct_receiver_gone(vif_core& c) noexcept;
    void direct_sender_gone(const vif_core& c) noexcept;

    // ---- uplink.cpp: AF_XDP uplinks ----
    void uplink_out(worker& w, const queue& q, const tx_packet& p, uplink& u) noexcept;
    void uplink_out_gso(worker& w, const queue& q, const tx_packet& p, uplink& u) noexcept;
    void flush_uplink_tx(worker& w) noexcept;
    void uplink_rx_loop(uplink& u) noexcept;
    // What the receive thread does with `n` frames from the wire.
    void uplink_receive(uplink& u, pool::frame* fs, uint32_t n, std::vector<std::shared_ptr<vif>>& dests,
                        std::vector<std::shared_ptr<queue>>& touched) noexcept;
    void uplink_add_port(const std::shared_ptr<uplink>& u) noexcept;
    void uplink_deliver(uplink& u, vif& dv, pool::frame& f, std::vector<std::shared_ptr<queue>>& touched) noexcept;
    void stop_uplinks() noexcept;

    // ---- interface.cpp: vif lifetime ----
    int setup_queue(vif& v, uint32_t qi, std::string* why) noexcept;
    int bind_queue(queue& q, const queue_params& qp, uint32_t qi, std::string* why) noexcept;
    void remove_locked_out(const std::shared_ptr<vif>& v) noexcept;
    // Drop one reference each, outside any worker; complete what was last.
    void complete_refs_now(packet_refs& refs) noexcept;
    worker* pick_worker() noexcept;

    // ---- placement.cpp: queues follow their traffic ----
    void place(worker& w) noexcept;
    bool move_queue(worker& from, const std::shared_ptr<queue>& q, worker& to, time_point now) noexcept;
};

} // namespace zc::netback
