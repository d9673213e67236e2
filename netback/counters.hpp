// SPDX-License-Identifier: MIT
// zc-netback's per-vif counters, declared once: the list below gives the
// fields of vif_stats (in this order), the datapath's atomic copies of them,
// the `zc-netback stats` JSON keys and table, and the figures zc-vmbench
// reads back. Each entry: X(name, unit, drop, help); drop counters say in
// `help` why the frame was lost. Nothing disappears uncounted.
#pragma once

#include <cstdint>

#include "common/counters.hpp"

// Attribution: tx_*, the copy counters, fallback_copies, drop_no_dest,
// drop_malformed, drop_copy_error, drop_unsupported, drop_bad_offload,
// drop_no_csum and drop_mtu count on the vif that sent the frame (its
// traffic caused them); rx_*, queued, drop_rx_full, drop_disabled,
// drop_rx_grant and rx_stalls on the vif the frame was for;
// drop_bounce_quota on the vif whose bounce quota was used up (the sender's
// or the receiver's; the receiver's when the pool itself was dry); the event
// counters on the vif whose event channel it is; direct_frames,
// direct_bytes and direct_errors on the sender, direct_releases,
// direct_bad_releases and direct_teardown_completed on the receiver;
// flood_extra on the sender; csum_completed on the receiver. Without uplinks and the direct path every
// frame adds up (docs/ARCHITECTURE.md, "Counters"): sum(tx_packets +
// flood_extra) == sum(rx_packets + every drop counter but drop_malformed)
// over the vifs and retired_stats(), once nothing waits in a queue.
#define ZC_NETBACK_VIF_COUNTERS(X)                                                                              \
    X(tx_packets, "packets", false, "packets from the frontend (its TX ring)")                                 \
    X(tx_bytes, "bytes", false, "bytes of those packets")                                                       \
    X(rx_packets, "packets", false, "packets to the frontend (its RX ring)")                                   \
    X(rx_bytes, "bytes", false, "bytes of those packets")                                                       \
    X(tx_slots, "slots", false, "TX data slots of accepted packets")                                           \
    X(rx_slots, "slots", false, "RX data slots filled")                                                         \
    X(grant_copy_segments, "segments", false, "grant-copy segments this vif's traffic caused")                 \
    X(grant_copy_batches, "calls", false, "grant-copy hypercalls this vif's traffic took part in")             \
    X(header_copy_segments, "segments", false, "header copies into local memory (switching)")                  \
    X(vm_to_vm_segments, "segments", false, "gref->gref payload segments (the one copy)")                      \
    X(hdr_payload_segments, "segments", false,                                                                  \
      "payload segments of frames the header copy read whole (<= 128 bytes), copied from it")                \
    X(fallback_copies, "frames", false, "frames copied through a bounce buffer")                               \
    X(queued, "frames", false, "frames that had to wait for RX buffers")                                       \
    X(drop_no_dest, "frames", true, "unknown unicast with nowhere to flood")                                   \
    X(drop_rx_full, "frames", true,                                                                             \
      "the destination posted no RX buffers in time (drain timeout) or its queue was full")                   \
    X(drop_malformed, "frames", true, "bad packet, answered with NETIF_RSP_ERROR")                             \
    X(drop_copy_error, "frames", true, "a grant copy failed (e.g. a revoked grant)")                           \
    X(drop_unsupported, "frames", true, "the destination did not negotiate the SG/GSO the frame needs")        \
    X(drop_disabled, "frames", true, "the destination is disabled, removed or stalled")                        \
    X(drop_bounce_quota, "frames", true,                                                                        \
      "a fallback copy over the sender's or the receiver's bounce quota, or with the bounce pool dry")        \
    X(drop_spoofed_mac, "frames", true, "sent from a MAC other than the vif's configured one")               \
    X(drop_spoofed_ip, "frames", true, "IPv4 or ARP sender address not in the vif's `ip` key")              \
    X(rate_limited, "events", false, "TX stopped until the `rate` credit's next window")                  \
    X(drop_rx_grant, "frames", true, "the copy into this vif's RX buffer failed: its own bad grant")          \
    X(drop_bad_offload, "frames", true, "checksum/GSO metadata that does not match the frame's headers")        \
    X(drop_no_csum, "frames", true, "checksum to complete for a destination without checksum offload")        \
    X(drop_mtu, "frames", true, "non-GSO frame larger than the destination's mtu")                              \
    X(rx_stalls, "events", false, "times this vif's RX was found stalled (XSA-392)")                          \
    X(notifies_sent, "events", false, "event-channel notifications sent to the frontend")                      \
    X(events_received, "events", false, "event-channel events received from the frontend")                    \
    X(spurious_events, "events", false, "events that found no new TX or RX work (XSA-332 lateeoi accounting)") \
    X(eoi_delays, "events", false, "times the port stayed masked after spurious events in a row (back-off)")    \
    X(direct_frames, "frames", false, "direct path: frames sent as a descriptor, payload not copied by zc-netback") \
    X(direct_bytes, "bytes", false, "direct path: payload bytes of those frames (left in the sender's grant)")   \
    X(direct_errors, "frames", true,                                                                            \
      "direct path: descriptor refused (bad descriptor, wrong or unready destination), NETIF_RSP_ERROR")      \
    X(direct_releases, "events", false, "direct path: cookies this receiver released (the sender's TX completed)") \
    X(direct_bad_releases, "events", false,                                                                     \
      "direct path: releases of an unknown, stale or duplicate cookie (ignored, answered NETIF_RSP_ERROR)")     \
    X(direct_teardown_completed, "frames", false,                                                               \
      "direct path: senders' requests completed because this receiver went away before releasing them")  \
    X(queue_moves, "events", false, "times one of this vif's queues moved to another worker (placement)")       \
    X(flood_extra, "frames", false,                                                                             \
      "extra destinations of flooded frames (a frame switched to k ports counts k-1)")                         \
    X(csum_completed, "frames", false,                                                                          \
      "checksum-blank frames whose checksum zc-netback completed for this frontend (feature-no-csum-offload)")

namespace zc::netback {

// TX batch sizes: 1, 2-3, 4-7, ..., 128+.
inline constexpr unsigned batch_hist_buckets = 8;

struct vif_stats {
    ZC_COUNTER_SCHEMA(ZC_NETBACK_VIF_COUNTERS)
    // Outside the schema (a histogram, not a counter); summed by += too.
    uint64_t batch_hist[batch_hist_buckets] = {};
};
ZC_COUNTERS_ADDABLE(vif_stats)

} // namespace zc::netback
