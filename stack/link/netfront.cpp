// SPDX-License-Identifier: MIT
// The userspace netfront. Each step names the function of Linux's
// drivers/net/xen-netfront.c whose behaviour it follows; see netfront.hpp
// for what differs on purpose.
#include "link/netfront.hpp"

#include <algorithm>
#include <iterator>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <new>
#include <type_traits>
#include <vector>

#include <poll.h>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

// ring.h maps xen_*mb() to the guest kernel's mb()/rmb()/wmb() on this
// interface version. Every barrier orders our ring stores/loads against the
// backend's, in another domain: full fence for the event-index checks,
// release before publishing req_prod, acquire after reading rsp_prod.
#undef xen_mb
#undef xen_rmb
#undef xen_wmb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include "common/check.hpp"
#include "common/log.hpp"
#include "hv/xs.hpp"

namespace zc::link {

namespace {

constexpr const char* tag = "netfront";
constexpr uint16_t no_buf = 0xFFFF;
constexpr uint32_t rx_copy_threshold = 256; // RX_COPY_THRESHOLD: the "max slots" rule of xennet_get_responses
constexpr int xs_txn_attempts = 64;          // talk_to_netback retries EAGAIN without bound; we give up eventually

static_assert(netif_tx_ring_size == __CONST_RING_SIZE(netif_tx, hv::page_size));
static_assert(netif_rx_ring_size == __CONST_RING_SIZE(netif_rx, hv::page_size));
static_assert(netif_rx_slots_min == XEN_NETIF_NR_SLOTS_MIN + 1);
static_assert(netif_max_tx_size == XEN_NETIF_MAX_TX_SIZE);
static_assert(sizeof(netif_extra_info_t) == 8 && sizeof(netif_rx_response_t) == 8);
static_assert(sizeof(netif_tx_response_t) == 4 && sizeof(netif_tx_request_t) == 12);

// tx_granted: in flight from a page the caller granted (tx_submit_granted);
// the id's own TX page is idle meanwhile.
enum : uint8_t { tx_free = 0, tx_reserved = 1, tx_pending = 2, tx_granted = 3 };

int64_t now_ms() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms) noexcept {
    timespec ts{ms / 1000, long(ms % 1000) * 1000000L};
    while (::nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

// RING_COPY_RESPONSE: read a shared entry exactly once into private memory
// before looking at it, so a backend rewriting it cannot make two checks see
// two values (XSA-155). ring.h's version is C only (volatile struct copy).
template <class T>
T copy_once(const void* slot) noexcept {
    static_assert(sizeof(T) % 4 == 0 && std::is_trivially_copyable_v<T>);
    uint32_t w[sizeof(T) / 4];
    const volatile uint32_t* s = static_cast<const volatile uint32_t*>(slot);
    for (size_t i = 0; i < sizeof(T) / 4; i++) w[i] = s[i];
    T out;
    std::memcpy(&out, w, sizeof out);
    return out;
}

RING_IDX load_acquire(const RING_IDX* p) noexcept { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

// queue_stats is all 64-bit counters; the TX side and the RX side keep their
// own copy under their own lock and stats() adds them.
static_assert(sizeof(queue_stats) % sizeof(uint64_t) == 0 && std::is_trivially_copyable_v<queue_stats>);
void add_stats(queue_stats& into, const queue_stats& from) noexcept {
    constexpr size_t n = sizeof(queue_stats) / sizeof(uint64_t);
    uint64_t a[n], b[n];
    std::memcpy(a, &into, sizeof a);
    std::memcpy(b, &from, sizeof b);
    for (size_t i = 0; i < n; i++) a[i] += b[i];
    std::memcpy(&into, a, sizeof a);
}

bool parse_uint(const std::string& s, unsigned long* out) noexcept {
    // xenbus_read_unsigned() scans "%u": leading digits count.
    size_t i = 0;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) i++;
    if (i == s.size() || s[i] < '0' || s[i] > '9') return false;
    unsigned long v = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + unsigned(s[i] - '0');
        if (v > 0xFFFFFFFFul) return false;
    }
    *out = v;
    return true;
}

struct nf_queue {
    uint32_t index = 0;
    std::unique_ptr<hv::evtchn> ev;
    hv::evtchn_port_t tx_port = 0, rx_port = 0; // equal when not split
    hv::shared_pages tx_ring_pg, rx_ring_pg, tx_pages, rx_pages;

    // Both locks are held to change `live` (release); either suffices to read it.
    mutable std::mutex tx_lock; // protects the TX ring, tx_state/tx_free, st_tx
    mutable std::mutex rx_lock; // protects the RX ring, rx_buf/rx_free, st_rx
    bool live = false;          // rings and pages are ours to use

    // TX. ids index tx_pages: id i is TX page i (Linux: tx_skbs[id] with a
    // grant per slot). A reserved id belongs to the caller, a pending one to
    // the backend until its response.
    netif_tx_front_ring_t tx{};
    RING_IDX tx_pushed = 0;          // last req_prod we published (the shared copy is writable by the backend)
    std::vector<uint8_t> tx_state;   // per id
    std::vector<uint16_t> tx_free;   // LIFO of free ids
    std::vector<uint64_t> tx_cookie; // per id: the caller's cookie of a tx_granted request
    std::vector<tx_done> tx_done_q;  // completions of tx_granted requests not yet reaped
    queue_stats st_tx;

    // RX. Request ids are ring positions (xennet_rxidx); rx_buf says which
    // RX page is posted at each position.
    netif_rx_front_ring_t rx{};
    RING_IDX rx_pushed = 0;
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
    struct piece {
        RING_IDX pos;
        uint16_t offset;
        uint16_t len;
    };
    piece pieces[XEN_NETIF_NR_SLOTS_MIN + 1];
};

} // namespace

struct netfront::impl {
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

    // --- xenstore helpers -------------------------------------------------

    int switch_state(int s) noexcept {
        // xenbus_switch_state: write our state node.
        int rc = xs->write(fe_path + "/state", std::to_string(s));
        if (rc == 0) my_state = s;
        return rc;
    }

    // xenbus_read_driver_state: Unknown when the node is missing or garbage.
    int be_state() noexcept {
        auto v = xs->read(be_path + "/state");
        unsigned long s = 0;
        if (!v || !parse_uint(*v, &s) || s > XenbusStateReconfigured) return XenbusStateUnknown;
        return int(s);
    }

