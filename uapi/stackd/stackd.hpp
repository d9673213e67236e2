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

#include "common/result.hpp"
#include "hv/hv.hpp"
#include "link/netfront.hpp"

namespace zc::stackd {

struct options {
    std::string listen;           // Unix socket path for applications
    uint32_t ip = 0;              // host order, e.g. 10.0.0.1 = 0x0a000001
    uint32_t netmask = 0xffffff00;
    uint32_t max_sockets = 64;      // connections at once (the emulated host has 64 regions per guest)
    uint32_t max_pool_pages = 16384; // grant budget for all sockets' send buffers
    // Per application (process, SO_PEERCRED): sockets (connections) and
    // pool pages (send + receive buffers) at once: -EMFILE, -ENOMEM.
    uint32_t max_sockets_per_app = 16;
    uint32_t max_pool_pages_per_app = 4096;
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
    link::netfront_options nf;
};

struct counters {
    uint64_t sockets_opened = 0, sockets_closed = 0;
    uint64_t tx_zc = 0;           // datagrams sent from a socket's pool
    uint64_t tx_bad_desc = 0;     // TX descriptors refused (bad index, length, busy buffer)
    uint64_t tx_errors = 0;       // completions with an error
    uint64_t rx_frames = 0;
    uint64_t rx_udp = 0;          // delivered to a socket
    uint64_t rx_no_socket = 0;    // UDP for a port nobody bound
    uint64_t rx_drops = 0;        // socket had no RX buffer or ring space
    uint64_t fr_bad = 0;          // RX releases of buffers the app did not hold
    uint64_t arp_replies = 0, echo_replies = 0;
    uint64_t pings_sent = 0, pings_answered = 0;
    uint64_t setup_timeouts = 0;  // connections dropped: no OPEN in time
    uint64_t app_limits = 0;      // OPENs refused by a per-application limit
};

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

    struct impl;

private:
    explicit service(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};

} // namespace zc::stackd
