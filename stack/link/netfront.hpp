// SPDX-License-Identifier: MIT
// A userspace netfront: the guest side of Xen's netif protocol
// (xen/io/netif.h), behaving like Linux's drivers/net/xen-netfront.c so that
// a backend tested against it is a backend tested against the netfront that
// unmodified guests run.
//
// What is matched (the Linux function named in each place in netfront*.cpp):
//  - the xenstore handshake (netfront_probe/xennet_create_dev, netback_changed,
//    xennet_connect, talk_to_netback, write_queue_xenstore_keys): the same
//    keys, the same flat vs queue-N/ layout, one transaction retried on
//    EAGAIN, feature-rx-copy required (-ENODEV otherwise);
//  - TX (xennet_start_xmit): one slot per page, the first slot's size is the
//    whole frame, NETTXF_more_data on every slot but the last, a GSO extra
//    right after the first slot with NETTXF_extra_info, checksum flags as
//    Linux sets them for CHECKSUM_PARTIAL / CHECKSUM_UNNECESSARY;
//  - TX completion (xennet_tx_buf_gc) and RX (xennet_poll,
//    xennet_get_responses, xennet_get_extras, xennet_set_skb_gso) with the
//    hardening Linux added for untrusted backends (XSA-391): every response
//    is copied once into private memory and checked; what Linux treats as a
//    dropped packet is counted as an rx error, what Linux treats as fatal
//    ("Disabled for further use") marks this netfront broken;
//  - RX refill (xennet_alloc_rx_buffers): ids are ring positions, nothing
//    is pushed while fewer than NET_RX_SLOTS_MIN buffers would be posted;
//  - notification hold-off with the event-index scheme
//    (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, RING_FINAL_CHECK_FOR_RESPONSES);
//  - close (xennet_bus_close, netback_changed's Closing/Closed,
//    xennet_disconnect_backend).
//
// Differences, on purpose: buffers are granted once for the life of the
// connection (one TX page per TX id, read-only; a set of RX pages, writable)
// where Linux grants and ends a grant per packet; the wire protocol is the
// same, the backend cannot tell. There is no reconnect after a close.
//
// Threading: each queue has a TX lock (send, tx_reserve/tx_submit/
// tx_release) and an RX lock (recv); different queues run in parallel.
// process_events()/wait() may run concurrently with them. connect() and
// disconnect() must not run concurrently with anything else.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counters.hpp"
#include "common/mac.hpp"
#include "common/result.hpp"
#include "hv/hv.hpp"