    unsigned long be_read_unsigned(const char* key, unsigned long dflt) noexcept {
        auto v = xs->read(be_path + "/" + key);
        unsigned long x = 0;
        if (!v || !parse_uint(*v, &x)) return dflt;
        return x;
    }

    // Wait until pred(backend state) or the timeout. Events are drained
    // before the state is read, so a change after the read wakes the poll.
    template <class Pred>
    int wait_backend(Pred pred, uint32_t timeout_ms) noexcept {
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
            while (xs->read_watch()) {}
            int st = be_state();
            if (pred(st)) return st;
            int64_t left = deadline - now_ms();
            if (left <= 0) return -ETIMEDOUT;
            pollfd p{xs->fileno(), POLLIN, 0};
            (void)::poll(&p, 1, int(left));
        }
    }

    void mark_broken(const std::string& why) noexcept {
        {
            std::lock_guard g(why_lock);
            if (broken_why.empty()) broken_why = why;
        }
        if (!is_broken.exchange(true))
            ZC_LOG(error, tag, "%s: %s; disabled for further use", fe_path.c_str(), why.c_str());
    }

    // --- setup (talk_to_netback, setup_netfront) --------------------------

    int setup_queue(nf_queue& q, std::string* why) noexcept {
        auto sh = [&](uint32_t n, bool w, hv::shared_pages& out, const char* what) -> int {
            auto r = gs->share(be_id, n, w);
            if (!r) {
                if (why) *why = std::string("granting the ") + what + ": " + std::strerror(-r.error());
                return r.error();
            }
            out = std::move(*r);
            return 0;
        };
        // xenbus_setup_ring: one read-write page per ring.
        if (int rc = sh(1, true, q.tx_ring_pg, "TX ring"); rc) return rc;
        if (int rc = sh(1, true, q.rx_ring_pg, "RX ring"); rc) return rc;
        auto* txs = static_cast<netif_tx_sring_t*>(q.tx_ring_pg.addr);
        auto* rxs = static_cast<netif_rx_sring_t*>(q.rx_ring_pg.addr);
        XEN_FRONT_RING_INIT(&q.tx, txs, hv::page_size);
        XEN_FRONT_RING_INIT(&q.rx, rxs, hv::page_size);
        ZC_CHECK(RING_SIZE(&q.tx) == netif_tx_ring_size && RING_SIZE(&q.rx) == netif_rx_ring_size);

        auto ev = port->open_evtchn();
        if (!ev) {
            if (why) *why = "opening an event-channel handle: " + std::string(std::strerror(-ev.error()));
            return ev.error();
        }
        q.ev = std::move(*ev);
        // setup_netfront_split, falling back to setup_netfront_single when
        // split is not offered or fails.
        bool done = false;
        if (split) {
            auto t = q.ev->bind_unbound(be_id);
            auto r = t ? q.ev->bind_unbound(be_id) : result<hv::evtchn_port_t>(err(t.error()));
            if (t && r) {
                q.tx_port = *t;
                q.rx_port = *r;
                done = true;
            } else {
                if (t) (void)q.ev->unbind(*t);
                split = false; // the keys of every queue must agree
            }
        }
        if (!done) {
            auto p = q.ev->bind_unbound(be_id);
            if (!p) {
                if (why) *why = "allocating an event channel: " + std::string(std::strerror(-p.error()));
                return p.error();
            }
            q.tx_port = q.rx_port = *p;
        }

        // Our buffers: TX pages read-only for the backend (it only copies
        // from them), RX pages writable.
        if (int rc = sh(opts.tx_buffers, false, q.tx_pages, "TX buffers"); rc) return rc;
        if (int rc = sh(opts.rx_buffers, true, q.rx_pages, "RX buffers"); rc) return rc;
        q.tx_state.assign(opts.tx_buffers, tx_free);
        q.tx_cookie.assign(opts.tx_buffers, 0);
        q.tx_done_q.clear();
        q.tx_done_q.reserve(opts.tx_buffers);
        q.tx_free.clear();
        for (uint32_t i = opts.tx_buffers; i-- > 0;) q.tx_free.push_back(uint16_t(i));
        q.rx_free.clear();
        for (uint32_t i = opts.rx_buffers; i-- > 0;) q.rx_free.push_back(uint16_t(i));
        q.rx_buf.fill(no_buf);
        q.live = true;
        return 0;
    }

    // write_queue_xenstore_keys
    int write_queue_keys(const nf_queue& q, const std::string& dir, hv::xs::txn t, std::string* what) noexcept {
        auto w = [&](const char* k, unsigned long v) {
            int rc = xs->write(dir + "/" + k, std::to_string(v), t);
            if (rc && what) *what = std::string("writing ") + k;
            return rc;
        };
        if (int rc = w("tx-ring-ref", q.tx_ring_pg.refs[0])) return rc;
        if (int rc = w("rx-ring-ref", q.rx_ring_pg.refs[0])) return rc;
        if (q.tx_port == q.rx_port) return w("event-channel", q.tx_port);
        if (int rc = w("event-channel-tx", q.tx_port)) return rc;
        return w("event-channel-rx", q.rx_port);
    }

    int write_keys(std::string* why) noexcept {
        for (int attempt = 0; attempt < xs_txn_attempts; attempt++) {
            auto t = xs->transaction_start();
            if (!t) {
                if (why) *why = "starting transaction: " + std::string(std::strerror(-t.error()));
                return t.error();
            }
            std::string what;
            int rc = 0;
            auto w = [&](const char* k, const std::string& v) {
                if (rc) return;
                rc = xs->write(fe_path + "/" + k, v, *t);
                if (rc) what = std::string("writing ") + k;
            };
            if (be_has_mq) w("multi-queue-num-queues", std::to_string(qs.size()));
            if (!rc && qs.size() == 1)
                rc = write_queue_keys(*qs[0], fe_path, *t, &what); // flat
            for (size_t i = 0; !rc && qs.size() > 1 && i < qs.size(); i++)
                rc = write_queue_keys(*qs[i], fe_path + "/queue-" + std::to_string(i), *t, &what);
            w("request-rx-copy", "1");
            w("feature-rx-notify", "1");
            w("feature-sg", opts.feature_sg ? "1" : "0");
            w("feature-gso-tcpv4", opts.feature_gso_tcpv4 ? "1" : "0");
            w("feature-gso-tcpv6", opts.feature_gso_tcpv6 ? "1" : "0");
            w("feature-ipv6-csum-offload", opts.feature_ipv6_csum_offload ? "1" : "0");
            if (rc) {
                (void)xs->transaction_end(*t, true);
                if (why) *why = what + ": " + std::strerror(-rc);
                return rc;
            }
            rc = xs->transaction_end(*t, false);
            if (rc == -EAGAIN) continue;
            if (rc && why) *why = "completing transaction: " + std::string(std::strerror(-rc));
            return rc;
        }
        if (why) *why = "completing transaction: kept conflicting";
        return -EAGAIN;
    }

