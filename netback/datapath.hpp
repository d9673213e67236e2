// SPDX-License-Identifier: MIT
// zc-netback's data path: the netif TX/RX rings of every connected vif
// queue, the L2 learning switch between vifs, and VM-to-VM delivery with one
// gref->gref grant copy per slot.
//
// The control plane (netback/backend.*: xenstore, the XenbusState machine)
// reads the frontend's keys and hands each connected queue to the data path
// with add_vif(); the data path never touches xenstore. A frontend that
// breaks the protocol gets its vif disabled (the datapath stops serving it
// and reports the reason through the on_fatal callback); every other vif
// carries on.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/mac.hpp"
#include "common/result.hpp"
#include "hv/hv.hpp"
#include "netback/counters.hpp"

namespace zc::netback {

// What one queue of a vif negotiated (frontend keys under
// device/vif/<devid>[/queue-N]). Event channels: split when tx != rx.
struct queue_params {
    hv::gref_t tx_ring_ref = 0;
    hv::gref_t rx_ring_ref = 0;
    hv::evtchn_port_t tx_evtchn = 0;  // the frontend's port numbers
    hv::evtchn_port_t rx_evtchn = 0;  // == tx_evtchn when not split
};

struct vif_params {
    hv::domid_t frontend = hv::domid_invalid;
    uint32_t devid = 0;
    mac_addr mac{};                     // the frontend's MAC (learning also works without it)
    std::vector<queue_params> queues;   // 1..max_queues
    // Features the frontend asked for (its keys); what we offered is fixed.
    bool feature_sg = false;
    bool feature_gso_tcpv4 = false;
    bool feature_gso_tcpv6 = false;
    bool feature_rx_notify = true;
    bool feature_no_csum_offload = false;
    bool feature_ipv6_csum_offload = false;
    // The toolstack's keys in the backend directory (source_check.hpp):
    // `ip` (IPv4 sources allowed, network byte order; empty: any) and
    // `rate` (credit_bytes per credit_usec; credit_usec 0: unlimited).
    std::vector<uint32_t> ipv4;
    uint64_t credit_bytes = ~uint64_t{0};
    uint64_t credit_usec = 0;
    // The toolstack's "mtu" for the frontend (0: no limit). Non-GSO frames
    // larger than mtu + 18 are not delivered to this vif (netback/offload.hpp).
    uint32_t mtu = 0;
    // The direct path (ring/zc_direct.hpp): the frontend wrote
    // feature-zc-direct and its release ring's grant.
    bool zc_direct = false;
    hv::gref_t zc_release_ring_ref = 0;
};

struct datapath_options {
    uint32_t workers = 1;                // threads serving queues (queues are spread over them)
    uint32_t rx_queue_limit = 256;       // frames held for a destination with no RX buffers, per queue (x2 entries)
    // Bytes of the frames waiting for one queue's RX buffers (zero-copy or
    // bounced); a frame beyond this, or beyond two RX rings' worth of the
    // RX slots they need, is dropped and counted (Linux xenvif_rx_queue_tail
    // stops at rx_queue_max bytes). Half of it holds one full TX ring of
    // 64 KiB frames.
    uint32_t rx_queue_bytes = 2u << 20;
    uint32_t drain_timeout_ms = 10000;   // then queued frames are dropped and counted (Linux: rx_drain_timeout_msecs)
    uint32_t batch = 64;                 // packets per TX batch / grant-copy batch
    bool force_bounce = false;           // copy through a bounce buffer even when a direct copy is possible (benchmark baseline)
    // A frame waiting for the destination's RX buffers keeps the source's TX
    // slots (zero copy) for at most this long; then it is copied into a
    // bounce buffer and the source gets its slots back.
    uint32_t hold_ms = 10;
    // Earlier, after this long, when the source runs short of TX slots (a
    // netfront stops below XEN_NETIF_NR_SLOTS_MIN + 1 free, Linux
    // netfront_tx_slot_available), the destination has published nothing
    // for as long and holds less than half of rx_queue_bytes (the slots
    // given back would otherwise only bring frames to drop): a destination
    // that keeps taking frames paces the source (flow control, one copy per
    // frame) instead of costing a second copy.
    uint32_t pressure_hold_us = 2000;
    // A destination that keeps too few RX slots for the frame at the head of
    // its queue for this long is stalled: its queue is dropped (counted) and
    // frames to it are dropped until it posts slots again (Linux
    // rx_stall_timeout_msecs, XSA-392). 0 disables stall detection.
    uint32_t stall_timeout_ms = 60000;
    uint32_t bounce_buffers = 1024;      // 4 KiB bounce buffers shared by all vifs (fallback copies)
    // The bounce pool is shared, so each vif has a quota of it in bytes, as
    // the sender of fallback frames and as their receiver. A fallback frame
    // takes ceil(len / 4096) buffers whatever its TX layout (its bytes are
    // packed) and is charged that many buffers' bytes on both quotas; over
    // either (or with the pool dry) it is dropped and counted
    // (drop_bounce_quota, on the vif whose quota it was), as Linux drops a
    // frame beyond a vif's rx_queue_max (xenvif_rx_queue_tail). 0: the
    // default, a quarter of the pool per sender and an eighth per receiver
    // (512 KiB with 1024 buffers: Linux's XENVIF_RX_QUEUE_BYTES), at least
    // one 64 KiB frame (none with force_bounce: the baseline measures the
    // copies); bounce_quota_off: no quota (the pool is the only bound).
    uint64_t bounce_src_quota = 0;
    uint64_t bounce_dst_quota = 0;
    // TX slots of its senders that one destination queue may hold with
    // zero-copy frames while it takes nothing (it published nothing for
    // idle_ms): beyond, its frames move to bounce buffers at once (within
    // the quotas) or are dropped, counted, so that a sender keeps slots for
    // its other destinations. 0: half a TX ring (128).
    uint32_t held_tx_slots = 0;
    // A destination that published nothing for this long while frames wait
    // takes nothing: held_tx_slots applies, and a frame that must leave its
    // source's slots but gets no bounce buffers is dropped (before, it
    // waits: a receiver that keeps taking frames paces its sources,
    // losslessly). Long enough that a receiver descheduled for a moment is
    // not taken for a dead one.
    uint32_t idle_ms = 10;
    // Direct path: descriptors one sending vif may have outstanding at one
    // receiving vif (not yet released); beyond it, NETIF_RSP_ERROR (the
    // sender falls back to the ordinary path). 1..1024.
    uint32_t direct_per_peer = 128;
};

// datapath_options::bounce_src_quota / bounce_dst_quota: no quota.
inline constexpr uint64_t bounce_quota_off = ~uint64_t{0};

// Per-vif counters (vif_stats): netback/counters.hpp, one list with each
// counter's unit and, for drops, the reason.

// An uplink (docs/ARCHITECTURE.md, "Uplinks"): an AF_XDP socket on queue
// `queue` of a network interface, a port of the switch.
struct uplink_options {
    std::string ifname;
    std::string mode = "any";            // any | zc | copy | skb (link::parse_xdp_mode)
    uint32_t queue = 0;
    uint32_t frames = 4096;              // UMEM frames (4 KiB)
    uint32_t ring = 1024;                // AF_XDP ring descriptors
    uint32_t batch = 64;                 // frames per ring operation
    uint32_t aging_s = 300;              // MACs learned behind the uplink age out after this
    // UMEM frames one destination vif may hold waiting for its RX buffers
    // (0: frames / 8); beyond it, its frames are copied to the shared
    // bounce pool (counted), so a slow guest cannot starve the others'
    // receive. docs/ARCHITECTURE.md, "Uplinks".
    uint32_t dest_quota = 0;
};

// Per-uplink counters (the switch port's view): frames to and from the wire.
#define ZC_NETBACK_UPLINK_COUNTERS(X)                                                                     \
    X(to_wire_frames, "frames", false, "frames sent on the uplink")                                       \
    X(to_wire_bytes, "bytes", false, "bytes of those frames")                                             \
    X(from_wire_frames, "frames", false, "frames received from the uplink")                               \
    X(from_wire_bytes, "bytes", false, "bytes of those frames")                                           \
    X(to_vif_frames, "frames", false, "frames from the wire queued for a vif (one grant copy each)")      \
    X(flood_copies, "frames", false, "extra local copies of a frame from the wire flooded to several vifs") \
    X(quota_fallbacks, "frames", false, "from the wire: the destination's UMEM quota was used up, copied to a bounce buffer") \
    X(csum_completed, "frames", false, "checksum-blank guest frames completed before the wire")           \
    X(gso_frames, "frames", false, "guest GSO frames segmented in software before the wire")              \
    X(gso_segments, "frames", false, "MTU-sized frames those became")                                     \
    X(drop_runt, "frames", true, "from the wire: shorter than an Ethernet header")                        \
    X(drop_rx_oversize, "frames", true, "from the wire: larger than the uplink MTU")                      \
    X(drop_no_dest, "frames", true, "from the wire: no vif to deliver to")                                \
    X(drop_vif_full, "frames", true, "from the wire: the destination vif's queue was full, dead or stalled") \
    X(drop_oversize, "frames", true, "to the wire: larger than the uplink MTU and not GSO")               \
    X(drop_gso, "frames", true, "to the wire: GSO frame whose headers are not TCP/IPv4 or TCP/IPv6, or too big") \
    X(drop_bad_csum, "frames", true, "to the wire: checksum-blank frame whose headers cannot be parsed")   \
    X(drop_no_buffer, "frames", true, "to the wire: no free UMEM frame")                                   \
    X(drop_tx_ring_full, "frames", true, "to the wire: the AF_XDP TX ring was full")                       \
    X(drop_copy_error, "frames", true, "to the wire: the grant copy from the guest failed")

struct uplink_stats {
    ZC_COUNTER_SCHEMA(ZC_NETBACK_UPLINK_COUNTERS)
};
ZC_COUNTERS_ADDABLE(uplink_stats)

// Where an in-process uplink's frames to the wire go (one call per frame,
// from a worker thread; it must not call back into the datapath).
using wire_sink = std::function<void(const uint8_t* frame, uint32_t len)>;

struct uplink_info {
    std::string ifname;
    std::string mode;                    // the XDP mode obtained: zc | copy | skb
    mac_addr mac;                        // the interface's own MAC (XDP_PASS to the kernel)
    uint32_t mtu;
    uplink_stats stats;
    uint64_t xdp_redirected, xdp_passed, xdp_runts; // the XDP program's counters
    uint64_t fill_starved, tx_wakeups, rx_wakeups;   // the AF_XDP link's
};

// One queue's state at the moment of asking (gauges, not counters): what
// `zc-netback stats` shows per queue. Ring indices are the frontend's and
// only displayed.
struct queue_info {
    uint32_t index = 0;
    uint32_t worker = 0;         // the worker thread serving it
    uint32_t tx_unconsumed = 0;  // TX requests posted by the frontend, not yet read
    uint32_t tx_in_flight = 0;   // TX slots read, their responses not yet sent
    uint32_t rx_posted = 0;      // RX buffers posted by the frontend, not yet filled
    uint32_t held_frames = 0;    // frames waiting for RX buffers
    uint64_t held_bytes = 0;
    bool stalled = false;        // RX stalled (XSA-392; Linux: carrier off)
};

struct vif_info {
    hv::domid_t frontend;
    uint32_t devid;
    mac_addr mac;
    uint32_t queues;
    bool disabled;
    bool rx_stalled;                 // some queue is stalled (Linux: carrier off)
    uint32_t mtu;                    // vif_params::mtu (0: no limit)
    std::string disabled_reason;
    bool zc_direct = false;              // negotiated the direct path
    uint32_t direct_outstanding = 0;     // gauge: descriptors given to this vif, not yet released
    vif_stats stats;
    // Bounce-pool bytes held now for frames this vif sent, and for frames
    // waiting for it (datapath_options::bounce_src_quota / bounce_dst_quota).
    uint64_t bounce_src_bytes = 0;
    uint64_t bounce_dst_bytes = 0;
    std::vector<queue_info> queue_state; // one per queue, in index order
};

class datapath {
public:
    // Called once per disabled vif, on a worker thread holding no datapath
    // lock (it may call remove_vif).
    using fatal_fn = std::function<void(hv::domid_t frontend, uint32_t devid, const std::string& reason)>;

