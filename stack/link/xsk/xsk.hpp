// SPDX-License-Identifier: MIT
// An AF_XDP link on one queue of a network interface, on libxdp's xsk API
// (docs/ARCHITECTURE.md, "Uplinks"). The UMEM is one page-aligned chunk of
// a local pool (stack/pool): UMEM frame i is pool buffer i, so a received
// frame is a local pool::frame that any grant copy can read from, and a
// frame to send is a pool buffer a grant copy wrote into.
//
// Modes: driver zero-copy, driver copy, generic (SKB). xdp_mode::any tries
// them in that order; any other mode is required and its failure is an
// error with a clear message (veth has no zero-copy).
//
// Threads: one thread receives (receive, refill, wait); any thread may send
// (send/alloc_tx are serialized by an internal lock). Frames go back to the
// pool with release() from any thread. Nothing busy-polls: wait() blocks in
// poll() on the socket; need_wakeup is honoured on the fill and TX rings.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "link/xdp_prog.hpp"
#include "pool/pool.hpp"

namespace zc::link {

enum class xdp_mode : uint8_t { any, zc, copy, skb };
const char* to_string(xdp_mode m) noexcept;
std::optional<xdp_mode> parse_xdp_mode(std::string_view s) noexcept;

struct xsk_options {
    std::string ifname;
    uint32_t queue = 0;
    xdp_mode mode = xdp_mode::any;
    uint32_t frames = 4096;   // UMEM frames of 4 KiB (power of two)
    uint32_t ring = 1024;     // descriptors per ring (power of two, <= frames / 2)
    uint32_t batch = 64;      // descriptors moved per ring operation
};

struct xsk_counters {
    uint64_t rx_frames = 0, rx_bytes = 0;
    uint64_t tx_frames = 0, tx_bytes = 0;
    uint64_t tx_ring_full = 0;     // send() found no TX descriptor (frame released, counted by the caller too)
    uint64_t fill_starved = 0;     // refill() found no free UMEM frame
    uint64_t rx_wakeups = 0;       // fill ring asked for a wakeup
    uint64_t tx_wakeups = 0;       // sendto() kicks (TX need_wakeup)
    uint64_t rx_bad_desc = 0;      // RX descriptor outside the UMEM (dropped)
};

class xsk_link {
public:
    // Errors: -ENODEV (no such interface), -EOPNOTSUPP (the required mode is
    // not available), -errno of libxdp/libbpf; `why` says which.
    static result<std::unique_ptr<xsk_link>> open(const xsk_options& o, std::string* why) noexcept;
    ~xsk_link(); // closes the socket and detaches the XDP program
    xsk_link(const xsk_link&) = delete;
    xsk_link& operator=(const xsk_link&) = delete;

    xdp_mode mode() const noexcept;       // the mode obtained
    const std::string& ifname() const noexcept;
    int ifindex() const noexcept;
    const uint8_t* if_mac() const noexcept; // the interface's own MAC (6 bytes)
    uint32_t mtu() const noexcept;
    uint32_t max_frame() const noexcept;  // largest frame send() takes
    xdp_prog& prog() noexcept;
    pool::pool& umem() noexcept;          // the UMEM's pool: data(f), release(f)

    // Receive up to `max` frames (local segments of umem()); the caller
    // releases each. Refills the fill ring first. Receive thread only.
    uint32_t receive(pool::frame* out, uint32_t max) noexcept;
    // Block until the socket is readable, `extra_fd` is readable or
    // `timeout_ms` passed. Returns poll()'s revents of extra_fd (0 if none).
    int wait(int extra_fd, int timeout_ms) noexcept;

    // A UMEM frame to fill for send(); -ENOBUFS when none is free.
    int alloc_tx(pool::frame& f) noexcept;
    // Queue frames (len set) on the TX ring and kick the kernel when it asks.
    // Takes ownership of every frame: sent frames come back to the pool on
    // completion, frames that found no TX descriptor are released now.
    // Returns the number queued.
    uint32_t send(pool::frame* fs, uint32_t n) noexcept;

    xsk_counters counters() const noexcept;

    struct state;
private:
    explicit xsk_link(std::unique_ptr<state> s) noexcept;
    std::unique_ptr<state> _s;
};

} // namespace zc::link