    // talk_to_netback. On failure the caller releases what was set up.
    int talk_to_netback(std::string* why) noexcept {
        be_max_queues = uint32_t(std::max(1ul, std::min(be_read_unsigned("multi-queue-max-queues", 1), 1024ul)));
        be_has_mq = bool(xs->read(be_path + "/multi-queue-max-queues"));
        uint32_t nq = std::min(be_max_queues, opts.max_queues);
        split = opts.split_event_channels && be_read_unsigned("feature-split-event-channels", 0) != 0;
        // xennet_fix_features: what the backend accepts from us.
        be_sg = be_read_unsigned("feature-sg", 0) != 0;
        be_gso4 = be_read_unsigned("feature-gso-tcpv4", 0) != 0;
        be_gso6 = be_read_unsigned("feature-gso-tcpv6", 0) != 0;
        be_ipv6_csum = be_read_unsigned("feature-ipv6-csum-offload", 0) != 0;

        // xen_net_read_mac
        auto m = xs->read(fe_path + "/mac");
        if (!m || !parse_mac(*m, mac, mac_allow_short)) {
            if (why) *why = "parsing " + fe_path + "/mac";
            return -ENOENT;
        }

        for (uint32_t i = 0; i < nq; i++) {
            qs.push_back(std::make_unique<nf_queue>());
            qs.back()->index = i;
        }
        bool want_split = split;
        for (auto& q : qs)
            if (int rc = setup_queue(*q, why); rc) return rc;
        if (want_split && !split) {
            // A later queue fell back to one channel: make them all agree
            // by binding one shared port for the queues that got two.
            // (Rare: only when the port space ran out.)
            for (auto& q : qs) {
                if (q->tx_port == q->rx_port) continue;
                (void)q->ev->unbind(q->rx_port);
                q->rx_port = q->tx_port;
            }
        }
        return write_keys(why);
    }

    // --- data path --------------------------------------------------------

    void notify(nf_queue& q, hv::evtchn_port_t p, uint64_t& ctr) noexcept {
        if (q.ev && q.ev->notify(p) == 0) ctr++;
    }

