// SPDX-License-Identifier: MIT
// zc-stackd: the stack service of one guest domain. It owns the guest's
// netfront vif and a stack/proto IPv4 host (MAC from the vif, address by
// option) that answers ARP and ping, and serves the zc sockets of every
// application of the guest that attaches over its Unix socket.
//
// Per zc socket (one SOCK_SEQPACKET connection each, uapi/src/shm.hpp):
//   - a pool: pages granted (read-only) to the backend domain, the only
//     domain Xen lets grant-copy them toward the destination; buffers
//     [0, tx_bufs) are the application's to send from, the rest are
//     receive buffers this service fills;
//   - a shared region with the TX, completion, RX and RX-release rings;
//   - a notify eventfd (the application's socket fd) and a kick eventfd.
//
// Copies per datagram (payload bytes):
//   send, zero copy    0 here (the 42 header bytes go into a TX page of
//                      ours, the payload slot is the pool page's grant); the
//                      backend's grant copy pool page -> the destination
//                      guest's RX page is the only one.
//   send, fallback     +1 in libzcnet (application memory -> pool).
//   receive            1 here (netfront RX page -> the socket's pool buffer),
//                      after the backend's grant copy into the RX page.
//
// Single-threaded: one event loop (epoll) runs everything.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counters.hpp"
#include "common/result.hpp"
#include "hv/hv.hpp"
#include "link/netfront.hpp"