namespace zc::link {

using zc::mac_addr;

// Geometry of the one-page netif rings (xen/io/netif.h, xen/io/ring.h).
inline constexpr uint32_t netif_tx_ring_size = 256; // NET_TX_RING_SIZE
inline constexpr uint32_t netif_rx_ring_size = 256; // NET_RX_RING_SIZE
inline constexpr size_t netif_max_tx_size = 0xFFFF; // XEN_NETIF_MAX_TX_SIZE: first slot's size is 16 bits
inline constexpr uint32_t netif_rx_slots_min = 19;  // NET_RX_SLOTS_MIN = XEN_NETIF_NR_SLOTS_MIN + 1
inline constexpr size_t eth_hlen = 14;
inline constexpr size_t eth_frame_len = 1514;       // largest frame without feature-sg (ETH_DATA_LEN + header)

struct netfront_options {
    uint32_t devid = 0;                // device/vif/<devid> under our domain
    // Upper bound on queues (Linux: the max_queues module parameter); we use
    // min(this, the backend's multi-queue-max-queues, default 1).
    uint32_t max_queues = 1;
    // Use two event channels per queue when the backend offers
    // feature-split-event-channels (Linux always does).
    bool split_event_channels = true;
    uint32_t tx_buffers = netif_tx_ring_size; // TX pages per queue, 1..256
    uint32_t rx_buffers = netif_rx_ring_size; // RX pages per queue, 19..256
    // What we announce. Linux writes 1 for each; turning one off writes 0
    // (the backend reads a missing key as 0, too).
    bool feature_sg = true;
    bool feature_gso_tcpv4 = true;
    bool feature_gso_tcpv6 = true;
    bool feature_ipv6_csum_offload = true;
    // Bound on each wait for the backend's state during connect and
    // disconnect (Linux waits XENNET_TIMEOUT = 5 s and then retries forever).
    uint32_t timeout_ms = 10000;
    // Bound on retrying to end grants the backend still maps (disconnect).
    uint32_t unshare_retry_ms = 2000;
    // Take the direct path (docs/ARCHITECTURE.md, "Direct path (guest to
    // guest)"; ring/zc_direct.hpp) when the backend offers
    // feature-zc-direct: grant a release ring, write feature-zc-direct and
    // zc-direct-release-ring-ref, follow the backend's zc-direct-peers.
    // Off: the keys are not written and the backend never sends us a
    // descriptor (its extra types stay invalid for us, as in Linux).
    bool zc_direct = false;
};

// A direct-path frame's payload (RX extras rx_grant and rx_desc): `len`
// bytes at `offset` of grant `gref` of domain `domid` (the sender), which
// the receiver maps or grant-copies itself. Memory another domain can still
// write: copy before validating. Hand `cookie` back with release_direct().
struct direct_desc {
    hv::domid_t domid = 0;
    hv::gref_t gref = 0;
    uint16_t offset = 0;
    uint16_t len = 0;
    uint16_t cookie = 0;
};

// Per-frame transmit offloads (Linux: skb->ip_summed and skb_shinfo gso).
struct tx_offload {
    bool csum_blank = false;     // CHECKSUM_PARTIAL: NETTXF_csum_blank | NETTXF_data_validated
    bool data_validated = false; // CHECKSUM_UNNECESSARY: NETTXF_data_validated
    uint16_t gso_size = 0;       // MSS; non-zero adds a XEN_NETIF_EXTRA_TYPE_GSO extra (implies csum_blank)
    uint8_t gso_type = 0;        // XEN_NETIF_GSO_TYPE_TCPV4 (1) or _TCPV6 (2)
};

// What recv() learnt about a frame.
struct rx_info {
    size_t len = 0;        // frame length; also set when recv() fails with -EMSGSIZE
    uint16_t flags = 0;    // NETRXF_csum_blank / NETRXF_data_validated of the first slot
    uint16_t gso_size = 0; // from a GSO extra; 0 when there was none
    uint8_t gso_type = 0;
    uint32_t slots = 0;    // data slots the frame used (extras not counted)
    uint32_t extras = 0;   // extra-info slots
    // A direct-path frame: the frame recv() gave is its headers only, the
    // payload is described by `desc` (release it with release_direct()).
    bool direct = false;
    direct_desc desc{};
};

// Backend protocol violations, by rule. Linux's message for each is quoted.
struct backend_errors {
    // Fatal (the netfront is broken afterwards, as Linux marks info->broken):
    uint64_t rsp_prod_overflow = 0; // "Illegal number of responses"
    uint64_t tx_bad_id = 0;         // "Response has incorrect id"
    uint64_t tx_inactive_id = 0;    // "Response for inactive request"
    // Dropped packet, counted in rx_errors:
    uint64_t rx_no_buffer = 0;      // "Bad rx response id": a response where no buffer was posted
    uint64_t rx_id_mismatch = 0;    // response id differs from its request's (Linux does not check)
    uint64_t rx_bad_status = 0;     // "rx->offset: %u, size: %d": status < 0 or offset + size > page
    uint64_t rx_missing_extra = 0;  // "Missing extra info"
    uint64_t rx_bad_extra = 0;      // "Invalid extra type"
    uint64_t rx_incomplete = 0;     // "Need more slots": NETRXF_more_data on the last published response
    uint64_t rx_too_many_slots = 0; // "Too many slots"
    uint64_t rx_bad_gso = 0;        // "GSO size must not be zero" / "Bad GSO type"
    uint64_t rx_bad_direct = 0;     // a direct-path descriptor breaking ring/zc_direct.hpp's format
};

struct queue_stats {
    uint64_t tx_packets = 0, tx_bytes = 0;
    uint64_t tx_slots = 0;     // data slots (a 64 KiB frame is 16)
    uint64_t tx_extras = 0;    // extra-info slots
    uint64_t tx_completed = 0; // data slots whose response came back
    uint64_t tx_errors = 0;    // responses with NETIF_RSP_ERROR / NETIF_RSP_DROPPED
    uint64_t tx_busy = 0;      // sends refused with -EAGAIN (ring or buffers full)
    uint64_t tx_notifies = 0;  // event-channel kicks for TX requests
    uint64_t rx_packets = 0, rx_bytes = 0;
    uint64_t rx_slots = 0, rx_extras = 0;
    uint64_t rx_errors = 0;    // frames dropped for a bad response (Linux: dev->stats.rx_errors)
    uint64_t rx_posted = 0;    // RX requests posted
    uint64_t rx_notifies = 0;  // event-channel kicks for RX buffers
    uint64_t events = 0;       // event-channel deliveries handled
    uint64_t tx_direct = 0;    // direct-path frames sent (send_direct)
    uint64_t tx_direct_refused = 0; // ... answered NETIF_RSP_ERROR: the caller sends them again
    uint64_t rx_direct = 0;    // direct-path descriptors handed to the caller
    uint64_t rx_direct_dropped = 0; // ... not handed over (no rx_info, or a bad frame): released at once
    backend_errors bad;
};
ZC_COUNTERS_ADDABLE(queue_stats) // queue_stats += queue_stats, field by field

// A TX page reserved with tx_reserve(): fill data[0..page_size) in place,
// then hand it over with tx_submit() (or back with tx_release()).
struct tx_buffer {
    uint8_t* data = nullptr;
    uint16_t id = 0xFFFF;
};

// Completion of a tx_submit_granted() request.
struct tx_done {
    uint64_t cookie;
    int16_t status; // NETIF_RSP_OKAY (0), _ERROR (-1), _DROPPED (-2)
};

// recv_view() callback: the frame, valid only during the call.
using rx_view_fn = void (*)(const uint8_t* frame, size_t len, void* arg) noexcept;

class netfront {
public:
    // The guest side of `xl network-attach`: the toolstack must have written
    // our device/vif/<devid> directory (backend, backend-id, mac, state) and
    // the backend directory. Blocks until the backend is Connected or
    // options.timeout_ms passed in one of the waits. `port` must outlive the
    // netfront.
    // Errors: -EINVAL (bad options), -ENOENT (no frontend directory, backend
    // path or mac), -ENODEV (backend lacks feature-rx-copy; our state stays
    // Initialising, as in Linux), -ETIMEDOUT, -ECONNRESET (the backend went
    // Closing instead of connecting), or the hypervisor/xenstore error.
    // `why` says which step failed.
    static result<std::unique_ptr<netfront>> connect(hv::port& port, const netfront_options& o,
                                                     std::string* why) noexcept;
    // disconnect() if that was not done.
    ~netfront();
    netfront(const netfront&) = delete;
    netfront& operator=(const netfront&) = delete;