    // xennet_alloc_rx_buffers. Called with rx_lock held.
    void alloc_rx_buffers(nf_queue& q) noexcept {
        if (!q.live) return;
        RING_IDX req_prod = q.rx.req_prod_pvt;
        while (req_prod - q.rx.rsp_cons < opts.rx_buffers && !q.rx_free.empty()) {
            uint16_t id = uint16_t(req_prod & (netif_rx_ring_size - 1));
            // BUG_ON(queue->rx_skbs[id]): the position was consumed (and its
            // page freed) before it can be posted again, since responses
            // never pass requests (checked in recv).
            ZC_CHECK(q.rx_buf[id] == no_buf);
            uint16_t b = q.rx_free.back();
            q.rx_free.pop_back();
            q.rx_buf[id] = b;
            netif_rx_request_t* req = RING_GET_REQUEST(&q.rx, req_prod);
            req->id = id;
            req->pad = 0;
            req->gref = q.rx_pages.refs[b];
            req_prod++;
            q.st_rx.rx_posted++;
        }
        q.rx.req_prod_pvt = req_prod;
        // Linux holds back a push of fewer than NET_RX_SLOTS_MIN buffers (a
        // backend must be able to place a maximal packet; XSA-392 is about a
        // backend waiting forever for that). Here every free page is posted
        // and rx_buffers >= NET_RX_SLOTS_MIN (connect checks), so a push
        // always leaves at least that many.
        int note = 0;
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&q.rx, note);
        q.rx_pushed = req_prod;
        if (note) notify(q, q.rx_port, q.st_rx.rx_notifies);
    }

    // xennet_tx_buf_gc. Called with tx_lock held. False when it broke us.
    bool tx_gc(nf_queue& q) noexcept {
        if (!q.live) return true;
        int more = 0;
        do {
            RING_IDX prod = load_acquire(&q.tx.sring->rsp_prod);
            // RING_RESPONSE_PROD_OVERFLOW, tightened: never more responses
            // than requests we published.
            if (prod - q.tx.rsp_cons > q.tx_pushed - q.tx.rsp_cons) {
                q.st_tx.bad.rsp_prod_overflow++;
                mark_broken("TX: illegal number of responses " + std::to_string(prod - q.tx.rsp_cons));
                return false;
            }
            for (RING_IDX cons = q.tx.rsp_cons; cons != prod; cons++) {
                auto rsp = copy_once<netif_tx_response_t>(RING_GET_RESPONSE(&q.tx, cons));
                if (rsp.status == NETIF_RSP_NULL) continue; // the slot of an extra
                if (rsp.id >= RING_SIZE(&q.tx)) {
                    q.st_tx.bad.tx_bad_id++;
                    mark_broken("TX: response has incorrect id " + std::to_string(rsp.id));
                    return false;
                }
                if (rsp.id >= q.tx_state.size() ||
                    (q.tx_state[rsp.id] != tx_pending && q.tx_state[rsp.id] != tx_granted)) {
                    q.st_tx.bad.tx_inactive_id++;
                    mark_broken("TX: response for inactive request " + std::to_string(rsp.id));
                    return false;
                }
                if (q.tx_state[rsp.id] == tx_granted)
                    q.tx_done_q.push_back(tx_done{q.tx_cookie[rsp.id], rsp.status});
                q.tx_state[rsp.id] = tx_free;
                q.tx_free.push_back(rsp.id);
                q.st_tx.tx_completed++;
                if (rsp.status != NETIF_RSP_OKAY) q.st_tx.tx_errors++;
            }
            q.tx.rsp_cons = prod;
            RING_FINAL_CHECK_FOR_RESPONSES(&q.tx, more);
        } while (more);
        return true;
    }

    bool tx_room(const nf_queue& q, uint32_t slots, uint32_t extras) const noexcept {
        uint32_t used = q.tx.req_prod_pvt - q.tx.rsp_cons;
        return used + slots + extras <= RING_SIZE(&q.tx) && q.tx_free.size() >= slots;
    }

    // Room for `slots` requests (+ `extras`), collecting TX responses first
    // when the ring or the ids run short: 0, -EIO (broken by a bad
    // response), -EAGAIN (full; counted as tx_busy).
    int tx_make_room(nf_queue& q, uint32_t slots, uint32_t extras) noexcept {
        if (tx_room(q, slots, extras)) return 0;
        if (!tx_gc(q)) return -EIO;
        if (tx_room(q, slots, extras)) return 0;
        q.st_tx.tx_busy++;
        return -EAGAIN;
    }

    int tx_check(const nf_queue& q) const noexcept {
        if (is_broken.load(std::memory_order_relaxed)) return -EIO;
        if (!q.live || !is_connected.load(std::memory_order_relaxed)) return -ENOTCONN;
        return 0;
    }

    int check_offload(size_t len, const tx_offload* off) const noexcept {
        if (len > (be_sg ? netif_max_tx_size : eth_frame_len)) return -EMSGSIZE;
        if (!off || (!off->gso_size && !off->gso_type)) return 0;
        if (!off->gso_size) return -EINVAL;
        if (off->gso_type == XEN_NETIF_GSO_TYPE_TCPV4) return be_gso4 && be_sg ? 0 : -EOPNOTSUPP;
        if (off->gso_type == XEN_NETIF_GSO_TYPE_TCPV6) return be_gso6 && be_sg ? 0 : -EOPNOTSUPP;
        return -EINVAL;
    }

    // The request part of xennet_start_xmit: the first slot carries the
    // frame's length and the checksum flags, a GSO extra follows it, then
    // one slot per further page; NETTXF_more_data on all but the last.
    // ids[i] holds the i-th page of the frame. Called with tx_lock held and
    // room checked.
    // `ext` (tx_submit_granted*): slot `ext->slot` comes from the caller's
    // grant instead of its id's page.
    struct ext_slot {
        hv::gref_t gref;
        uint16_t offset;
        uint32_t slot = 0;
    };
    // With ext and two slots, slot 1 (the caller's) holds ext_len bytes.
    void post_tx(nf_queue& q, const uint16_t* ids, uint32_t nslots, size_t len, const tx_offload* off,
                 const ext_slot* ext = nullptr, size_t ext_len = 0) noexcept {
        bool gso = off && off->gso_size;
        uint16_t csum = 0;
        if (gso || (off && off->csum_blank))
            csum = NETTXF_csum_blank | NETTXF_data_validated; // CHECKSUM_PARTIAL (GSO always is)
        else if (off && off->data_validated)
            csum = NETTXF_data_validated;                     // CHECKSUM_UNNECESSARY

        RING_IDX i = q.tx.req_prod_pvt;
        size_t left = len;
        for (uint32_t s = 0; s < nslots; s++) {
            bool from_ext = ext && ext->slot == s;
            uint16_t chunk = uint16_t(std::min(left, hv::page_size));
            if (ext && nslots == 2) chunk = uint16_t(s == 0 ? len - ext_len : ext_len); // header | payload
            left -= chunk;
            netif_tx_request_t req{};
            req.gref = from_ext ? ext->gref : q.tx_pages.refs[ids[s]];
            req.offset = from_ext ? ext->offset : 0;
            req.id = ids[s];
            req.size = s == 0 ? uint16_t(len) : chunk; // first slot: whole frame
            req.flags = uint16_t((s == 0 ? csum : 0) | (s + 1 < nslots ? NETTXF_more_data : 0) |
                                 (s == 0 && gso ? NETTXF_extra_info : 0));
            *RING_GET_REQUEST(&q.tx, i++) = req;
            q.tx_state[ids[s]] = from_ext ? tx_granted : tx_pending;
            if (s == 0 && gso) {
                netif_extra_info_t ex{};
                ex.type = XEN_NETIF_EXTRA_TYPE_GSO;
                ex.flags = 0;
                ex.u.gso.size = off->gso_size;
                ex.u.gso.type = off->gso_type;
                ex.u.gso.pad = 0;
                ex.u.gso.features = 0;
                std::memcpy(RING_GET_REQUEST(&q.tx, i++), &ex, sizeof ex);
                q.st_tx.tx_extras++;
            }
        }
        q.tx.req_prod_pvt = i;
        int note = 0;
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&q.tx, note);
        q.tx_pushed = i;
        if (note) notify(q, q.tx_port, q.st_tx.tx_notifies);
        q.st_tx.tx_packets++;
        q.st_tx.tx_bytes += len;
        q.st_tx.tx_slots += nslots;
        // "Note: It is not safe to access skb after xennet_tx_buf_gc()!"
        (void)tx_gc(q);
    }

    // Consume RX positions [rsp_cons, end) and free their pages
    // (xennet_set_rx_rsp_cons plus the page release). rx_lock held.
    void consume_rx(nf_queue& q, RING_IDX end) noexcept {
        for (RING_IDX p = q.rx.rsp_cons; p != end; p++) {
            uint16_t& b = q.rx_buf[p & (netif_rx_ring_size - 1)];
            if (b != no_buf) q.rx_free.push_back(b);
            b = no_buf;
        }
        q.rx.rsp_cons = end;
    }

    // Copy a parsed chain's data slots to `dst` (c.len bytes). rx_lock held.
    void gather_rx(const nf_queue& q, const rx_chain& c, uint8_t* dst) const noexcept {
        for (uint32_t i = 0; i < c.nslots; i++) {
            const auto& pc = c.pieces[i];
            uint16_t b = q.rx_buf[pc.pos & (netif_rx_ring_size - 1)];
            ZC_CHECK(b != no_buf); // every published position is a posted one (get_responses)
            std::memcpy(dst, q.rx_page(b) + pc.offset, pc.len);
            dst += pc.len;
        }
    }

    // A chain delivered: consume it, count it, refill in batches of a
    // quarter of the buffers (one push, at most one notification each).
    void finish_rx(nf_queue& q, const rx_chain& c) noexcept {
        consume_rx(q, c.end);
        q.st_rx.rx_packets++;
        q.st_rx.rx_bytes += c.len;
        q.st_rx.rx_slots += c.nslots;
        q.st_rx.rx_extras += c.extras;
        if (q.rx_free.size() >= std::max<size_t>(1, opts.rx_buffers / 4)) alloc_rx_buffers(q);
    }

    // xennet_get_responses + xennet_get_extras + xennet_set_skb_gso: parse
    // the chain at rsp_cons with responses published up to rp. Returns 0, or
    // a negative errno for a chain to drop (c.end says how far it reaches).
    int get_responses(nf_queue& q, RING_IDX rp, rx_chain& c) noexcept {
        constexpr RING_IDX mask = netif_rx_ring_size - 1;
        RING_IDX first = q.rx.rsp_cons;
        auto rx = copy_once<netif_rx_response_t>(RING_GET_RESPONSE(&q.rx, first));
        uint32_t max = XEN_NETIF_NR_SLOTS_MIN + (rx.status <= int(rx_copy_threshold) ? 1 : 0);
        RING_IDX cons = first;
        int err = 0;
        c = rx_chain{};
        c.flags = rx.flags;
        auto& bad = q.st_rx.bad;

        if (rx.flags & NETRXF_extra_info) {
            netif_extra_info_t ex{};
            do {
                if (cons + 1 == rp) {
                    bad.rx_missing_extra++;
                    if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: missing extra info", fe_path.c_str());
                    err = -EBADR;
                    break;
                }
                ex = copy_once<netif_extra_info_t>(RING_GET_RESPONSE(&q.rx, ++cons));
                c.extras++;
                if (!ex.type || ex.type >= XEN_NETIF_EXTRA_TYPE_MAX) {
                    bad.rx_bad_extra++;
                    if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: invalid extra type %u", fe_path.c_str(), ex.type);
                    err = -EINVAL;
                } else if (ex.type == XEN_NETIF_EXTRA_TYPE_GSO) {
                    c.gso = true;
                    c.gso_size = ex.u.gso.size;
                    c.gso_type = ex.u.gso.type;
                }
            } while (ex.flags & XEN_NETIF_EXTRA_FLAG_MORE);
        }

        // Data slots: the first at `first`, the rest after the extras.
        RING_IDX pos = first;
        uint32_t slots = 1;
        for (;;) {
            // Linux finds the page by position and ignores the id; a
            // correct backend echoes the request's id (= position), so a
            // mismatch is a backend bug worth seeing.
            if (rx.id != (pos & mask)) {
                bad.rx_id_mismatch++;
                if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: rx response id %u at slot %u", fe_path.c_str(), rx.id, pos & mask);
                err = -EINVAL;
            } else if (rx.status < 0 || uint32_t(rx.offset) + uint32_t(rx.status) > hv::page_size) {
                bad.rx_bad_status++;
                if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: rx->offset: %u, size: %d", fe_path.c_str(), rx.offset, rx.status);
                err = -EINVAL;
            } else if (c.nslots < std::size(c.pieces)) {
                c.pieces[c.nslots++] = {pos, rx.offset, uint16_t(rx.status)};
                c.len += size_t(rx.status);
            }
            if (!(rx.flags & NETRXF_more_data)) break;
            if (cons + slots == rp) {
                bad.rx_incomplete++;
                if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: need more slots", fe_path.c_str());
                err = -ENOENT;
                break;
            }
            pos = cons + slots;
            rx = copy_once<netif_rx_response_t>(RING_GET_RESPONSE(&q.rx, pos));
            slots++;
        }
        if (slots > max) {
            bad.rx_too_many_slots++;
            if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: too many slots (%u)", fe_path.c_str(), slots);
            err = -E2BIG;
        }
        c.end = cons + slots;
        if (!err && c.gso) {
            if (!c.gso_size || (c.gso_type != XEN_NETIF_GSO_TYPE_TCPV4 && c.gso_type != XEN_NETIF_GSO_TYPE_TCPV6)) {
                bad.rx_bad_gso++;
                if (rl_rx.allow())
                    ZC_LOG(warn, tag, "%s: bad GSO extra (size %u type %u)", fe_path.c_str(), c.gso_size, c.gso_type);
                err = -EINVAL;
            }
        }
        return err;
    }

    // --- teardown (xennet_disconnect_backend) -----------------------------

    // Stop using every queue, unbind its event channels and queue its pages
    // for ending. Holds both locks of a queue while changing it.
    void stop_queues() noexcept {
        for (auto& qp : qs) {
            nf_queue& q = *qp;
            std::scoped_lock g(q.tx_lock, q.rx_lock);
            if (!q.live && !q.ev) continue;
            q.live = false;
            q.ev.reset(); // closes the handle: every port of it is unbound
            for (hv::shared_pages* p : {&q.tx_pages, &q.rx_pages, &q.tx_ring_pg, &q.rx_ring_pg})
                if (p->count) leftovers.push_back(std::exchange(*p, hv::shared_pages{}));
        }
    }

    // End the grants of every page in `leftovers`, retrying while the
    // backend still maps some of them, for at most `retry_ms`.
    int end_grants(uint32_t retry_ms) noexcept {
        int64_t deadline = now_ms() + retry_ms;
        for (;;) {
            for (size_t i = 0; i < leftovers.size();) {
                if (gs->unshare(leftovers[i]) == 0) {
                    leftovers.erase(leftovers.begin() + long(i));
                } else {
                    i++;
                }
            }
            if (leftovers.empty()) return 0;
            if (now_ms() >= deadline) break;
            sleep_ms(10);
        }
        size_t pages = 0;
        for (auto& p : leftovers) pages += p.count;
        ZC_LOG(warn, tag, "%s: backend still uses %zu granted page(s); not freed yet", fe_path.c_str(), pages);
        return -EBUSY;
    }

    // xennet_bus_close. ctl_lock held.
    int bus_close() noexcept {
        if (my_state == XenbusStateClosed || be_state() == XenbusStateClosed) return 0;
        (void)switch_state(XenbusStateClosing);
        int st = wait_backend([](int s) { return s == XenbusStateClosing || s == XenbusStateClosed || s == XenbusStateUnknown; },
                              opts.timeout_ms);
        if (st == XenbusStateClosed) return 0;
        (void)switch_state(XenbusStateClosed);
        if (st < 0) return st;
        st = wait_backend([](int s) { return s == XenbusStateClosed || s == XenbusStateUnknown; }, opts.timeout_ms);
        return st < 0 ? st : 0;
    }

    // netback_changed: the backend's state moved. ctl_lock held.
    void backend_changed() noexcept {
        int st = be_state();
        switch (st) {
        case XenbusStateClosed:
            if (my_state == XenbusStateClosed) break;
            [[fallthrough]]; // missed the backend's Closing
        case XenbusStateClosing:
            if (my_state == XenbusStateClosed) break;
            // xenbus_frontend_closed. The backend unmapped before it went
            // Closing (xenvif_disconnect_data), so the grants can end now;
            // what it still holds is retried by disconnect().
            ZC_LOG(info, tag, "%s: backend is closing", fe_path.c_str());
            is_connected = false;
            (void)switch_state(XenbusStateClosed);
            stop_queues();
            (void)end_grants(0);
            break;
        default:
            break; // Connected: Linux only announces the carrier to peers
        }
    }

    int process_events() noexcept {
        std::lock_guard g(ctl_lock);
        int n = 0;
        for (auto& qp : qs) {
            nf_queue& q = *qp;
            uint64_t ev = 0;
            if (q.ev) {
                for (;;) {
                    auto p = q.ev->pending();
                    if (!p) break;
                    (void)q.ev->unmask(*p);
                    ev++;
                }
            }
            std::lock_guard t(q.tx_lock);
            q.st_tx.events += ev;
            n += int(ev);
            (void)tx_gc(q);
        }
        bool changed = false;
        while (xs->read_watch()) changed = true;
        if (changed) {
            n++;
            backend_changed();
        }
        if (is_broken) return -EIO;
        return n;
    }

    int disconnect() noexcept {
        std::lock_guard g(ctl_lock);
        int rc = 0;
        if (!released) {
            is_connected = false;
            rc = bus_close();
            stop_queues();
            released = true;
        }
        int e = end_grants(opts.unshare_retry_ms);
        return e ? e : rc;
    }
};

