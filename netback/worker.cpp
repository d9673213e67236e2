// SPDX-License-Identifier: MIT
// The worker threads: each blocks in poll() on its event-channel handle and
// a wake-up eventfd (never spins), runs its queues' RX timers, then serves
// the queues whose events fired (Linux: the per-queue NAPI poll
// xenvif_poll and the RX kthread xenvif_kthread_guest_rx). Also fatal
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
            // Unmask after the work: an event that came meanwhile fires again.
            std::lock_guard g(w.ev_lock);
            for (auto p : ports) (void)w.ev->unmask(p);
        }
        report_fatals(w);
    }
}

// Runs every queue's RX timers; timers and leftover work decide how long
// the worker may sleep (-1: until an event).
int datapath::impl::poll_timeout(worker& w) noexcept {
    time_point next = time_point::max();
    bool busy = false;
    for (auto& q : w.snap) {
        next = std::min(next, service_rx(w, q));
        next = std::min(next, q->credit.timeout); // the `rate` credit timer
        if (q->tx_more || q->tx_kick.load(std::memory_order_relaxed) || q->rx_kick.load(std::memory_order_relaxed))
            busy = true;
    }
    if (busy) return 0;
    if (next == time_point::max()) return -1;
    const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_type::now()).count();
    return int(std::clamp<int64_t>(d + 1, 0, 60000));
}

// TX and RX work of every queue that has some: an event on its port, a
// kick from another worker, or a TX batch that stopped early.
void datapath::impl::serve_queues(worker& w, const std::vector<hv::evtchn_port_t>& ports) noexcept {
    for (auto& q : w.snap) {
        bool tx = q->tx_more || q->tx_kick.exchange(false, std::memory_order_relaxed) ||
                  (q->credit.timeout != time_point::max() && q->credit.timeout <= clock_type::now());
        bool rx = q->rx_kick.exchange(false, std::memory_order_relaxed);
        for (auto p : ports) {
            if (p == q->tx_port || p == q->rx_port) bump(q->core->ctr.events_received);
            if (p == q->tx_port) tx = true;
            if (p == q->rx_port) rx = true;
        }
        if (tx) process_tx(w, q);
        if (rx) drain_rx(w, q);
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
    auto fs = std::move(w.fatals);
    w.fatals.clear();
    for (auto& f : fs)
        if (on_fatal) on_fatal(f.dom, f.devid, f.reason);
}

} // namespace zc::netback
