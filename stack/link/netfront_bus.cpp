// SPDX-License-Identifier: MIT
// The netfront's xenbus side: reading the toolstack's keys and the backend's
// features, the handshake (xennet_connect, talk_to_netback, setup_netfront,
// write_queue_xenstore_keys, xen_net_read_mac), following the backend's
// state (netback_changed) and the close (xennet_bus_close,
// xennet_disconnect_backend).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <poll.h>

#include "common/clock.hpp"
#include "link/netfront_impl.hpp"

namespace zc::link {

using namespace detail;

bool detail::parse_uint(const std::string& s, unsigned long* out) noexcept {
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

// --- xenstore helpers -------------------------------------------------------

int netfront::impl::switch_state(int s) noexcept {
    // xenbus_switch_state: write our state node.
    int rc = xs->write(fe_path + "/state", std::to_string(s));
    if (rc == 0) my_state = s;
    return rc;
}

// xenbus_read_driver_state: Unknown when the node is missing or garbage.
int netfront::impl::be_state() noexcept {
    auto v = xs->read(be_path + "/state");
    unsigned long s = 0;
    if (!v || !parse_uint(*v, &s) || s > XenbusStateReconfigured) return XenbusStateUnknown;
    return int(s);
}

unsigned long netfront::impl::be_read_unsigned(const char* key, unsigned long dflt) noexcept {
    auto v = xs->read(be_path + "/" + key);
    unsigned long x = 0;
    if (!v || !parse_uint(*v, &x)) return dflt;
    return x;
}

// Wait until pred(backend state) or the timeout. Events are drained before
// the state is read, so a change after the read wakes the poll.
template <class Pred>
int netfront::impl::wait_backend(Pred pred, uint32_t timeout_ms) noexcept {
    int64_t deadline = zc::mono_ms() + timeout_ms;
    for (;;) {
        while (xs->read_watch()) {}
        int st = be_state();
        if (pred(st)) return st;
        int64_t left = deadline - zc::mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        pollfd p{xs->fileno(), POLLIN, 0};
        (void)::poll(&p, 1, int(left));
    }
}

// --- probe and connect (xennet_create_dev, netback_changed, xennet_connect) --

// xenbus_probe_node / read_otherend_details, then watch the backend's state.
int netfront::impl::probe(std::string* why) noexcept {
    auto fail = [&](int rc, const std::string& msg) {
        if (why) *why = msg;
        return rc;
    };
    fe_path = "/local/domain/" + std::to_string(port->self()) + "/device/vif/" + std::to_string(opts.devid);
    auto bid = xs->read(fe_path + "/backend-id");
    auto bpath = xs->read(fe_path + "/backend");
    unsigned long id = 0;
    if (!bid || !bpath || !parse_uint(*bid, &id) || id >= hv::domid_self || bpath->empty())
        return fail(-ENOENT, "netfront: reading backend and backend-id under " + fe_path);
    be_id = hv::domid_t(id);
    be_path = *bpath;
    if (!xs->read(be_path)) return fail(-ENOENT, "netfront: unable to read or find backend " + be_path);

    watch_token = "netfront:" + fe_path;
    if (int rc = xs->watch(be_path + "/state", watch_token); rc)
        return fail(rc, "netfront: watching " + be_path + "/state");
    return 0;
}

// The handshake up to Connected. On failure the netfront's destructor closes
// the bus and ends the grants.
int netfront::impl::connect(std::string* why) noexcept {
    std::lock_guard lk(ctl_lock);
    auto abort = [&](int rc, const std::string& msg) {
        ZC_LOG(warn, tag, "%s: %s", fe_path.c_str(), msg.c_str());
        if (why) *why = "netfront: " + msg;
        return rc;
    };

    // xennet_create_dev: Initialising, and wait for a live backend.
    if (int rc = switch_state(XenbusStateInitialising); rc) {
        released = true;
        return abort(rc, "writing " + fe_path + "/state");
    }
    // netback_changed acts on InitWait while we are Initialising; a backend
    // going Closing makes us Closed (xenbus_frontend_closed).
    int st = wait_backend([](int s) { return s == XenbusStateInitWait || s == XenbusStateClosing; }, opts.timeout_ms);
    if (st == XenbusStateClosing) {
        (void)switch_state(XenbusStateClosed);
        released = true;
        return abort(-ECONNRESET, "backend went Closing before InitWait");
    }
    if (st < 0) {
        released = true; // nothing set up; leave the device Initialising
        return abort(st, "backend did not reach InitWait");
    }

    // xennet_connect
    if (!be_read_unsigned("feature-rx-copy", 0)) {
        released = true; // state stays Initialising, as in Linux
        return abort(-ENODEV, "backend does not support copying receive path");
    }
    std::string step;
    if (int rc = talk_to_netback(&step); rc) {
        // xenbus_dev_fatal: Closing; the destructor finishes the close.
        (void)switch_state(XenbusStateClosing);
        return abort(rc, step);
    }
    for (auto& q : qs) {
        // "give the driver domain a kick because we've probably just
        // requeued some packets"
        std::scoped_lock l(q->tx_lock, q->rx_lock);
        notify(*q, q->tx_port, q->st_tx.tx_notifies);
        if (q->rx_port != q->tx_port) notify(*q, q->rx_port, q->st_rx.rx_notifies);
        alloc_rx_buffers(*q);
    }
    is_connected = true;
    if (int rc = switch_state(XenbusStateConnected); rc) {
        is_connected = false;
        return abort(rc, "writing " + fe_path + "/state");
    }
    st = wait_backend([](int s) { return s == XenbusStateConnected || s == XenbusStateClosing || s == XenbusStateClosed; },
                      opts.timeout_ms);
    if (st != XenbusStateConnected) {
        is_connected = false;
        return abort(st < 0 ? st : -ECONNRESET, st < 0 ? "backend did not reach Connected" : "backend closed instead of connecting");
    }
    start_direct();
    ZC_LOG(debug, tag, "%s: connected to %s, %zu queue(s)%s%s", fe_path.c_str(), be_path.c_str(), qs.size(),
           split ? ", split event channels" : "", direct ? ", direct path" : "");
    return 0;
}

// --- setup (talk_to_netback, setup_netfront) ----------------------------------

int netfront::impl::setup_queue(nf_queue& q, std::string* why) noexcept {
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
    q.tx.init(q.tx_ring_pg.addr); // XEN_FRONT_RING_INIT
    q.rx.init(q.rx_ring_pg.addr);

    if (int rc = bind_event_channels(q, why); rc) return rc;

    // Our buffers: TX pages read-only for the backend (it only copies from
    // them), RX pages writable.
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

// setup_netfront_split, falling back to setup_netfront_single when split is
// not offered or fails.
int netfront::impl::bind_event_channels(nf_queue& q, std::string* why) noexcept {
    auto ev = port->open_evtchn();
    if (!ev) {
        if (why) *why = "opening an event-channel handle: " + std::string(std::strerror(-ev.error()));
        return ev.error();
    }
    q.ev = std::move(*ev);
    if (split) {
        auto t = q.ev->bind_unbound(be_id);
        auto r = t ? q.ev->bind_unbound(be_id) : result<hv::evtchn_port_t>(err(t.error()));
        if (t && r) {
            q.tx_port = *t;
            q.rx_port = *r;
            return 0;
        }
        if (t) (void)q.ev->unbind(*t);
        split = false; // the keys of every queue must agree
    }
    auto p = q.ev->bind_unbound(be_id);
    if (!p) {
        if (why) *why = "allocating an event channel: " + std::string(std::strerror(-p.error()));
        return p.error();
    }
    q.tx_port = q.rx_port = *p;
    return 0;
}

// write_queue_xenstore_keys
int netfront::impl::write_queue_keys(const nf_queue& q, const std::string& dir, hv::xs::txn t,
                                     std::string* what) noexcept {
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

int netfront::impl::write_keys(std::string* why) noexcept {
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
        if (!rc) rc = write_direct_keys(*t, &what);
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
int netfront::impl::talk_to_netback(std::string* why) noexcept {
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
    if (int rc = setup_direct(why); rc) return rc;
    if (want_split && !split) {
        // A later queue fell back to one channel: make them all agree by
        // binding one shared port for the queues that got two. (Rare: only
        // when the port space ran out.)
        for (auto& q : qs) {
            if (q->tx_port == q->rx_port) continue;
            (void)q->ev->unbind(q->rx_port);
            q->rx_port = q->tx_port;
        }
    }
    return write_keys(why);
}

// --- teardown (xennet_disconnect_backend) -----------------------------------

// Stop using every queue, unbind its event channels and queue its pages for
// ending. Holds both locks of a queue while changing it.
void netfront::impl::stop_queues() noexcept {
    for (auto& qp : qs) {
        nf_queue& q = *qp;
        std::scoped_lock g(q.tx_lock, q.rx_lock);
        if (!q.live && !q.ev) continue;
        q.live = false;
        q.ev.reset(); // closes the handle: every port of it is unbound
        q.tx.detach(); // the ring pages are about to be ended
        q.rx.detach();
        for (hv::shared_pages* p : {&q.tx_pages, &q.rx_pages, &q.tx_ring_pg, &q.rx_ring_pg})
            if (p->count) leftovers.push_back(std::exchange(*p, hv::shared_pages{}));
    }
}

// End the grants of every page in `leftovers`, retrying while the backend
// still maps some of them, for at most `retry_ms`.
int netfront::impl::end_grants(uint32_t retry_ms) noexcept {
    int64_t deadline = zc::mono_ms() + retry_ms;
    for (;;) {
        for (size_t i = 0; i < leftovers.size();) {
            if (gs->unshare(leftovers[i]) == 0) {
                leftovers.erase(leftovers.begin() + long(i));
            } else {
                i++;
            }
        }
        if (leftovers.empty()) return 0;
        if (zc::mono_ms() >= deadline) break;
        zc::sleep_ms(10);
    }
    size_t pages = 0;
    for (auto& p : leftovers) pages += p.count;
    ZC_LOG(warn, tag, "%s: backend still uses %zu granted page(s); not freed yet", fe_path.c_str(), pages);
    return -EBUSY;
}

// xennet_bus_close. ctl_lock held.
int netfront::impl::bus_close() noexcept {
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
void netfront::impl::backend_changed() noexcept {
    int st = be_state();
    switch (st) {
    case XenbusStateClosed:
        if (my_state == XenbusStateClosed) break;
        [[fallthrough]]; // missed the backend's Closing
    case XenbusStateClosing:
        if (my_state == XenbusStateClosed) break;
        // xenbus_frontend_closed. The backend unmapped before it went
        // Closing (xenvif_disconnect_data), so the grants can end now; what
        // it still holds is retried by disconnect().
        ZC_LOG(info, tag, "%s: backend is closing", fe_path.c_str());
        is_connected = false;
        (void)switch_state(XenbusStateClosed);
        stop_direct();
        stop_queues();
        (void)end_grants(0);
        break;
    default:
        break; // Connected: Linux only announces the carrier to peers
    }
}

// Acknowledge every queue's events, collect TX responses (xennet_tx_buf_gc),
// then follow the backend's state when its watch fired.
int netfront::impl::process_events() noexcept {
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
    bool changed = false, peers_changed = false;
    while (auto e = xs->read_watch()) {
        if (direct && e->path.compare(0, peers_path.size(), peers_path) == 0)
            peers_changed = true;
        else
            changed = true;
    }
    if (peers_changed) {
        n++;
        load_peers();
    }
    if (changed) {
        n++;
        backend_changed();
    }
    if (is_broken) return -EIO;
    return n;
}

int netfront::impl::disconnect() noexcept {
    std::lock_guard g(ctl_lock);
    int rc = 0;
    if (!released) {
        is_connected = false;
        rc = bus_close();
        stop_direct();
        stop_queues();
        released = true;
    }
    int e = end_grants(opts.unshare_retry_ms);
    return e ? e : rc;
}

} // namespace zc::link
