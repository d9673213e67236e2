// SPDX-License-Identifier: MIT
// The worker threads: each blocks in poll() on its event-channel handle and
// a wake-up eventfd (never spins), runs the RX timers that are due, then
// serves the queues whose events fired or whose work is pending (Linux: the
// per-queue NAPI poll xenvif_poll and the RX kthread
// xenvif_kthread_guest_rx). Ports are unmasked late, as Linux's lateeoi
// does (drivers/xen/events/events_base.c xen_irq_lateeoi_locked, XSA-332):
// an event that found no work is spurious, and after spurious events in a
// row the port stays masked for a growing, bounded delay, so a guest
// hammering its event channel costs the worker next to nothing. Also fatal
// errors (xenvif_fatal_tx_err): the vif stops being served and the reason
// is reported once, after the worker dropped its locks.
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "netback/common.hpp"

namespace zc::netback {

namespace {

// The worker's own copy of its queue list, refreshed when add_vif or
// remove_vif changed it.
void refresh_snapshot(worker& w) {
    std::lock_guard g(w.lock);
    if (w.gen != w.snap_gen) {
        w.snap = w.queues;
        w.snap_gen = w.gen;
    }
}

// A deliverable port keeps the handle's fd readable, so when poll says it
// is not there is nothing to collect: skip pending() (a read() each) on the
// passes that only continue a long TX batch.
void collect_ports(worker& w, short revents, std::vector<hv::evtchn_port_t>& ports) {
    ports.clear();
    if (!(revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))) return;
    std::lock_guard g(w.ev_lock);
    for (;;) {
        auto p = w.ev->pending();
        if (!p) break;
        ports.push_back(*p);
    }
}

// Linux xen_irq_lateeoi_locked: spurious events in a row tolerated before
// the unmask is held back (xenbus_device::spurious_threshold's default),
// then 1, 2, 4 ... ms, at most one second (HZ); the count stops growing at
// (1 << n) >= 4 s (HZ << 2).
constexpr unsigned spurious_threshold = 1;
constexpr unsigned eoi_delay_max_ms = 1000;
constexpr unsigned spurious_cap_ms = 4000;

// Linux xenvif_tx_interrupt: the TX ring has requests to consume.
bool tx_has_requests(queue& q) noexcept {
    std::lock_guard g(q.tx_lock);
    return !q.tx_dead && q.tx.attached() && q.tx.unconsumed() != 0;
}

// Linux xenvif_have_rx_work: a waiting frame now fits in the RX ring, or a
// stalled ring may be ready again.
bool rx_has_work(queue& q) noexcept {
    std::lock_guard g(q.rx_lock);
    if (q.rx_dead || !q.rx.attached()) return false;
    if (q.stalled) return true;
    return q.count && q.rx.unconsumed() >= needed_of(q.at(0), *q.core);
}

// The end of an event on `port` (Linux xen_irq_lateeoi with
// XEN_EOI_FLAG_SPURIOUS when it found no work). When its unmask is held
// back, the port leaves `ports` and poll_timeout unmasks it when due.
void late_eoi(queue& q, eoi_state& e, hv::evtchn_port_t port, bool spurious, time_point now,
              std::vector<hv::evtchn_port_t>& ports) noexcept {
    if (!spurious) {
        e.spurious = 0;
        return;
    }
    bump(q.core->ctr.spurious_events);
    if ((1u << e.spurious) < spurious_cap_ms) ++e.spurious;
    if (e.spurious <= spurious_threshold) return;
    const unsigned ms = std::min(1u << (e.spurious - 1 - spurious_threshold), eoi_delay_max_ms);
    e.due = now + std::chrono::milliseconds(ms);
    bump(q.core->ctr.eoi_delays);
    ports.erase(std::remove(ports.begin(), ports.end(), port), ports.end());
}

// Unmasks a held-back port whose delay is over; returns when the next is
// due. Under ev_lock, a removed vif's port (unbound right after `removed`
// is set) is left alone: its number may already belong to another vif.
time_point eoi_due(worker& w, queue& q, time_point now) noexcept {
    time_point next = time_point::max();
    for (eoi_state* e : {&q.tx_eoi, &q.rx_eoi}) {
        if (e->due == time_point::max()) continue;
        if (e->due > now) {
            next = std::min(next, e->due);
            continue;
        }
        e->due = time_point::max();
        std::lock_guard g(w.ev_lock);
        if (!q.core->removed.load(std::memory_order_relaxed))
            (void)w.ev->unmask(e == &q.tx_eoi ? q.tx_port : q.rx_port);
    }
    return next;
}

} // namespace

