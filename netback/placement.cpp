// SPDX-License-Identifier: MIT
// Placement: queues follow their traffic. A new queue goes to the worker
// serving the fewest (interface.cpp pick_worker), which usually puts the two
// ends of a VM-to-VM flow on different workers: every batch then takes the
// other worker's RX ring lock, notifies through its handle and wakes it.
// Each worker looks at its queues every `look_interval`: a queue whose
// frames mostly go to one queue served by another worker is put together
// with it, moving whichever of the two leaves the workers' loads (frames
// switched per second) more even. Linux leaves this to the scheduler and the
// IRQ affinity of each queue's event channels (xenvif_connect_data binds
// them with bind_interdomain_evtchn_to_irqhandler_lateeoi); here the port is
// unbound from the old owner's handle and bound on the new one's (Xen's
// evtchn_close puts the frontend's end back to unbound for dom0, so
// bind_interdomain takes it again), see docs/ARCHITECTURE.md "Threads".
#include <algorithm>

#include "netback/common.hpp"

namespace zc::netback {

namespace {

// A queue's frames are looked at once it switched `min_frames` since the
// last look and at least `look_interval` passed (or `look_max` passed: the
// counts start again), so that a decision rests on enough frames whatever
// the rate. Hysteresis: a queue moves at most once per `move_cooldown`, and
// only after `streak_needed` looks in a row found one destination on
// another worker taking at least 3/4 of its frames.
constexpr auto look_interval = std::chrono::milliseconds(10);
constexpr auto look_max = std::chrono::seconds(1);
constexpr auto move_cooldown = std::chrono::milliseconds(250);
constexpr uint32_t streak_needed = 2;
constexpr uint32_t min_frames = 64;

int64_t load_of(worker& w) {
    std::lock_guard g(w.lock);
    int64_t sum = 0;
    for (auto& q : w.queues) sum += int64_t(q->load.load(std::memory_order_relaxed));
    return sum;
}

} // namespace

void datapath::impl::place(worker& w) noexcept {
    if (workers.size() < 2) return;
    const time_point now = clock_type::now();
    // Another owner asked for one of these queues (to put it with the queue
    // that sends it most of its frames): done at once, unless the queue's
    // own traffic now goes mostly to a queue of this worker (the two asked
    // for each other; one move is enough).
    // w.snap keeps a moved queue until the next refresh_snapshot: what is
    // no longer this worker's is skipped (only its owner moves a queue).
    auto mine = [&w](const std::shared_ptr<queue>& q) { return q->w.load(std::memory_order_relaxed) == &w; };
    for (auto& q : w.snap) {
        if (!mine(q)) continue;
        worker* to = q->move_to.exchange(nullptr, std::memory_order_relaxed);
        if (!to || to == &w || now - q->moved_at < move_cooldown) continue;
        std::shared_ptr<queue> peer = q->dst.lock();
        if (peer && mine(peer) && q->dst_hits * 4 >= q->sent * 3 && q->sent >= min_frames) continue;
        move_queue(w, q, *to, now);
    }
    if (now - w.placed_at < look_interval) return;
    w.placed_at = now;
    for (auto& q : w.snap) {
        if (!mine(q)) continue;
        const auto age = now - q->looked_at;
        if (age < look_interval || (q->sent < min_frames && age < look_max)) continue;
        // What this queue's frames did since the last look; owner only.
        q->looked_at = now;
        q->load.store(uint64_t(q->sent / std::chrono::duration<double>(age).count()), std::memory_order_relaxed);
        const uint32_t sent = std::exchange(q->sent, 0), hits = std::exchange(q->dst_hits, 0);
        std::shared_ptr<queue> dq = q->dst.lock();
        q->dst.reset();
        q->dst_raw = nullptr;
        q->dst_votes = 0;
        worker* dw = dq ? dq->w.load(std::memory_order_relaxed) : nullptr;
        if (!dq || dq == q || !dw || dw == &w || sent < min_frames || uint64_t(hits) * 4 < uint64_t(sent) * 3) {
            q->streak = 0;
            continue;
        }
        if (++q->streak < streak_needed || now - q->moved_at < move_cooldown) continue;
        q->streak = 0;
        // Together on the worker where the busier of the two loads ends up
        // lower; on a tie, on the worker with the lower id. The owner of
        // `dq` may be deciding the same about `q` (traffic both ways): both
        // reach the same move, one makes it and the other's request finds
        // it made, instead of the two swapping places.
        const int64_t lw = load_of(w), ld = load_of(*dw);
        const int64_t s = int64_t(q->load.load(std::memory_order_relaxed));
        const int64_t d = int64_t(dq->load.load(std::memory_order_relaxed));
        const int64_t go = std::max(lw - s, ld + s), come = std::max(lw + d, ld - d);
        if (go < come || (go == come && dw->id < w.id)) {
            move_queue(w, q, *dw, now);
        } else {
            dq->move_to.store(&w, std::memory_order_relaxed);
            dw->kick();
        }
    }
}

// Called by `from`, q's owner, between passes: q's ports move to `to`'s
// handle, q to `to`'s list. Its owner-only state (TX batch, timers, EOI
// counts, credit) goes along; a port whose unmask is held back (late EOI)
// stays until that is over. Events sent while no handle has the port are
// not lost work: the move sets the queue's kick flags, so the new owner
// looks at both rings once. False when the queue stays.
bool datapath::impl::move_queue(worker& from, const std::shared_ptr<queue>& q, worker& to, time_point now) noexcept {
    std::lock_guard b(q->bind_lock);
    vif_core& c = *q->core;
    if (q->w.load(std::memory_order_relaxed) != &from || c.removed.load(std::memory_order_relaxed) ||
        c.disabled.load(std::memory_order_relaxed) || q->tx_eoi.due != time_point::max() ||
        q->rx_eoi.due != time_point::max() || !q->tx_port)
        return false;
    const queue_params& qp = c.params.queues[q->index];
    {
        std::lock_guard g(from.ev_lock);
        (void)from.ev->unbind(q->tx_port);
        if (q->rx_port != q->tx_port) (void)from.ev->unbind(q->rx_port);
    }
    worker* owner = &to;
    hv::evtchn_port_t tp = 0, rp = 0;
    if (bind_ports(to, c.dom, qp, tp, rp) != 0) {
        owner = &from; // the frontend closed its end meanwhile, or `to` has no room: stay
        if (hv::evtchn_port_t bad = bind_ports(from, c.dom, qp, tp, rp); bad != 0) {
            q->tx_port = q->rx_port = 0;
            fatal(from, c, format("queue %u: cannot bind event channel %u again", q->index, bad));
            return false;
        }
    }
    q->tx_port = tp;
    q->rx_port = rp;
    if (owner != &from) {
        {
            std::lock_guard g(from.lock);
            auto it = std::find(from.queues.begin(), from.queues.end(), q);
            if (it != from.queues.end()) from.queues.erase(it);
            ++from.gen;
        }
        from.assigned.fetch_sub(1, std::memory_order_relaxed);
        to.assigned.fetch_add(1, std::memory_order_relaxed);
        q->moved_at = now;
        q->w.store(&to, std::memory_order_seq_cst);
        {
            std::lock_guard g(to.lock);
            to.queues.push_back(q);
            ++to.gen;
        }
        bump(c.ctr.queue_moves);
    }
    // The rings once more, on the new handle's behalf (kick_owner's pair).
    q->tx_kick.store(true, std::memory_order_seq_cst);
    q->rx_kick.store(true, std::memory_order_seq_cst);
    q->rx_rearm.store(true, std::memory_order_seq_cst);
    owner->kick();
    return owner != &from;
}

} // namespace zc::netback