// ---------------------------------------------------------------------------

netfront::netfront(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}

netfront::~netfront() {
    if (!_p) return;
    (void)disconnect();
    if (_p->xs && !_p->be_path.empty()) (void)_p->xs->unwatch(_p->be_path + "/state", _p->watch_token);
}

result<std::unique_ptr<netfront>> netfront::connect(hv::port& port, const netfront_options& o, std::string* why) noexcept {
    auto fail = [&](int rc, const std::string& msg) -> result<std::unique_ptr<netfront>> {
        if (why) *why = msg;
        return err(rc);
    };
    if (o.max_queues == 0 || o.tx_buffers == 0 || o.tx_buffers > netif_tx_ring_size ||
        o.rx_buffers < netif_rx_slots_min || o.rx_buffers > netif_rx_ring_size || o.timeout_ms == 0)
        return fail(-EINVAL, "netfront: bad options (max_queues >= 1, tx_buffers 1..256, rx_buffers 19..256)");

    auto p = std::make_unique<impl>();
    p->port = &port;
    p->opts = o;
    auto x = hv::xs::open(port.xenstore_path());
    if (!x) return fail(x.error(), "netfront: cannot open xenstore");
    p->xs = std::move(*x);
    auto g = port.open_gntshr();
    if (!g) return fail(g.error(), "netfront: cannot open gntshr");
    p->gs = std::move(*g);

    // xenbus_probe_node / read_otherend_details.
    p->fe_path = "/local/domain/" + std::to_string(port.self()) + "/device/vif/" + std::to_string(o.devid);
    auto bid = p->xs->read(p->fe_path + "/backend-id");
    auto bpath = p->xs->read(p->fe_path + "/backend");
    unsigned long id = 0;
    if (!bid || !bpath || !parse_uint(*bid, &id) || id >= hv::domid_self || bpath->empty())
        return fail(-ENOENT, "netfront: reading backend and backend-id under " + p->fe_path);
    p->be_id = hv::domid_t(id);
    p->be_path = *bpath;
    if (!p->xs->read(p->be_path))
        return fail(-ENOENT, "netfront: unable to read or find backend " + p->be_path);

    p->watch_token = "netfront:" + p->fe_path;
    if (int rc = p->xs->watch(p->be_path + "/state", p->watch_token); rc)
        return fail(rc, "netfront: watching " + p->be_path + "/state");

    std::unique_ptr<netfront> nf(new netfront(std::move(p)));
    impl& m = *nf->_p;
    std::lock_guard lk(m.ctl_lock);
    // From here failures go through the destructor, which closes the bus
    // and ends the grants.
    auto abort = [&](int rc, const std::string& msg) -> result<std::unique_ptr<netfront>> {
        ZC_LOG(warn, tag, "%s: %s", m.fe_path.c_str(), msg.c_str());
        if (why) *why = "netfront: " + msg;
        return err(rc);
    };

    // xennet_create_dev: Initialising, and wait for a live backend.
    if (int rc = m.switch_state(XenbusStateInitialising); rc) {
        m.released = true;
        return abort(rc, "writing " + m.fe_path + "/state");
    }
    // netback_changed acts on InitWait while we are Initialising; a backend
    // going Closing makes us Closed (xenbus_frontend_closed).
    int st = m.wait_backend([](int s) { return s == XenbusStateInitWait || s == XenbusStateClosing; }, o.timeout_ms);
    if (st == XenbusStateClosing) {
        (void)m.switch_state(XenbusStateClosed);
        m.released = true;
        return abort(-ECONNRESET, "backend went Closing before InitWait");
    }
    if (st < 0) {
        m.released = true; // nothing set up; leave the device Initialising
        return abort(st, "backend did not reach InitWait");
    }

    // xennet_connect
    if (!m.be_read_unsigned("feature-rx-copy", 0)) {
        m.released = true; // state stays Initialising, as in Linux
        return abort(-ENODEV, "backend does not support copying receive path");
    }
    std::string step;
    if (int rc = m.talk_to_netback(&step); rc) {
        // xenbus_dev_fatal: Closing; the destructor finishes the close.
        (void)m.switch_state(XenbusStateClosing);
        return abort(rc, step);
    }
    for (auto& q : m.qs) {
        // "give the driver domain a kick because we've probably just
        // requeued some packets"
        std::scoped_lock l(q->tx_lock, q->rx_lock);
        m.notify(*q, q->tx_port, q->st_tx.tx_notifies);
        if (q->rx_port != q->tx_port) m.notify(*q, q->rx_port, q->st_rx.rx_notifies);
        m.alloc_rx_buffers(*q);
    }
    m.is_connected = true;
    if (int rc = m.switch_state(XenbusStateConnected); rc) {
        m.is_connected = false;
        return abort(rc, "writing " + m.fe_path + "/state");
    }
    st = m.wait_backend([](int s) { return s == XenbusStateConnected || s == XenbusStateClosing || s == XenbusStateClosed; },
                        o.timeout_ms);
    if (st != XenbusStateConnected) {
        m.is_connected = false;
        return abort(st < 0 ? st : -ECONNRESET, st < 0 ? "backend did not reach Connected" : "backend closed instead of connecting");
    }
    ZC_LOG(debug, tag, "%s: connected to %s, %zu queue(s)%s", m.fe_path.c_str(), m.be_path.c_str(), m.qs.size(),
           m.split ? ", split event channels" : "");
    return nf;
}

