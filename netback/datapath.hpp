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
};

// Per-vif counters (vif_stats): netback/counters.hpp, one list with each
// counter's unit and, for drops, the reason.

struct vif_info {
    hv::domid_t frontend;
    uint32_t devid;
    mac_addr mac;
    uint32_t queues;
    bool disabled;
    bool rx_stalled;                 // some queue is stalled (Linux: carrier off)
    std::string disabled_reason;
    vif_stats stats;
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
