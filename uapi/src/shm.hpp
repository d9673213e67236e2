// SPDX-License-Identifier: MIT
// What libzcnet and zc-stackd share: the control protocol on the Unix
// socket, and the per-socket shared memory with four SPSC rings in the
// AF_XDP / io_uring style. Private to the two; the public ABI is zc.h.
//
// Rings: power-of-two entries, free-running 32-bit indices masked on access
// (so prod - cons is the fill level even across wrap-around), producer and
// consumer index on separate cache lines. Shared memory holds indices and
// offsets, never pointers. Every entry a peer wrote is read once into
// private memory (zc::ring::read_once, stack/ring/shared.hpp) and then
// validated (the app is untrusted to zc-stackd).
//
//   ring   producer   consumer   entry
//   tx     app        stackd     tx_desc: a buffer to send
//   cq     stackd     app        cq_desc: a send completed, buffer back to the app
//   rx     stackd     app        rx_desc: a datagram in an RX buffer
//   fr     app        stackd     fr_desc: an RX buffer released (fill ring)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ring/shared.hpp"

namespace zc::uapi {

inline constexpr uint32_t shm_magic = 0x7a636e31; // "zcn1"
inline constexpr uint32_t proto_version = 3; // 3: receive buffers granted too (may be sent on)
inline constexpr uint32_t buf_size = 2048;       // two buffers per 4 KiB page: never crosses a page
inline constexpr uint32_t headroom = 64;         // >= Ethernet + IPv4 + UDP (42), cache-line aligned payload
inline constexpr uint32_t hdr_len = 14 + 20 + 8; // what zc-stackd writes in front of the payload
inline constexpr uint32_t max_payload = 1472;    // 1500 MTU - IPv4 - UDP: no fragments
inline constexpr const char* default_service = "/run/zcnet/stackd.sock";
static_assert(headroom >= hdr_len && headroom + max_payload <= buf_size);

struct alignas(64) ring_idx {
    std::atomic<uint32_t> v;
    uint8_t pad[60];
};
static_assert(sizeof(ring_idx) == 64 && std::atomic<uint32_t>::is_always_lock_free);

struct ring_hdr {
    ring_idx prod; // written by the producer only
    ring_idx cons; // written by the consumer only
};
static_assert(sizeof(ring_hdr) == 128);

struct tx_desc {
    uint32_t buf;       // pool buffer index: a send buffer (< tx_bufs), or a
                        // receive buffer the application holds (tx_bufs + i),
                        // which is the stack's again once this entry completes
    uint16_t off;       // payload offset in the buffer, >= headroom
    uint16_t len;       // payload bytes, <= max_payload
    uint32_t dst_ip;    // network order
    uint16_t dst_port;  // network order
    uint16_t flags;     // tx_f_*
    uint64_t user_data; // echoed in the completion
};
static_assert(sizeof(tx_desc) == 24 && offsetof(tx_desc, user_data) == 16);
inline constexpr uint16_t tx_f_copied = 1; // a copy-fallback send (for the completion flag)

struct cq_desc {
    uint64_t user_data;
    int32_t res;  // bytes or -errno
    uint32_t buf; // the tx_desc's buffer (pool index); | cq_buf_copied when tx_f_copied
};
static_assert(sizeof(cq_desc) == 16);
inline constexpr uint32_t cq_buf_copied = 0x80000000u;

struct rx_desc {
    uint32_t buf;      // RX buffer index (0-based among RX buffers)
    uint16_t off;      // payload offset in the buffer
    uint16_t len;
    uint32_t src_ip;   // network order
    uint16_t src_port; // network order
    // The datagram's payload bytes when it was longer than the buffer and
    // len bytes of it were delivered (zc.h ZC_RXD_F_TRUNC); 0 otherwise.
    uint16_t full_len;
};
static_assert(sizeof(rx_desc) == 16);
// Payload bytes a receive buffer holds (longer datagrams are cut to it).
inline constexpr uint32_t rx_capacity = buf_size - headroom;

struct fr_desc {
    uint32_t buf; // RX buffer index
};
static_assert(sizeof(fr_desc) == 4);

// Counters zc-stackd keeps for the socket (only it writes them).
struct shm_stats {
    std::atomic<uint64_t> rx_packets, rx_bytes, rx_drops, tx_errors;
};

// The shared region: header, then the rings at the offsets it names.
struct shm_layout {
    uint32_t magic;
    uint32_t version;
    uint32_t entries;   // per ring
    uint32_t tx_bufs;   // buffers [0, tx_bufs) of the pool
    uint32_t rx_bufs;   // buffers [tx_bufs, tx_bufs + rx_bufs)
    uint32_t pad0;
    uint64_t tx_off, cq_off, rx_off, fr_off; // of each ring_hdr; entries follow the header
    uint64_t size;      // of the whole region
    std::atomic<uint32_t> closed; // set by zc-stackd when it stops serving the socket
    // Wake-ups for completions while the application waits for datagrams
    // only (zc_recv_wait), in the style of AF_XDP's XDP_RING_NEED_WAKEUP:
    // libzcnet sets rx_only_wait around its sleep; zc-stackd then writes the
    // notify eventfd only for datagrams, and for completions sets
    // cq_wake_skipped first and looks at rx_only_wait after (both seq_cst),
    // so either zc-stackd sees the wait end and notifies, or libzcnet sees
    // the skip and makes the descriptor readable itself.
    // While every socket with sends in flight waits so, zc-stackd also lets
    // the backend's TX responses wait for its next pass (netfront
    // tx_lazy_events) instead of waking for them; libzcnet kicks it when
    // such a wait ends with sends still out.
    std::atomic<uint32_t> rx_only_wait;   // written by libzcnet
    std::atomic<uint32_t> cq_wake_skipped; // written by zc-stackd (set) and libzcnet (cleared)
    uint8_t pad1[64 - 8 - 4 - 8];
    alignas(64) shm_stats stats;
};
static_assert(offsetof(shm_layout, tx_off) == 24 && offsetof(shm_layout, stats) == 128);
static_assert(std::atomic<uint32_t>::is_always_lock_free); // shared between processes
static_assert(sizeof(shm_layout) % 64 == 0);

template <class T>
inline uint64_t ring_bytes(uint32_t entries) {
    return (sizeof(ring_hdr) + uint64_t{entries} * sizeof(T) + 63) & ~uint64_t{63};
}

// A view of one ring in this process.
template <class T>
struct ring {
    // read_once copies whole 32-bit words.
    static_assert(sizeof(T) % 4 == 0 && alignof(T) >= 4, "socket ring entries are whole 32-bit words");
    ring_hdr* h = nullptr;
    T* e = nullptr;
    uint32_t mask = 0;