uint32_t netfront::queues() const noexcept { return uint32_t(_p->qs.size()); }
const mac_addr& netfront::mac() const noexcept { return _p->mac; }
hv::domid_t netfront::backend_id() const noexcept { return _p->be_id; }
const std::string& netfront::frontend_path() const noexcept { return _p->fe_path; }
const std::string& netfront::backend_path() const noexcept { return _p->be_path; }
bool netfront::backend_sg() const noexcept { return _p->be_sg; }
bool netfront::backend_gso_tcpv4() const noexcept { return _p->be_gso4; }
bool netfront::backend_gso_tcpv6() const noexcept { return _p->be_gso6; }
bool netfront::split_event_channels() const noexcept { return _p->split; }
size_t netfront::max_frame() const noexcept { return _p->be_sg ? netif_max_tx_size : eth_frame_len; }
bool netfront::connected() const noexcept { return _p->is_connected && !_p->is_broken; }
bool netfront::broken() const noexcept { return _p->is_broken; }

std::string netfront::broken_reason() const {
    std::lock_guard g(_p->why_lock);
    return _p->broken_why;
}

int netfront::send(const void* frame, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size() || !frame || len < eth_hlen) return -EINVAL;
    if (int rc = m.check_offload(len, off); rc) return rc;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = m.tx_check(q); rc) return rc;
    uint32_t nslots = uint32_t((len + hv::page_size - 1) / hv::page_size);
    uint32_t extras = off && off->gso_size ? 1 : 0;
    if (int rc = m.tx_make_room(q, nslots, extras); rc) return rc;
    uint16_t ids[netif_max_tx_size / hv::page_size + 1];
    const uint8_t* src = static_cast<const uint8_t*>(frame);
    for (uint32_t s = 0; s < nslots; s++) {
        ids[s] = q.tx_free.back();
        q.tx_free.pop_back();
        size_t chunk = std::min(len - size_t{s} * hv::page_size, hv::page_size);
        std::memcpy(q.tx_page(ids[s]), src + size_t{s} * hv::page_size, chunk);
    }
    m.post_tx(q, ids, nslots, len, off);
    return 0;
}