namespace zc::stackd {

// How a socket's send buffers reach the backend (stackd_pool.cpp): grant
// them (zero copy; needs gntshr::share_exportable), copy each datagram
// into the netfront's own TX pages (one copy more, no grant per socket),
// or auto: grant where share_exportable works, copy where it answers
// -EOPNOTSUPP (a Xen guest kernel without udmabuf or gntdev dma-buf).
enum class pool_export : uint8_t { auto_, grant, copy };
const char* pool_export_name(pool_export m) noexcept;

struct options {
    std::string listen;           // Unix socket path for applications
    uint32_t ip = 0;              // host order, e.g. 10.0.0.1 = 0x0a000001
    uint32_t netmask = 0xffffff00;
    // The default route's gateway (host order; 0: none). Off-subnet
    // destinations go to its MAC (ARP for it); without one they complete
    // with -ENETUNREACH at once. It must be on the subnet of ip/netmask.
    uint32_t gateway = 0;
    uint32_t max_sockets = 64;      // connections at once (the emulated host has 64 regions per guest)
    uint32_t max_pool_pages = 16384; // grant budget for all sockets' pools (send + receive buffers)
    // Per application (process, SO_PEERCRED): sockets (connections) and
    // pool pages (send + receive buffers) at once: -EMFILE, -ENOMEM.
    uint32_t max_sockets_per_app = 16;
    uint32_t max_pool_pages_per_app = 4096;
    // Datagrams that may wait for one neighbour's ARP answer (Linux's
    // unres_qlen); beyond them the sending socket's ring waits. After arp_requests
    // requests arp_retry_ms apart without an answer they complete with
    // -EHOSTUNREACH (Linux's mcast_solicit and retrans_time).
    uint32_t unres_qlen = 32;
    uint32_t arp_retry_ms = 1000;
    uint32_t arp_requests = 3;
    // A connection that has not opened its socket by then is dropped.
    uint32_t setup_timeout_ms = 5000;
    bool csum_offload = true;     // UDP checksum left to offload (CHECKSUM_PARTIAL), as Linux guests do
    // Headers in a slot of our own and the payload in a second slot from the
    // pool (needs feature-sg), so that an application cannot rewrite them
    // after zc_send (spoofing another socket's port or another MAC). false
    // (--tx-headers headroom, for trusted applications only): one slot,
    // headers written into the buffer's headroom (one segment fewer for the
    // backend, but the application can change them until the backend's
    // copy). Without feature-sg datagrams are refused (-EOPNOTSUPP) unless
    // this is false.
    bool private_headers = true;
    // TX responses of the backend collected at the next wake-up while no
    // application waits for a completion (stackd.cpp, lazy_tx_events).
    bool lazy_tx_events = true;
    pool_export pool_mode = pool_export::auto_; // --pool-export
    // The direct path between zcnet guests (docs/ARCHITECTURE.md, "Direct
    // path (guest to guest)"; direct_tx.cpp, direct_rx.cpp): negotiated
    // with the backend (nf.zc_direct is set from this). Sending: a
    // connected socket's datagrams to its peer, when the peer's MAC is in
    // the backend's zc-direct-peers, go out as headers plus a descriptor of
    // the payload in the socket's pool, which is granted read-only to that
    // domain too; zc-netback copies no payload. Receiving: the sender's
    // pages are mapped read-only once and the payload copied from there.
    // On by default: a backend that does not offer the extension (Linux
    // netback) never sees it, and every datagram it cannot take falls back
    // to the ordinary path by itself.
    bool zc_direct = true;
    // Direct datagrams outstanding (sent, not yet released by the
    // receiver) per destination domain; beyond, the ordinary path
    // (zc-netback refuses beyond its own 128 per pair, direct_per_peer).
    uint32_t direct_quota = 64;
    // At the quota: false, the ordinary path (zc-netback copies); true, the
    // socket's ring waits for releases (every datagram direct, the sender
    // held to the receiver's pace; --direct-at-quota wait).
    bool direct_wait = false;
    // Receiving: pages of senders' pools mapped at once (least recently
    // used unmapped beyond), and how long an unused one stays mapped (the
    // sender cannot free a pool we map: blkback's persistent grants are
    // purged the same way, persistent_grant_unused_seconds).
    uint32_t direct_map_pages = 1024;
    uint32_t direct_map_idle_ms = 1000;
    // Before each sleep, look for events this many microseconds first, but
    // only while a CPU is idle (uapi/busy_poll.hpp); 0 (default): never.
    // At most 1000.
    uint32_t busy_poll_us = 0;
    link::netfront_options nf;
};

// The service's counters, declared once (common/counters.hpp): fields,
// `zc-stackd stats` (table, JSON, Prometheus) and their help text.
#define ZC_STACKD_COUNTERS(X)                                                                \
    X(sockets_opened, "sockets", false, "zc sockets opened")                                  \
    X(sockets_closed, "sockets", false, "zc sockets closed")                                  \
    X(tx_zc, "datagrams", false, "datagrams sent from a socket's pool")                      \
    X(tx_local, "datagrams", false, "of those, to a socket of this guest (not through the vif)") \
    X(tx_copied, "datagrams", false, "of those, copied into the vif's TX pages (--pool-export copy)") \
    X(tx_rx_bufs, "datagrams", false, "TX entries naming a received buffer (sent on without a copy)") \
    X(tx_bad_desc, "descriptors", true, "TX descriptors refused (bad index, length, busy buffer)") \
    X(tx_errors, "datagrams", true, "sends completed with an error")                          \
    X(tx_unresolved, "datagrams", true, "of those, -EHOSTUNREACH: the neighbour never answered ARP") \
    X(tx_unres_waits, "times", false, "a socket's TX ring waited: its neighbour's ARP queue was full") \
    X(rx_frames, "frames", false, "frames received from the vif")                             \
    X(rx_udp, "datagrams", false, "UDP datagrams delivered to a socket")                      \
    X(rx_no_socket, "datagrams", true, "UDP for a port or address nobody bound")              \
    X(rx_not_peer, "datagrams", true, "UDP for a connected socket from another source")       \
    X(rx_drops, "datagrams", true, "the socket had no free RX buffer or ring space")          \
    X(rx_truncated, "datagrams", false, "delivered cut to the receive buffer (ZC_RXD_F_TRUNC)") \
    X(fr_bad, "descriptors", true, "RX releases of buffers the application did not hold")     \
    X(arp_replies, "frames", false, "ARP replies sent")                                       \
    X(echo_replies, "frames", false, "ICMP echo replies sent")                                \
    X(pings_sent, "frames", false, "ICMP echo requests sent (zc-ping)")                       \
    X(pings_answered, "frames", false, "their replies")                                       \
    X(app_wakes, "wake-ups", false, "notifications written to applications' sockets")        \
    X(cq_wakes_skipped, "wake-ups", false, "of completions, not written: the application waited for datagrams only") \
    X(setup_timeouts, "connections", true, "connections dropped: no OPEN in time")            \
    X(app_limits, "sockets", true, "OPENs refused by a per-application limit")                \
    X(tx_direct, "datagrams", false, "sent on the direct path (payload taken by the receiver)") \
    X(tx_direct_fallback, "datagrams", false, "to a direct-path peer on the ordinary path (quota, refusal, grant)") \
    X(tx_direct_refused, "datagrams", true, "direct datagrams zc-netback refused, sent again on the ordinary path") \
    X(rx_direct, "datagrams", false, "direct-path descriptors received")                      \
    X(rx_direct_bad, "datagrams", true, "of those, dropped: not IPv4/UDP headers, or the payload not mappable") \
    X(direct_maps, "pages", false, "pages of senders' pools mapped (read-only)")              \
    X(direct_unmaps, "pages", false, "of those, unmapped (idle, evicted, peer gone)")

struct counters {
    ZC_COUNTER_SCHEMA(ZC_STACKD_COUNTERS)
};

// Per socket, kept by zc-stackd in its own memory (the application's copy
// in the shared region is the application's to read, and to scribble on).
#define ZC_STACKD_SOCKET_COUNTERS(X)                                                          \
    X(tx_datagrams, "datagrams", false, "datagrams the socket sent (zero copy)")              \
    X(tx_bytes, "bytes", false, "their payload bytes")                                        \
    X(tx_errors, "datagrams", true, "sends completed with an error")                          \
    X(tx_bad_desc, "descriptors", true, "TX descriptors refused")                             \
    X(rx_datagrams, "datagrams", false, "datagrams delivered to the socket")                  \
    X(rx_bytes, "bytes", false, "their payload bytes")                                        \
    X(rx_drops, "datagrams", true, "no free RX buffer or ring space")                         \
    X(rx_truncated, "datagrams", false, "delivered cut to the receive buffer (ZC_RXD_F_TRUNC)") \
    X(rx_not_peer, "datagrams", true, "datagrams from a source other than the connected peer") \
    X(fr_bad, "descriptors", true, "RX releases of buffers it did not hold")                  \
    X(tx_direct, "datagrams", false, "of tx_datagrams, on the direct path")                   \
    X(tx_direct_fallback, "datagrams", false, "to its direct-path peer on the ordinary path")

struct socket_counters {
    ZC_COUNTER_SCHEMA(ZC_STACKD_SOCKET_COUNTERS)
};

// One open socket as `zc-stackd stats --sockets` reports it (the wire
// format of the SOCKET_STATS reply: a ctl_rsp whose rc is the number of
// these that follow).
struct socket_stat {
    uint32_t slot = 0;      // the service's connection slot
    int32_t pid = 0;        // the application (SO_PEERCRED)
    uint32_t ip = 0;        // bound address, network order (0: any)
    uint16_t port = 0;      // bound port, network order (0: unbound)
    uint16_t pad = 0;
    uint32_t tx_bufs = 0, rx_bufs = 0;
    socket_counters c;
};

// The client side of `zc-stackd stats`: a running zc-stackd's counters and
// sockets, asked over its Unix socket `path`. Errors: -errno of the
// connection, -EPROTO (an answer that is not one).
result<counters> query_counters(const std::string& path) noexcept;
result<std::vector<socket_stat>> query_sockets(const std::string& path) noexcept;
// Both in the Prometheus text exposition format (families
// zcnet_stackd_<name>_total and zcnet_stackd_socket_<name>_total).
std::string prometheus_text(const counters& c, const std::vector<socket_stat>& socks);

class service {
public:
    // Connects the netfront (the vif must exist), creates the host and
    // listens. `port` must outlive the service. Errors: those of
    // netfront::connect, -EINVAL (bad options), -EADDRINUSE, socket errors.
    static result<std::unique_ptr<service>> create(hv::port& port, const options& o, std::string* why) noexcept;
    ~service();
    service(const service&) = delete;
    service& operator=(const service&) = delete;

    // Run the event loop until `stop` is set (checked at least every 100 ms)
    // or the backend goes away. Returns 0, or -ENOTCONN / -EIO for the link.
    int run(const std::atomic<bool>& stop) noexcept;
    // One iteration: wait up to timeout_ms, then do all pending work.
    int step(int timeout_ms) noexcept;

    // As of the end of the last loop iteration; callable from any thread.
    counters stats() const noexcept;
    link::netfront& link() noexcept;
    // The pool mode in use: grant or copy (auto resolved at create).
    pool_export pool_mode() const noexcept;

    struct impl;

private:
    explicit service(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};

} // namespace zc::stackd