    void attach(void* base, uint64_t off, uint32_t entries) noexcept {
        h = reinterpret_cast<ring_hdr*>(static_cast<uint8_t*>(base) + off);
        e = reinterpret_cast<T*>(reinterpret_cast<uint8_t*>(h) + sizeof(ring_hdr));
        mask = entries - 1;
    }
    // Producer side. acquire on cons: pairs with the consumer's release
    // after it finished reading the entries it frees.
    uint32_t free_slots(uint32_t prod_pvt) const noexcept {
        return mask + 1 - (prod_pvt - h->cons.v.load(std::memory_order_acquire));
    }
    // release on prod: the consumer must see the entries before the index.
    void publish(uint32_t prod_pvt) noexcept { h->prod.v.store(prod_pvt, std::memory_order_release); }
    // Consumer side. acquire on prod pairs with the producer's publish().
    uint32_t avail(uint32_t cons_pvt) const noexcept {
        return h->prod.v.load(std::memory_order_acquire) - cons_pvt;
    }
    void release(uint32_t cons_pvt) noexcept { h->cons.v.store(cons_pvt, std::memory_order_release); }
    // Copy an entry once: the peer may rewrite it while we look at it.
    T read(uint32_t i) const noexcept { return zc::ring::read_once<T>(&e[i & mask]); }
    void write(uint32_t i, const T& v) noexcept { __builtin_memcpy(&e[i & mask], &v, sizeof(T)); }
};

// ---- control protocol (SOCK_SEQPACKET, one connection per zc socket) ------
// stats: the reply is a ctl_rsp followed by zc::stackd::counters;
// socket_stats: a ctl_rsp whose rc is the number of zc::stackd::socket_stat
// that follow (zc-stackd's own tool only; not part of libzcnet).
enum class op : uint32_t { open = 1, bind = 2, connect = 3, ping = 4, stats = 5, socket_stats = 6 };

struct ctl_req {
    uint32_t op;
    uint32_t version;   // proto_version
    uint32_t tx_bufs, rx_bufs, entries; // open
    uint32_t ip;        // bind/connect/ping: network order
    uint16_t port;      // network order
    uint16_t pad;
    int32_t timeout_ms; // ping
};
static_assert(sizeof(ctl_req) == 32);

// open: fds [shm memfd, pool fd, receive-buffer fd, notify eventfd (the
// app's socket fd), kick eventfd (app -> stackd doorbell)]. The pool fd
// holds, from pool_off, the send buffers [0, tx_bufs) and nothing else; the
// receive fd, from 0, the receive buffers, and it is read-only (opened
// O_RDONLY, or a memfd sealed F_SEAL_FUTURE_WRITE): the application can map
// it only read-only. Both are granted to the backend (a received buffer can
// be sent on) or, with zc-stackd --pool-export copy, memory of zc-stackd's
// alone; every memfd is sealed F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL.
// The application maps them back to back: pool_size bytes, the send
// buffers first.
struct ctl_rsp {
    int32_t rc;         // >= 0 or -errno; ping: RTT in microseconds
    uint32_t version;
    uint64_t shm_size;
    uint64_t pool_off;  // mmap offset of the send buffers in the pool fd
    uint64_t pool_size; // send and receive buffers
    uint32_t ip;        // bind/connect: the bound address (network order)
    uint16_t port;      // the bound port (network order)
    uint16_t pad;
};
static_assert(sizeof(ctl_rsp) == 40);

enum ctl_fd { fd_shm = 0, fd_pool = 1, fd_rx = 2, fd_notify = 3, fd_kick = 4, ctl_nfds = 5 };

} // namespace zc::uapi