void datapath::impl::run(worker& w) noexcept {
    std::vector<hv::evtchn_port_t> ports;
    while (!w.stop.load(std::memory_order_acquire)) {
        refresh_snapshot(w);
        const int timeout = poll_timeout(w);
        pollfd fds[2] = {{w.ev->fd(), POLLIN, 0}, {w.wake_fd, POLLIN, 0}};
        int pr = ::poll(fds, 2, timeout);
        if (pr < 0 && errno != EINTR) {
            ZC_LOG(error, tag, "worker %u: poll: %s", w.id, std::strerror(errno));
            ::usleep(1000);
        }
        if (w.stop.load(std::memory_order_acquire)) break;
        if (fds[1].revents & POLLIN) {
            uint64_t cnt;
            (void)!::read(w.wake_fd, &cnt, sizeof cnt);
        }
        refresh_snapshot(w);
        collect_ports(w, fds[0].revents, ports);
        serve_queues(w, ports);
        {
            // Unmask after the work: an event that came meanwhile fires
            // again. Ports held back by late_eoi are no longer in `ports`.
            std::lock_guard g(w.ev_lock);
            for (auto p : ports) (void)w.ev->unmask(p);
        }
        report_fatals(w);
        place(w); // placement.cpp: queues follow their traffic
    }
}

// Runs the RX timers that are due (or were re-armed) and unmasks the
// held-back ports whose delay is over; timers, delays and leftover work
// decide how long the worker may sleep (-1: until an event).
int datapath::impl::poll_timeout(worker& w) noexcept {
    const time_point now = clock_type::now();
    const bool all = std::exchange(w.rearm_all, false);
    time_point next = time_point::max();
    bool busy = false;
    for (auto& q : w.snap) {
        // Re-armed timers of a queue with nothing waiting (and not stalled)
        // have nothing to do: service_rx would only find that out under
        // its lock, for every queue after every TX batch.
        const bool rearm = q->rx_rearm.exchange(false, std::memory_order_relaxed) || all;
        if ((rearm && q->waiting.load(std::memory_order_relaxed)) || q->rx_timer <= now)
            q->rx_timer = service_rx(w, q);
        next = std::min(next, q->rx_timer);
        next = std::min(next, q->credit.timeout); // the `rate` credit timer
        next = std::min(next, eoi_due(w, *q, now));
        if (q->tx_more || q->tx_kick.load(std::memory_order_relaxed) || q->rx_kick.load(std::memory_order_relaxed))
            busy = true;
    }
    if (busy) return 0;
    if (next == time_point::max()) return -1;
    const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_type::now()).count();
    return int(std::clamp<int64_t>(d + 1, 0, 60000));
}

// TX and RX work of every queue that has some: an event on its port, a
// kick from another worker, or a TX batch that stopped early. What each
// event found decides its EOI (Linux xenvif_tx_interrupt,
// xenvif_rx_interrupt, xenvif_interrupt for a shared port): looked at
// before the work takes it.
void datapath::impl::serve_queues(worker& w, std::vector<hv::evtchn_port_t>& ports) noexcept {
    const time_point now = clock_type::now();
    for (auto& q : w.snap) {
        bool tx = q->tx_more || q->tx_kick.exchange(false, std::memory_order_relaxed) ||
                  (q->credit.timeout != time_point::max() && q->credit.timeout <= now);
        bool rx = q->rx_kick.exchange(false, std::memory_order_relaxed);
        bool tx_ev = false, rx_ev = false;
        for (auto p : ports) {
            if (p == q->tx_port || p == q->rx_port) bump(q->core->ctr.events_received);
            tx_ev = tx_ev || p == q->tx_port;
            rx_ev = rx_ev || p == q->rx_port;
        }
        if (!tx && !rx && !tx_ev && !rx_ev) continue;
        const bool shared = q->tx_port == q->rx_port;
        const bool tx_found = tx_ev && (tx_has_requests(*q) || releases_pending(*q));
        const bool rx_found = rx_ev && (tx_found && shared ? true : rx_has_work(*q));
        if (tx || tx_ev) {
            process_releases(w, *q); // the direct path's (direct.cpp)
            process_tx(w, q);
            if (!w.tx_pkts.empty()) w.rearm_all = true; // sources' pending slots moved (convert_held)
        }
        if (rx || rx_ev) {
            drain_rx(w, q);
            q->rx_rearm.store(true, std::memory_order_relaxed);
        }
        if (shared) {
            if (tx_ev) late_eoi(*q, q->tx_eoi, q->tx_port, !tx_found && !rx_found, now, ports);
        } else {
            if (tx_ev) late_eoi(*q, q->tx_eoi, q->tx_port, !tx_found, now, ports);
            if (rx_ev) late_eoi(*q, q->rx_eoi, q->rx_port, !rx_found, now, ports);
        }
    }
}

// ---------------------------------------------------------------------------
// Fatal errors: Linux xenvif_fatal_tx_err. The vif stops being served; the
// reason is logged once and reported once, after the worker dropped its locks.

void datapath::impl::fatal(worker& w, vif_core& c, const std::string& why) noexcept {
    if (c.disabled.exchange(true)) return;
    {
        std::lock_guard g(c.reason_lock);
        c.reason = why;
    }
    ZC_LOG(error, tag, "vif%u.%u: fatal error, disabling: %s", unsigned(c.dom), c.devid, why.c_str());
    w.fatals.push_back({c.dom, c.devid, why});
}

void datapath::impl::report_fatals(worker& w) noexcept {
    if (w.fatals.empty()) return;
    w.rearm_all = true; // frames waiting for a disabled vif go at once (drop_expired)
    auto fs = std::move(w.fatals);
    w.fatals.clear();
    for (auto& f : fs)
        if (on_fatal) on_fatal(f.dom, f.devid, f.reason);
}

} // namespace zc::netback