    uint32_t queues() const noexcept;
    const mac_addr& mac() const noexcept;
    hv::domid_t backend_id() const noexcept;
    const std::string& frontend_path() const noexcept;
    const std::string& backend_path() const noexcept;
    // What the backend offered (read at InitWait).
    bool backend_sg() const noexcept;
    bool backend_gso_tcpv4() const noexcept;
    bool backend_gso_tcpv6() const noexcept;
    bool split_event_channels() const noexcept; // in use
    // Largest frame send() accepts: 65535 with SG, 1514 without.
    size_t max_frame() const noexcept;

    // Copy a frame into TX pages and post it. Frames over one page use one
    // slot per page (NETTXF_more_data); `off` may ask for checksum offload
    // and GSO. Returns 0.
    // Errors: -EINVAL (null frame, len < 14, queue out of range, bad gso
    // type or gso_size 0 with a gso_type), -EMSGSIZE (len > max_frame()),
    // -EOPNOTSUPP (GSO of a type the backend did not offer), -EAGAIN (ring
    // or TX pages full: call process_events() or wait()), -ENOTCONN (the
    // backend closed), -EIO (broken by a backend protocol violation).
    int send(const void* frame, size_t len, uint32_t queue = 0, const tx_offload* off = nullptr) noexcept;

