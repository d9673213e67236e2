// SPDX-License-Identifier: MIT
// The netfront's private parts, shared by its source files: the constants of
// the protocol, one queue's rings and buffers (nf_queue) and the connection
// (netfront::impl). netfront_bus.cpp holds the xenbus side, netfront_tx.cpp
// the TX ring, netfront_rx.cpp the RX ring, netfront.cpp the public methods.
// Each step names the function of Linux's drivers/net/xen-netfront.c whose
// behaviour it follows; see netfront.hpp for what differs on purpose.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ring/netif_ring.hpp" // <xen/io/netif.h>, with the ring layer's barriers

extern "C" {
#include <xen/io/xenbus.h>
}

#include "common/log.hpp"
#include "hv/hv.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "ring/zc_direct.hpp"

namespace zc::link::detail {

inline constexpr const char* tag = "netfront";
inline constexpr uint16_t no_buf = 0xFFFF;
inline constexpr uint32_t rx_copy_threshold = 256; // RX_COPY_THRESHOLD: the "max slots" rule of xennet_get_responses
inline constexpr int xs_txn_attempts = 64;          // talk_to_netback retries EAGAIN without bound; we give up eventually

static_assert(netif_tx_ring_size == ring::tx_front_ring::size); // NET_TX_RING_SIZE
static_assert(netif_rx_ring_size == ring::rx_front_ring::size); // NET_RX_RING_SIZE
static_assert(netif_rx_slots_min == XEN_NETIF_NR_SLOTS_MIN + 1);
static_assert(netif_max_tx_size == XEN_NETIF_MAX_TX_SIZE);

// tx_granted: in flight from a page the caller granted (tx_submit_granted);
// the id's own TX page is idle meanwhile. tx_direct: a direct-path frame
// (send_direct): its page holds the headers, the payload is the caller's;
// completed through tx_reap_granted as tx_granted is.
enum : uint8_t { tx_free = 0, tx_reserved = 1, tx_pending = 2, tx_granted = 3, tx_direct = 4 };

// xenbus_read_unsigned()'s "%u": leading digits count (netfront_bus.cpp).
bool parse_uint(const std::string& s, unsigned long* out) noexcept;

struct nf_queue {
    uint32_t index = 0;
    std::unique_ptr<hv::evtchn> ev;
    hv::evtchn_port_t tx_port = 0, rx_port = 0; // equal when not split
    hv::shared_pages tx_ring_pg, rx_ring_pg, tx_pages, rx_pages;

    // Both locks are held to change `live` (release); either suffices to read it.
    mutable std::mutex tx_lock; // protects the TX ring, tx_state/tx_free, st_tx
    mutable std::mutex rx_lock; // protects the RX ring, rx_buf/rx_free, st_rx
    bool live = false;          // rings and pages are ours to use
    // tx_lazy_events(): TX responses are collected at the caller's next
    // pass, the backend notifies only when half the ring is answered.
    bool tx_lazy = false;

    // TX. ids index tx_pages: id i is TX page i (Linux: tx_skbs[id] with a
    // grant per slot). A reserved id belongs to the caller, a pending one to
    // the backend until its response. tx.pushed() is the last req_prod we
    // published (the shared copy is writable by the backend).
    ring::tx_front_ring tx;
    std::vector<uint8_t> tx_state;   // per id
    std::vector<uint16_t> tx_free;   // LIFO of free ids
    std::vector<uint64_t> tx_cookie; // per id: the caller's cookie of a tx_granted request
    std::vector<tx_done> tx_done_q;  // completions of tx_granted requests not yet reaped
    queue_stats st_tx;

    // RX. Request ids are ring positions (xennet_rxidx); rx_buf says which
    // RX page is posted at each position.
    ring::rx_front_ring rx;
    std::array<uint16_t, netif_rx_ring_size> rx_buf{};
    std::vector<uint16_t> rx_free;
    std::unique_ptr<uint8_t[]> rx_scratch; // recv_view of chained frames; allocated on first use
    queue_stats st_rx;