result<tx_buffer> netfront::tx_reserve(uint32_t queue) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size()) return err(-EINVAL);
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = m.tx_check(q); rc) return err(rc);
    if (q.tx_free.empty()) {
        if (!m.tx_gc(q)) return err(-EIO);
        if (q.tx_free.empty()) {
            q.st_tx.tx_busy++;
            return err(-EAGAIN);
        }
    }
    uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_state[id] = tx_reserved;
    return tx_buffer{q.tx_page(id), id};
}

int netfront::tx_submit(const tx_buffer& b, size_t len, uint32_t queue, const tx_offload* off) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size() || len < eth_hlen) return -EINVAL;
    if (len > hv::page_size) return -EMSGSIZE;
    if (int rc = m.check_offload(len, off); rc) return rc;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = m.tx_check(q); rc) return rc;
    if (b.id >= q.tx_state.size() || q.tx_state[b.id] != tx_reserved || b.data != q.tx_page(b.id)) return -EINVAL;
    uint32_t extras = off && off->gso_size ? 1 : 0;
    // The page is already ours: only ring room matters.
    auto room = [&] { return (q.tx.req_prod_pvt - q.tx.rsp_cons) + 1 + extras <= RING_SIZE(&q.tx); };
    if (!room()) {
        if (!m.tx_gc(q)) return -EIO;
        if (!room()) {
            q.st_tx.tx_busy++;
            return -EAGAIN;
        }
    }
    m.post_tx(q, &b.id, 1, len, off);
    return 0;
}

int netfront::tx_release(const tx_buffer& b, uint32_t queue) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size()) return -EINVAL;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (b.id >= q.tx_state.size() || q.tx_state[b.id] != tx_reserved) return -EINVAL;
    q.tx_state[b.id] = tx_free;
    q.tx_free.push_back(b.id);
    return 0;
}

int netfront::tx_submit_granted(hv::gref_t gref, uint16_t offset, size_t len, uint64_t cookie, uint32_t queue,
                                const tx_offload* off) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size() || len < eth_hlen) return -EINVAL;
    if (size_t{offset} + len > hv::page_size) return -EMSGSIZE;
    if (off && off->gso_size) return -EINVAL; // one slot: nothing to segment
    if (int rc = m.check_offload(len, off); rc) return rc;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = m.tx_check(q); rc) return rc;
    if (int rc = m.tx_make_room(q, 1, 0); rc) return rc;
    uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    q.tx_cookie[id] = cookie;
    impl::ext_slot ext{gref, offset};
    m.post_tx(q, &id, 1, len, off, &ext);
    return 0;
}