    // Zero-copy-ish TX of frames up to one page: reserve a page, write the
    // frame into it, submit. After tx_submit() returns 0 the page belongs to
    // the backend until its TX response; do not touch it. On an error from
    // tx_submit() the page stays reserved (release or submit again).
    // Errors of tx_reserve: -EAGAIN (no free TX page), -EINVAL, -ENOTCONN,
    // -EIO. Errors of tx_submit: those of send(), -EMSGSIZE for len > page,
    // -EINVAL for a buffer that is not reserved on this queue.
    result<tx_buffer> tx_reserve(uint32_t queue = 0) noexcept;
    int tx_submit(const tx_buffer& b, size_t len, uint32_t queue = 0, const tx_offload* off = nullptr) noexcept;
    int tx_release(const tx_buffer& b, uint32_t queue = 0) noexcept;

    // TX from a page the caller granted to backend_id() (read-only is
    // enough): the frame is [offset, offset + len) of that page. The caller
    // keeps the page unchanged until tx_reap_granted() returns `cookie`;
    // until then the backend may read it. One slot, no GSO.
    // Errors: -EINVAL (len < 14, queue out of range, GSO asked),
    // -EMSGSIZE (offset + len > page), -EAGAIN (ring or ids full),
    // -ENOTCONN, -EIO. After disconnect() no completion comes for requests
    // still in flight (the backend may keep a page mapped until it unmaps:
    // end the grants with gntshr::unshare and retry on -EBUSY).
    int tx_submit_granted(hv::gref_t gref, uint16_t offset, size_t len, uint64_t cookie, uint32_t queue = 0,
                          const tx_offload* off = nullptr) noexcept;
    // The same frame in two slots: `hdr_len` header bytes copied into one of
    // our own TX pages (so the caller cannot change them once submitted),
    // then `len` payload bytes from [offset, offset + len) of the caller's
    // granted page. Needs the backend's feature-sg. The completion (cookie)
    // comes when the payload slot's response does.
    // Errors: as tx_submit_granted(), -EINVAL also for hdr_len < 14 or len 0,
    // -EOPNOTSUPP (the backend offered no feature-sg).
    int tx_submit_granted_sg(const void* hdr, size_t hdr_len, hv::gref_t gref, uint16_t offset, size_t len,
                             uint64_t cookie, uint32_t queue = 0, const tx_offload* off = nullptr) noexcept;
    // Completions of tx_submit_granted*() requests, oldest first, up to max.
    // Runs the TX garbage collection if none is queued. Returns the count.
    uint32_t tx_reap_granted(tx_done* out, uint32_t max, uint32_t queue = 0) noexcept;
    // Whether the backend should notify each TX response (false, the
    // default, as Linux netfront) or only once half the ring is answered
    // (true): for a caller that collects them (tx_reap_granted) at its
    // next wake-up anyway and needs no wake-up of its own for them.
    // Returns true when responses are already waiting (collect them).
    bool tx_lazy_events(bool lazy, uint32_t queue = 0) noexcept;

    // recv() without the copy: `fn` sees the frame where it lies (the RX
    // page; a chained frame is assembled in a per-queue scratch buffer
    // first) and the slots are reposted when it returns. Returns the frame
    // length; errors as recv() (no -EMSGSIZE).
    result<size_t> recv_view(rx_view_fn fn, void* arg, uint32_t queue = 0, rx_info* info = nullptr) noexcept;

    // Receive one frame, assembled from its NETRXF_more_data chain, into
    // buf. Bad chains are dropped and counted (stats().rx_errors) and the
    // next frame is tried. Returns the frame length.
    // Errors: -EAGAIN (nothing complete: this also re-arms the RX
    // notification, so call recv() until -EAGAIN after each event),
    // -EMSGSIZE (cap too small; the frame stays queued and info->len says
    // how much is needed), -EINVAL, -ENOTCONN (backend closed and nothing
    // left), -EIO (broken).
    result<size_t> recv(void* buf, size_t cap, uint32_t queue = 0, rx_info* info = nullptr) noexcept;