    uint8_t* tx_page(uint16_t id) const noexcept { return static_cast<uint8_t*>(tx_pages.addr) + size_t{id} * hv::page_size; }
    const uint8_t* rx_page(uint16_t b) const noexcept {
        return static_cast<const uint8_t*>(rx_pages.addr) + size_t{b} * hv::page_size;
    }
};

// One parsed RX chain (xennet_get_responses).
struct rx_chain {
    RING_IDX end = 0;     // position after its last slot
    size_t len = 0;
    uint32_t nslots = 0;  // data slots
    uint32_t extras = 0;
    uint16_t flags = 0;
    bool gso = false;
    uint16_t gso_size = 0;
    uint8_t gso_type = 0;
    // The direct path's RX extras (ring/zc_direct.hpp): any seen, and
    // which were seen well-placed (rx_grant with FLAG_MORE, then rx_desc).
    bool d_seen = false, d_grant = false, d_desc = false;
    direct_desc desc{};
    struct piece {
        RING_IDX pos;
        uint16_t offset;
        uint16_t len;
    };
    piece pieces[XEN_NETIF_NR_SLOTS_MIN + 1];
};

} // namespace zc::link::detail

namespace zc::link {

struct netfront::impl {
    using nf_queue = detail::nf_queue;
    using rx_chain = detail::rx_chain;

    hv::port* port = nullptr;
    netfront_options opts;
    std::unique_ptr<hv::xs> xs;
    std::unique_ptr<hv::gntshr> gs;
    std::string fe_path, be_path, watch_token;
    hv::domid_t be_id = hv::domid_invalid;
    mac_addr mac{};
    bool be_sg = false, be_gso4 = false, be_gso6 = false, be_ipv6_csum = false, be_has_mq = false;
    uint32_t be_max_queues = 1;
    bool split = false;
    std::vector<std::unique_ptr<nf_queue>> qs;

    std::atomic<bool> is_connected{false};
    std::atomic<bool> is_broken{false};
    // Serialises process_events(), disconnect() and the xenstore side.
    std::mutex ctl_lock;
    mutable std::mutex why_lock; // protects broken_why
    std::string broken_why;
    int my_state = XenbusStateUnknown;
    bool released = false;
    std::vector<hv::shared_pages> leftovers; // grants the backend still held when we tried to end them
    zc::log::ratelimit rl_rx, rl_tx;

    // The direct path (netfront_direct.cpp). `direct` is set at connect
    // and cleared when the backend closes; the rest is under dir_lock.
    std::atomic<bool> direct{false};
    mutable std::mutex dir_lock;
    hv::shared_pages release_pg;           // the release ring, granted to the backend
    ring::zc_direct::release_front_ring release;
    std::map<uint64_t, hv::domid_t> peers; // zc-direct-peers, by MAC as 48 bits
    std::string peers_path;                // be_path + "/zc-direct-peers"
    uint64_t bad_releases = 0;

    // --- netfront.cpp -----------------------------------------------------
    void mark_broken(const std::string& why) noexcept;
    void notify(nf_queue& q, hv::evtchn_port_t p, uint64_t& ctr) noexcept;

    // --- netfront_bus.cpp: xenstore, setup, state machine, teardown -------
    int switch_state(int s) noexcept;
    int be_state() noexcept;
    unsigned long be_read_unsigned(const char* key, unsigned long dflt) noexcept;
    template <class Pred>
    int wait_backend(Pred pred, uint32_t timeout_ms) noexcept;
    int probe(std::string* why) noexcept;
    int connect(std::string* why) noexcept;
    int setup_queue(nf_queue& q, std::string* why) noexcept;
    int bind_event_channels(nf_queue& q, std::string* why) noexcept;
    int write_queue_keys(const nf_queue& q, const std::string& dir, hv::xs::txn t, std::string* what) noexcept;
    int write_keys(std::string* why) noexcept;
    int talk_to_netback(std::string* why) noexcept;
    void stop_queues() noexcept;
    int end_grants(uint32_t retry_ms) noexcept;
    int bus_close() noexcept;
    void backend_changed() noexcept;
    int process_events() noexcept;
    int disconnect() noexcept;