int netfront::tx_submit_granted_sg(const void* hdr, size_t hdr_len, hv::gref_t gref, uint16_t offset, size_t len,
                                   uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size() || !hdr || hdr_len < eth_hlen || hdr_len > hv::page_size || len == 0) return -EINVAL;
    if (size_t{offset} + len > hv::page_size) return -EMSGSIZE;
    if (off && off->gso_size) return -EINVAL;
    if (!m.be_sg) return -EOPNOTSUPP; // two slots need feature-sg
    if (int rc = m.check_offload(hdr_len + len, off); rc) return rc;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = m.tx_check(q); rc) return rc;
    if (int rc = m.tx_make_room(q, 2, 0); rc) return rc;
    uint16_t ids[2];
    for (auto& id : ids) {
        id = q.tx_free.back();
        q.tx_free.pop_back();
    }
    std::memcpy(q.tx_page(ids[0]), hdr, hdr_len); // our page: the caller cannot touch it afterwards
    q.tx_cookie[ids[1]] = cookie;
    impl::ext_slot ext{gref, offset, 1};
    m.post_tx(q, ids, 2, hdr_len + len, off, &ext, len);
    return 0;
}

uint32_t netfront::tx_reap_granted(tx_done* out, uint32_t max, uint32_t queue) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size() || !out) return 0;
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.tx_lock);
    if (q.tx_done_q.empty()) (void)m.tx_gc(q);
    uint32_t n = uint32_t(std::min<size_t>(max, q.tx_done_q.size()));
    std::copy_n(q.tx_done_q.begin(), n, out);
    q.tx_done_q.erase(q.tx_done_q.begin(), q.tx_done_q.begin() + n);
    return n;
}

// xennet_poll, one frame at a time.
result<size_t> netfront::recv(void* buf, size_t cap, uint32_t queue, rx_info* info) noexcept {
    if (!buf && cap) return err(-EINVAL);
    return recv_impl(buf, cap, queue, info, nullptr, nullptr);
}

result<size_t> netfront::recv_view(rx_view_fn fn, void* arg, uint32_t queue, rx_info* info) noexcept {
    if (!fn) return err(-EINVAL);
    return recv_impl(nullptr, 0, queue, info, fn, arg);
}

result<size_t> netfront::recv_impl(void* buf, size_t cap, uint32_t queue, rx_info* info, rx_view_fn fn,
                                   void* arg) noexcept {
    impl& m = *_p;
    if (queue >= m.qs.size()) return err(-EINVAL);
    nf_queue& q = *m.qs[queue];
    std::lock_guard g(q.rx_lock);
    if (m.is_broken) return err(-EIO);
    if (!q.live) return err(-ENOTCONN);
    // Refill in batches (finish_rx), and always before going idle.
    for (;;) {
        RING_IDX rp = load_acquire(&q.rx.sring->rsp_prod);
        // RING_RESPONSE_PROD_OVERFLOW, tightened: never more responses than
        // requests we published (Linux catches the rest as "Bad rx
        // response id" on slots without a buffer).
        if (rp - q.rx.rsp_cons > q.rx_pushed - q.rx.rsp_cons) {
            q.st_rx.bad.rsp_prod_overflow++;
            m.mark_broken("RX: illegal number of responses " + std::to_string(rp - q.rx.rsp_cons));
            return err(-EIO);
        }
        if (rp == q.rx.rsp_cons) {
            m.alloc_rx_buffers(q);
            int more = 0;
            RING_FINAL_CHECK_FOR_RESPONSES(&q.rx, more); // napi_complete_done + re-arm rsp_event
            if (more) continue;
            return err(-EAGAIN);
        }
        rx_chain c;
        if (m.get_responses(q, rp, c) < 0) {
            m.consume_rx(q, c.end);
            q.st_rx.rx_errors++;
            continue;
        }
        if (info) {
            info->len = c.len;
            info->flags = uint16_t(c.flags & (NETRXF_csum_blank | NETRXF_data_validated));
            info->gso_size = c.gso ? c.gso_size : 0;
            info->gso_type = c.gso ? c.gso_type : 0;
            info->slots = c.nslots;
            info->extras = c.extras;
        }
        if (fn && c.nslots == 1) {
            // The frame lies in one RX page: show it in place.
            const auto& pc = c.pieces[0];
            uint16_t b = q.rx_buf[pc.pos & (netif_rx_ring_size - 1)];
            ZC_CHECK(b != no_buf);
            fn(q.rx_page(b) + pc.offset, pc.len, arg);
        } else if (fn) {
            // Chained frame: assemble it in a scratch buffer (once per queue).
            if (!q.rx_scratch) q.rx_scratch.reset(new (std::nothrow) uint8_t[netif_max_tx_size + 1]);
            if (!q.rx_scratch || c.len > netif_max_tx_size + 1) {
                m.consume_rx(q, c.end);
                q.st_rx.rx_errors++;
                continue;
            }
            m.gather_rx(q, c, q.rx_scratch.get());
            fn(q.rx_scratch.get(), c.len, arg);
        }
        if (!fn) {
            if (c.len > cap) return err(-EMSGSIZE); // stays queued
            m.gather_rx(q, c, static_cast<uint8_t*>(buf));
        }
        m.finish_rx(q, c);
        return c.len;
    }
}

int netfront::event_fd(uint32_t queue) const noexcept {
    if (queue >= _p->qs.size() || !_p->qs[queue]->ev) return -1;
    return _p->qs[queue]->ev->fd();
}

int netfront::control_fd() const noexcept { return _p->xs->fileno(); }

int netfront::process_events() noexcept { return _p->process_events(); }

int netfront::wait(int timeout_ms) noexcept {
    std::vector<pollfd> fds;
    fds.push_back({_p->xs->fileno(), POLLIN, 0});
    for (uint32_t i = 0; i < _p->qs.size(); i++)
        if (int fd = event_fd(i); fd >= 0) fds.push_back({fd, POLLIN, 0});
    int n = ::poll(fds.data(), nfds_t(fds.size()), timeout_ms);
    if (n < 0) return -errno;
    if (n == 0) return 0;
    return process_events();
}

queue_stats netfront::stats(uint32_t queue) const noexcept {
    queue_stats s;
    if (queue >= _p->qs.size()) return s;
    const nf_queue& q = *_p->qs[queue];
    {
        std::lock_guard g(q.tx_lock);
        add_stats(s, q.st_tx);
    }
    {
        std::lock_guard g(q.rx_lock);
        add_stats(s, q.st_rx);
    }
    return s;
}

hv::op_counters netfront::grant_counters() const noexcept { return _p->gs->counters(); }

int netfront::disconnect() noexcept { return _p->disconnect(); }

} // namespace zc::link