    // --- The direct path (options.zc_direct; ring/zc_direct.hpp) ---------
    // Both ends agreed on it (we asked and the backend offered it).
    bool zc_direct() const noexcept;
    // The domain owning `mac` on our switch, as the backend's
    // zc-direct-peers says (re-read when its watch fires, in
    // process_events()). Errors: -ENOENT (not a peer: take the ordinary
    // path), -EOPNOTSUPP (no direct path).
    result<hv::domid_t> peer_domid(const mac_addr& mac) const noexcept;
    // Send a frame whose `hdr_len` header bytes (14..128) are copied into
    // one of our TX pages and whose payload is [offset, offset + len) of
    // grant `gref`, which the caller granted read-only to `dest` (the
    // destination's domain, from peer_domid()). The caller keeps the
    // payload unchanged until tx_reap_granted() returns `cookie`: status
    // NETIF_RSP_OKAY when the receiver released it, NETIF_RSP_ERROR when
    // the backend refused the frame (not a peer, the receiver's ring short):
    // send it again on the ordinary path.
    // `off` may ask for checksum offload (csum_blank: the receiver gets
    // NETRXF_csum_blank, as on the ordinary path), never GSO.
    // Errors: -EOPNOTSUPP (no direct path), -EINVAL (hdr_len out of range,
    // len 0, queue, GSO asked), -EMSGSIZE (offset + len > page), -EAGAIN,
    // -ENOTCONN, -EIO.
    int send_direct(const void* hdr, size_t hdr_len, hv::domid_t dest, hv::gref_t gref, uint16_t offset,
                    uint16_t len, uint64_t cookie, uint32_t queue = 0, const tx_offload* off = nullptr) noexcept;
    // The domains of zc-direct-peers (sorted, each once); empty without
    // the direct path. A domain that left it is gone from our switch.
    std::vector<hv::domid_t> peer_domains() const;
    // Put the cookies of received descriptors (rx_info::desc) on the
    // release ring and notify the backend, which completes each sender's
    // request. Returns how many were queued (fewer when the ring is full:
    // call again after process_events()).
    // Errors: -EOPNOTSUPP (no direct path), -EINVAL, -ENOTCONN, -EIO.
    result<size_t> release_direct(const uint16_t* cookies, size_t n) noexcept;
    // Release responses with NETIF_RSP_ERROR (cookies the backend did not
    // hold for us) seen so far.
    uint64_t direct_bad_releases() const noexcept;

    // Readable when queue `queue` has an event-channel notification.
    int event_fd(uint32_t queue) const noexcept;
    // Readable when the backend's xenstore state may have changed.
    int control_fd() const noexcept;
    // Handle whatever is pending, never blocking: acknowledge event-channel
    // notifications, reclaim completed TX pages (xennet_tx_buf_gc), follow
    // the backend's state (Closing/Closed: we go Closed and release the
    // rings, as netback_changed does). Returns the number of events handled,
    // or -EIO when broken.
    int process_events() noexcept;
    // Poll every fd for up to timeout_ms (-1: forever), then process_events().
    // Returns what process_events() returned, 0 on timeout.
    int wait(int timeout_ms) noexcept;

    bool connected() const noexcept; // Connected and not closed by the backend
    bool broken() const noexcept;
    std::string broken_reason() const;
    queue_stats stats(uint32_t queue = 0) const noexcept;
    // The grant-table counters of our gntshr handle (shares == unshares once
    // everything is released).
    hv::op_counters grant_counters() const noexcept;

    // Close as xennet_remove does: Closing, wait for the backend to follow,
    // Closed, then unbind the event channels and end every grant. Ending a
    // grant the backend still maps fails (Xen: it stays until unmapped):
    // retried for unshare_retry_ms. Returns 0 when everything is released.
    // Errors: -EBUSY (some grants are still in use: call again later; the
    // pages stay allocated until then), -ETIMEDOUT (the backend did not
    // follow the state machine; our side is released anyway).
    int disconnect() noexcept;

    struct impl;

private:
    explicit netfront(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};


} // namespace zc::link