    // --- netfront_direct.cpp: the direct path -----------------------------
    int setup_direct(std::string* why) noexcept;           // talk_to_netback: the release ring
    int write_direct_keys(hv::xs::txn t, std::string* what) noexcept;
    void start_direct() noexcept;                          // Connected: watch and read the peers
    void load_peers() noexcept;
    void stop_direct() noexcept;                           // the backend closed or we disconnect
    bool direct_extra(const netif_extra_info_t& ex, rx_chain& c) noexcept; // false: not ours
    int check_direct(nf_queue& q, const rx_chain& c) noexcept;
    void drop_direct(nf_queue& q, const rx_chain& c) noexcept;
    void reap_releases() noexcept;                         // dir_lock held
    int send_direct(const void* hdr, size_t hdr_len, hv::domid_t dest, hv::gref_t gref, uint16_t offset,
                    uint16_t len, uint64_t cookie, uint32_t queue,
                    const tx_offload* off) noexcept;
    result<size_t> release_direct(const uint16_t* cookies, size_t n) noexcept;

    // --- netfront_tx.cpp: the TX ring -------------------------------------
    // tx_submit_granted*: slot `slot` of the request comes from the
    // caller's grant instead of its id's page.
    struct ext_slot {
        hv::gref_t gref;
        uint16_t offset;
        uint32_t slot = 0;
    };
    bool tx_gc(nf_queue& q) noexcept;
    bool tx_room(const nf_queue& q, uint32_t slots, uint32_t extras) const noexcept;
    int tx_make_room(nf_queue& q, uint32_t slots, uint32_t extras) noexcept;
    int tx_check(const nf_queue& q) const noexcept;
    int check_offload(size_t len, const tx_offload* off) const noexcept;
    void post_tx(nf_queue& q, const uint16_t* ids, uint32_t nslots, size_t len, const tx_offload* off,
                 const ext_slot* ext = nullptr, size_t ext_len = 0) noexcept;
    int send(const void* frame, size_t len, uint32_t queue, const tx_offload* off) noexcept;
    result<tx_buffer> tx_reserve(uint32_t queue) noexcept;
    int tx_submit(const tx_buffer& b, size_t len, uint32_t queue, const tx_offload* off) noexcept;
    int tx_release(const tx_buffer& b, uint32_t queue) noexcept;
    int tx_submit_granted(hv::gref_t gref, uint16_t offset, size_t len, uint64_t cookie, uint32_t queue,
                          const tx_offload* off) noexcept;
    int tx_submit_granted_sg(const void* hdr, size_t hdr_len, hv::gref_t gref, uint16_t offset, size_t len,
                             uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept;
    uint32_t tx_reap_granted(tx_done* out, uint32_t max, uint32_t queue) noexcept;
    bool tx_lazy_events(bool lazy, uint32_t queue) noexcept;

    // --- netfront_rx.cpp: the RX ring -------------------------------------
    void alloc_rx_buffers(nf_queue& q) noexcept;
    void consume_rx(nf_queue& q, RING_IDX end) noexcept;
    void gather_rx(const nf_queue& q, const rx_chain& c, uint8_t* dst) const noexcept;
    void finish_rx(nf_queue& q, const rx_chain& c) noexcept;
    void get_extras(nf_queue& q, RING_IDX rp, RING_IDX& cons, rx_chain& c, int& err) noexcept;
    int get_responses(nf_queue& q, RING_IDX rp, rx_chain& c) noexcept;
    result<size_t> recv(void* buf, size_t cap, uint32_t queue, rx_info* info, rx_view_fn fn, void* arg) noexcept;
};

} // namespace zc::link