    // `port` must outlive the datapath. Errors: -EINVAL (bad options).
    static result<std::unique_ptr<datapath>> create(hv::port& port, const datapath_options& o, fatal_fn on_fatal,
                                                    std::string* why) noexcept;
    ~datapath(); // stops the workers and removes every vif

    // Map the queue rings, bind the event channels and start serving.
    // Errors: -EEXIST (frontend/devid already present), -EINVAL (bad
    // params: no queues, too many; or the frontend's ring already claims more
    // requests than it holds), -EFAULT (a ring could not be mapped:
    // the frontend gave a bad gref), -ENOENT (event channel bind failed);
    // `why` says which.
    int add_vif(const vif_params& p, std::string* why) noexcept;

    // Stop serving, finish or drop in-flight frames (counted), unmap the
    // rings and unbind. Safe while the frontend's domain is already dead.
    // Errors: -ENOENT.
    int remove_vif(hv::domid_t frontend, uint32_t devid) noexcept;

    std::vector<vif_info> vifs() const;
    // The counters of removed vifs, summed once nothing in flight refers to
    // them any more (drops counted after removal included): with vifs(),
    // every frame zc-netback took is counted somewhere.
    vif_stats retired_stats() const;

    // Open an AF_XDP uplink and make it a port of the switch (uplink.cpp).
    // Errors: -EINVAL (bad options), or what link::xsk_link::open returns
    // (-EOPNOTSUPP: the required XDP mode is not available); `why` says which.
    int add_uplink(const uplink_options& o, std::string* why) noexcept;
    std::vector<uplink_info> uplinks() const;
    // An uplink without a socket, driven in-process (the uplink fuzz target,
    // tests/fuzz): the same switch port, quota and delivery as add_uplink's,
    // with `mtu`; frames from the wire enter through inject_from_wire on the
    // caller's thread, frames to the wire go to `sink`. Returns its index.
    int add_uplink_inproc(const uplink_options& o, uint32_t mtu, wire_sink sink, std::string* why) noexcept;
    // One frame from the wire on uplink `index`, handled as a frame the
    // AF_XDP socket received. Errors: -ENOENT (no such in-process uplink),
    // -EMSGSIZE (longer than a UMEM frame: the kernel never delivers one),
    // -ENOBUFS (no free UMEM frame: the kernel's fill ring would be empty).
    int inject_from_wire(size_t index, const uint8_t* frame, uint32_t len) noexcept;
    // UMEM frames of an in-process uplink not back in its pool (0 once
    // every frame from the wire is delivered or dropped).
    uint32_t uplink_frames_in_use(size_t index) const noexcept;

    // Hypervisor operations of every handle the datapath owns (maps and
    // unmaps of ring pages, grant-copy batches, notifications).
    hv::op_counters hv_counters() const noexcept;
    // Bounce buffers in use (0 once every fallback frame is delivered or dropped).
    uint32_t bounce_in_use() const noexcept;

    struct impl;
private:
    explicit datapath(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};

} // namespace zc::netback
