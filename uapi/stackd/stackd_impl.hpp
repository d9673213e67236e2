// SPDX-License-Identifier: MIT
// zc-stackd's private header: one served zc socket (zsock), the service's
// state (service::impl) and what its parts share. The parts are split by
// job: stackd_ctl.cpp (control connections: accept, open, bind, connect,
// ping, stats, close), stackd_tx.cpp (socket TX ring -> netfront,
// completions, ARP waits, pings out), stackd_rx.cpp (netfront RX -> the
// proto host -> socket RX rings, fill rings) and stackd.cpp (the event loop
// and the service's lifetime).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include <sys/types.h>

#include "common/log.hpp"
#include "link/netfront.hpp"
#include "proto/host.hpp"
#include "uapi/busy_poll.hpp"
#include "uapi/shm.hpp"
#include "stackd/direct.hpp"
#include "stackd/stackd.hpp"

namespace zc::stackd {

using namespace zc::uapi;

inline constexpr const char* tag = "stackd";

// Counters in shared memory have one writer (us): a relaxed load and store,
// no locked read-modify-write per packet.
inline void bump(std::atomic<uint64_t>& c, uint64_t v) noexcept {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

// epoll data: kind in the top byte, socket slot below.
enum : uint64_t { ev_listen = 1, ev_nf = 2, ev_nf_ctl = 3, ev_ctl = 4, ev_kick = 5 };
inline uint64_t ev_key(uint64_t kind, uint32_t slot) noexcept { return kind << 56 | slot; }

// Cookies for netfront TX and for ARP waiters: socket slot, its
// generation (a completion for a closed socket's slot reused since must not
// touch the new one) and the buffer index.
inline uint64_t cookie_of(uint32_t slot, uint32_t gen, uint32_t buf) noexcept {
    return uint64_t(slot) << 48 | uint64_t(gen & 0xffff) << 32 | buf;
}

// A private tx_desc flag (never the application's: drain_tx clears it): a
// direct send zc-netback refused, sent again on the ordinary path.
inline constexpr uint16_t tx_f_ordinary = 0x8000;

// One control response (with nfds descriptors) without blocking: 0 or -errno.
int send_rsp(int fd, const ctl_rsp& r, const int* fds, int nfds) noexcept;
// A response that carries only rc.
int send_rc(int fd, int32_t rc) noexcept;

struct zsock {
    uint32_t slot = 0, gen = 0;
    bool open = false;     // OPEN done: rings and pool exist
    bool closing = false;  // the application went away; waiting for in-flight sends
    int ctl = -1, notify = -1, kick = -1, shm_fd = -1;
    pid_t pid = 0;          // the application (SO_PEERCRED at accept)
    socket_counters st;     // what `zc-stackd stats --sockets` shows
    uint64_t accepted_ms = 0; // mono_ms(): OPEN must come by accepted + setup_timeout_ms
    int refuse = 0;         // -errno the OPEN gets (an application over its limit)
    void* shm = nullptr;
    size_t shm_size = 0;
    shm_layout* lay = nullptr;
    // The send buffers, then the receive buffers (stackd_pool.cpp): in grant
    // mode two shares granted to the backend (a received buffer can be sent
    // on: uapi/README.md, "Pools"; two, so that the direct path can grant
    // the send buffers alone to a peer, direct_tx.cpp); in copy mode two
    // memfds of ours, never granted.
    hv::shared_pages pool;    // grant mode: the send buffers
    hv::shared_pages rxpool;  // grant mode: the receive buffers
    int tx_fd = -1;           // copy mode: the send buffers' memfd
    int rx_fd = -1;           // copy mode: the receive buffers' memfd
    uint32_t tx_pages = 0;    // pages of the send buffers
    uint8_t* mem = nullptr;   // the send buffers
    uint8_t* rxmem = nullptr; // the receive buffers
    size_t rx_bytes = 0;
    uint32_t tx_bufs = 0, rx_bufs = 0, entries = 0;
    uapi::ring<tx_desc> tx;
    uapi::ring<cq_desc> cq;
    uapi::ring<rx_desc> rx;
    uapi::ring<fr_desc> fr;
    uint32_t tx_cons = 0, cq_prod = 0, rx_prod = 0, fr_cons = 0;
    uint32_t cq_reserved = 0;        // TX entries taken whose completion is not yet written
    // Per pool buffer (send buffers, then receive buffers: a TX entry may
    // name a received buffer): 0 not sent, tx_sent with netfront until its
    // TX response, tx_arp waiting in its neighbour's ARP queue (or,
    // resolved, for room in netfront: arp_ready); tx_direct: sent on the
    // direct path, until the receiver's release (or zc-netback's refusal:
    // sent again on the ordinary path).
    enum : uint8_t { tx_sent = 1, tx_arp = 2, tx_direct = 3 };
    std::vector<uint8_t> inflight;
    std::vector<tx_desc> sent;       // per pool buffer: the entry in flight (for its completion)
    // Per RX buffer: rx_ours (free, or being filled), rx_app (handed to the
    // application), rx_sending (the application sent it: ours again when
    // its send completes, then free).
    enum : uint8_t { rx_ours = 0, rx_app = 1, rx_sending = 2 };
    std::vector<uint8_t> rx_given;
    std::vector<uint32_t> rx_free;   // RX buffers we own and may fill
    uint32_t inflight_n = 0;         // buffers not the application's (both states above)
    // Resolved while netfront was full: sent before anything else of the
    // socket (oldest first). Reserved to tx_bufs at OPEN: no allocation here.
    struct ready {
        uint32_t buf;
        proto::mac_addr mac;
    };
    std::vector<ready> arp_ready;
    bool dirty = false;              // notify the application at the end of the iteration
    bool dirty_rx = false;           // ... and datagrams were among the entries (not only completions)
    // Addressing.
    uint32_t ip = 0;     // bound address (network order; 0 = any)
    uint16_t port = 0;   // bound port (network order; 0 = unbound)
    // The connected peer (zc_connect), network order; 0 = not connected.
    // As for a connected UDP socket in Linux (compute_score() in
    // net/ipv4/udp.c), datagrams from any other source are not delivered.
    uint32_t peer_ip = 0;
    uint16_t peer_port = 0;
    // A TX entry taken from the ring but not yet submitted: waiting for room
    // in netfront or in its neighbour's ARP queue. Nothing behind it is
    // taken meanwhile. (An entry waiting
    // for ARP does not hold the ring: it waits in its neighbour's queue of
    // the ARP cache, as Linux's arp_queue, and other destinations go.)
    enum class hold : uint8_t { none, retry } held = hold::none;
    tx_desc held_desc{};
    // The direct path (direct_tx.cpp): the pool also granted read-only to
    // the connected peer's domain (direct_dom; refs per pool page), once
    // in the socket's life; over: refused, or those grants ended.
    enum : uint8_t { direct_unused, direct_granted, direct_over } direct_st = direct_unused;
    hv::domid_t direct_dom = hv::domid_invalid;
    std::vector<hv::gref_t> direct_refs;
    bool direct_hold = false;   // zc-netback refused one: ordinary path until direct_n is 0
    bool direct_fell = false;   // the datagram being submitted fell back (counted in accepted())
    uint32_t direct_n = 0;      // direct sends outstanding
    std::vector<proto::mac_addr> direct_mac; // per TX buffer sent direct: its resend's MAC
    // A ping request on this connection.
    bool ping = false;
    uint32_t ping_ip = 0;
    uint16_t ping_id = 0, ping_seq = 0;
    uint64_t ping_t0 = 0, ping_deadline = 0;
    bool ping_sent = false;
};

// Pool buffer b's bytes: a send buffer, or tx_bufs + i, receive buffer i.
inline uint8_t* buf_ptr(const zsock& s, uint32_t b) noexcept {
    return b < s.tx_bufs ? s.mem + size_t{b} * buf_size : s.rxmem + size_t{b - s.tx_bufs} * buf_size;
}

// Grant mode: the grant of byte `off` of pool buffer b (its share's), and
// that byte's offset in the page.
inline hv::gref_t buf_gref(const zsock& s, uint32_t b, uint32_t off, uint16_t& page_off) noexcept {
    const bool rx = b >= s.tx_bufs;
    const size_t at = size_t{rx ? b - s.tx_bufs : b} * buf_size + off;
    page_off = uint16_t(at % hv::page_size);
    return (rx ? s.rxpool : s.pool).refs[at / hv::page_size];
}

struct service::impl {
    hv::port* port = nullptr;
    options opt;
    std::unique_ptr<link::netfront> nf;
    std::unique_ptr<hv::gntshr> shr;
    bool copy_pool = false; // send buffers copied into netfront's pages (stackd_pool.cpp)
    std::unique_ptr<proto::host> host;
    int ep = -1, lfd = -1;
    std::vector<std::unique_ptr<zsock>> socks; // by slot
    uint32_t next_gen = 1;
    // Bound port (network order) -> socket slot; no_slot when free. A flat
    // table: one load per received datagram.
    static constexpr uint32_t no_slot = ~0u;
    std::vector<uint32_t> ports = std::vector<uint32_t>(65536, no_slot);
    uint32_t pool_pages = 0;
    uint16_t next_ephemeral = 49152;
    uint16_t ping_id = 0x5a00;
    counters n;                        // the loop's own
    mutable std::mutex published_lock; // protects published
    uapi::busy_poll bp;                // --busy-poll-us
    counters published;                // n as of the end of the last iteration, for stats()
    uint8_t reply[2048];
    // The direct path (direct_tx.cpp, direct_rx.cpp).
    std::unique_ptr<hv::gnttab> dtab;              // receiving: maps senders' pages
    std::unique_ptr<direct_maps> dmaps;            // ... and keeps them (null: no direct path)
    std::vector<uint16_t> dir_releases;            // receiving: cookies to give back
    std::unordered_map<hv::domid_t, uint32_t> dir_out; // sending: outstanding per destination
    uint64_t dir_swept = 0;                        // mono ms of the last direct_sweep
    alignas(64) uint8_t dir_frame[256 + hv::page_size]; // a direct frame's headers (+ payload)
    log::ratelimit refusals_rl{5, 1}; // log_refused: an application may retry in a loop
    // The clock, read once per loop iteration (the ARP cache takes time as
    // an argument so that the data path makes no system call for it).
    uint64_t now = 0;

    ~impl();

    // ---- the loop (stackd.cpp) ----
    void epoll_add(int fd, uint64_t key) noexcept;
    int step(int timeout_ms) noexcept;
    void dispatch(uint64_t key) noexcept;
    void notify_dirty() noexcept;
    void lazy_tx_events() noexcept;

    // ---- control connections (stackd_ctl.cpp) ----
    zsock* slot_alloc() noexcept;
    void accept_one() noexcept;
    void close_sock(zsock& s) noexcept;
    bool destroy(zsock& s, bool force) noexcept;
    void reap_closed() noexcept;
    int map_shm(zsock& s, uint32_t tx, uint32_t rx, uint32_t entries) noexcept;
    // The per-application limits for `pages` more pool pages; *held: the
    // application's pool pages with them.
    int check_limits(const zsock& s, uint32_t pages, uint64_t* held) const noexcept;
    // Says (rate-limited) why an OPEN of tx + rx buffers was refused and
    // what to change: the application's sizes or zc-stackd's limit.
    void log_refused(const zsock& s, uint32_t tx, uint32_t rx, int rc, uint64_t held) noexcept;
    uint32_t app_conns(pid_t pid) const noexcept;
    int do_open(zsock& s, const ctl_req& rq) noexcept;
    int do_bind(zsock& s, uint32_t ip, uint16_t port, bool implicit) noexcept;
    bool answer_open(zsock& s, ctl_rsp& r, const ctl_req& rq) noexcept;
    void answer_stats(zsock& s, const ctl_rsp& r) noexcept;
    void answer_socket_stats(zsock& s, ctl_rsp r) noexcept;
    bool answer(zsock& s, const ctl_req& rq) noexcept;
    void handle_ctl(zsock& s) noexcept;
    int start_ping(zsock& s, const ctl_req& rq) noexcept;

    // ---- send buffers: granted or copied (stackd_pool.cpp) ----
    void choose_pool_mode() noexcept;
    int open_pool(zsock& s, uint32_t tx_pages, uint32_t rx_pages) noexcept;
    // The two descriptors the application maps (uapi/src/shm.hpp, ctl_fd):
    // the send buffers from tx.offset, the receive buffers read-only.
    int export_pool(const zsock& s, hv::gntshr::exported_fd& tx, int& rx) noexcept;
    int close_pool(zsock& s, bool force) noexcept;
    bool submit_copy(zsock& s, const tx_desc& d, const proto::udp_flow& f) noexcept;

    // ---- transmit (stackd_tx.cpp) ----
    // `taken`: the entry's buffer was the stack's (false for a refused
    // entry, whose buffer state must not change).
    void complete(zsock& s, const tx_desc& d, int32_t res, bool taken = true) noexcept;
    // A TX entry naming a received buffer (stackd_rx.cpp): 0 when it may be
    // sent, else the -errno of its completion.
    int take_rx_for_send(zsock& s, const tx_desc& d) noexcept;
    bool submit(zsock& s, const tx_desc& d, const proto::mac_addr& dmac) noexcept;
    bool submit_headroom(zsock& s, const tx_desc& d, const proto::udp_flow& f) noexcept;
    void accepted(zsock& s, const tx_desc& d) noexcept;
    bool send_one(zsock& s, const tx_desc& d) noexcept;
    void send_arp_request(proto::ipv4_addr target) noexcept;
    void drain_tx(zsock& s) noexcept;
    bool flush_arp_ready(zsock& s) noexcept;
    void reap_tx() noexcept;
    void arp_released(std::span<const uint64_t> cookies, const proto::mac_addr* mac) noexcept;
    void timers() noexcept;
    void send_echo(zsock& s, const proto::mac_addr& mac) noexcept;
    void pings_resolve() noexcept;

    // ---- receive (stackd_rx.cpp) ----
    void rx_frame(const uint8_t* f, size_t len, uint16_t flags) noexcept;
    void maybe_echo_reply(const uint8_t* f, size_t len) noexcept;
    void deliver(const uint8_t* f, const proto::udp_delivery& u) noexcept;
    // One datagram to the socket bound to dst_port (all network order):
    // from the vif, or from a socket of this guest (deliver_local).
    void deliver_payload(const uint8_t* pay, uint32_t len, uint32_t src_ip, uint16_t src_port, uint32_t dst_ip,
                         uint16_t dst_port) noexcept;
    // A send to the guest's own address or to 127.0.0.0/8: straight into
    // the destination socket, without the vif. false: not a local address.
    bool deliver_local(zsock& s, const tx_desc& d) noexcept;
    // The source address of s's datagrams to dst (network order), as
    // Linux's route lookup picks it: the bound address if any, 127.0.0.1
    // toward 127.0.0.0/8 (the loopback route's src), else the guest's.
    uint32_t source_for(const zsock& s, uint32_t dst) const noexcept;
    void drain_fr(zsock& s) noexcept;
    void rx_all() noexcept;

    // ---- the direct path (direct_tx.cpp, direct_rx.cpp) ----
    // A datagram to s's connected peer on the direct path: 1 taken (sent,
    // or completed), 0 take the ordinary path, -EAGAIN netfront full.
    int direct_submit(zsock& s, const tx_desc& d, const proto::mac_addr& dmac, const uint8_t* hdr,
                      size_t hdr_len, const link::tx_offload& off) noexcept;
    // A direct send's TX response: completed, or (refused) sent again.
    void direct_done(zsock& s, uint32_t buf, int16_t status) noexcept;
    // Grants and mappings of peers that left zc-direct-peers, idle mappings.
    void direct_sweep() noexcept;
    // A received descriptor (headers f[0, len) and info.desc).
    void rx_direct(const uint8_t* f, size_t len, const link::rx_info& info) noexcept;
    void direct_release_flush() noexcept;
};

} // namespace zc::stackd
