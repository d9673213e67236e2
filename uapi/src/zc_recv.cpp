// SPDX-License-Identifier: MIT
// libzcnet, what comes back from zc-stackd: send completions and received
// datagrams (zc.h "sending" and "receiving"; the rings: uapi/src/shm.hpp).
#include "zc.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "uapi/shm.hpp"
#include "zsock.hpp"

using namespace zc::uapi;
using namespace zc::uapi::lib;

namespace zc::uapi::lib {

void kick(zsock& k) noexcept {
    uint64_t one = 1;
    (void)!::write(k.kick, &one, sizeof one);
}

// The notify fd must be readable exactly while RX or CQ entries wait
// (level-triggered, whichever call takes them). zc-stackd writes it after
// producing; we clear it only once both rings look empty, then look again:
// an entry published between our look and the read would otherwise be
// pending with the fd clear, so then we set it again. While entries keep
// coming this costs no system call at all.
void settle_notify(zsock& k) noexcept {
    if (k.cq.avail(k.cq_cons) || k.rx.avail(k.rx_cons)) return;
    uint64_t v;
    if (::read(k.notify, &v, sizeof v) < 0) return; // already clear
    if (k.cq.avail(k.cq_cons) || k.rx.avail(k.rx_cons)) {
        uint64_t one = 1;
        (void)!::write(k.notify, &one, sizeof one);
    }
}

bool service_gone(zsock& k) noexcept {
    if (k.dead) return true;
    if (k.lay->closed.load(std::memory_order_acquire)) return k.dead = true;
    pollfd p{k.ctl, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) k.dead = true;
    return k.dead;
}

} // namespace zc::uapi::lib

extern "C" {

int zc_completions(int s, struct zc_completion* out, unsigned max) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!out && max) return -EINVAL;
    uint32_t avail = k->cq.avail(k->cq_cons);
    unsigned n = 0;
    while (n < max && avail) {
        cq_desc c = k->cq.read(k->cq_cons++);
        avail--;
        uint32_t b = c.buf & ~cq_buf_copied;
        // zc-stackd is the trusted side, but a garbled index must not
        // corrupt our state: skip it.
        uint32_t fl = 0;
        if (b >= k->tx_bufs) {
            // A received buffer that was sent: the stack's again. (zc-stackd
            // may already have received into it again and take_rx handed it
            // out: then it stays the application's.)
            const uint32_t r = b - k->tx_bufs;
            if (r >= k->rx_bufs) continue;
            if (k->rx_held[r] == zsock::rx_sending) k->rx_held[r] = zsock::rx_returned;
        } else if (k->state[b] != b_stack && k->state[b] != b_copy) {
            continue;
        } else if (k->state[b] == b_copy) {
            k->state[b] = b_free;
            k->free_list.push_back(b);
            fl |= ZC_CQE_F_COPIED;
        } else {
            k->state[b] = b_app;
        }
        out[n].user_data = c.user_data;
        out[n].res = c.res;
        out[n].flags = fl;
        k->completions++;
        if (c.res < 0) k->send_errors++;
        n++;
    }
    k->cq.release(k->cq_cons);
    settle_notify(*k);
    return int(n);
}

static unsigned take_rx(zsock* k, struct zc_rxd* out, unsigned max) noexcept {
    uint32_t avail = k->rx.avail(k->rx_cons);
    unsigned n = 0;
    while (n < max && avail) {
        rx_desc d = k->rx.read(k->rx_cons++);
        avail--;
        // rx_sending: a buffer we sent, whose completion zc-stackd wrote
        // before it received into the buffer again (we have not reaped it).
        if (d.buf >= k->rx_bufs || size_t{d.off} + d.len > buf_size || k->rx_held[d.buf] == zsock::rx_app) continue;
        k->rx_held[d.buf] = zsock::rx_app;
        k->rx_off[d.buf] = uint16_t(d.off);
        out[n].data = k->pool + size_t{k->tx_bufs + d.buf} * buf_size + d.off;
        // Cut by zc-stackd to the buffer (full_len), and/or here to the
        // socket's rx_max: the first bytes, flagged with the full length.
        const uint32_t full = std::max<uint32_t>(d.full_len, d.len);
        out[n].len = std::min<uint32_t>(d.len, k->rx_max);
        out[n].flags = full > out[n].len ? ZC_RXD_F_TRUNC | full << 16 : 0;
        if (full > out[n].len) k->rx_truncated++;
        std::memset(&out[n].from, 0, sizeof out[n].from);
        out[n].from.sin_family = AF_INET;
        out[n].from.sin_addr.s_addr = d.src_ip;
        out[n].from.sin_port = d.src_port;
        n++;
    }
    k->rx.release(k->rx_cons);
    return n;
}

int zc_recv(int s, struct zc_rxd* out, unsigned max) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!out || max == 0) return -EINVAL;
    unsigned n = take_rx(k, out, max);
    settle_notify(*k);
    if (n) return int(n);
    return service_gone(*k) ? -ENOTCONN : -EAGAIN;
}

static int64_t mono_ms_now() noexcept {
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return int64_t(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

// Sleeps on the notify eventfd, which is readable while RX *or* completion
// entries wait. Completions must not end the wait, so while only they are
// pending the counter is read (cleared) and the wait goes on: zc-stackd
// writes it again after it produces anything (notify_dirty), and the rings
// are looked at after each clear, so nothing published before the clear is
// missed. On the way out the fd is set again if entries wait, keeping it
// level-triggered for poll/epoll users (settle_notify).
int zc_recv_wait(int s, struct zc_rxd* out, unsigned max, int timeout_ms) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!out || max == 0 || timeout_ms < -1) return -EINVAL;
    const int64_t deadline = timeout_ms < 0 ? 0 : mono_ms_now() + timeout_ms;
    int rc = 0;
    bool cleared = false, spun = timeout_ms == 0;
    for (;;) {
        if (unsigned n = take_rx(k, out, max)) {
            rc = int(n);
            break;
        }
        // ZC_SOCK_BUSY_POLL: once per call, while a CPU is idle.
        if (!spun) {
            spun = true;
            if (k->bp.spin([k] { return k->rx.avail(k->rx_cons) != 0; })) continue;
        }
        // The control socket's hang-up is seen by the poll below (its
        // revents), so only the shared flag is looked at here: no system call.
        if (k->dead || k->lay->closed.load(std::memory_order_acquire)) {
            k->dead = true;
            rc = -ENOTCONN;
            break;
        }
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - mono_ms_now();
            if (left <= 0) {
                rc = -EAGAIN; // as recv(2) when SO_RCVTIMEO expires
                break;
            }
            wait = int(std::min<int64_t>(left, 1 << 30));
        }
        uint64_t v;
        if (::read(k->notify, &v, sizeof v) == ssize_t(sizeof v)) {
            cleared = true;
            continue; // look at the ring again after the clear
        }
        // Sleep until a datagram: zc-stackd skips the wake-ups of
        // completions meanwhile (shm.hpp, rx_only_wait). Set before the
        // last look at the ring, so a datagram published after it still
        // writes the eventfd.
        k->lay->rx_only_wait.store(1, std::memory_order_seq_cst);
        if (k->rx.avail(k->rx_cons)) continue;
        // events 0 on the control socket: only its hang-up (the service died)
        pollfd p[2] = {{k->notify, POLLIN, 0}, {k->ctl, 0, 0}};
        int pr = ::poll(p, 2, wait);
        if (pr < 0 && errno == EINTR) {
            rc = -EINTR; // as recv(2) interrupted by a signal handler
            break;
        }
        if (pr < 0) {
            rc = -errno;
            break;
        }
        if (p[1].revents & (POLLHUP | POLLERR)) k->dead = !k->rx.avail(k->rx_cons); // gone; what is left first
    }
    k->lay->rx_only_wait.store(0, std::memory_order_seq_cst);
    if (k->lay->cq_wake_skipped.exchange(0, std::memory_order_seq_cst)) cleared = true; // a wake-up is owed
    // While we waited, zc-stackd may have let the backend's TX responses
    // wait for its next pass (shm.hpp): if sends are still out, that pass
    // must come now, as we may wait for their completions next.
    if (k->zc_sends + k->copied_sends != k->completions + k->cq.avail(k->cq_cons)) kick(*k);
    if (cleared && (k->cq.avail(k->cq_cons) || k->rx.avail(k->rx_cons))) {
        uint64_t one = 1;
        (void)!::write(k->notify, &one, sizeof one);
    }
    if (rc > 0) settle_notify(*k);
    return rc;
}

int zc_rx_release(int s, const void* data) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    const uint8_t* p = static_cast<const uint8_t*>(data);
    if (!p || p < k->pool || p >= k->pool + k->pool_size) return -EFAULT;
    uint32_t b = uint32_t(size_t(p - k->pool) / buf_size);
    if (b < k->tx_bufs || b >= k->tx_bufs + k->rx_bufs) return -EINVAL;
    b -= k->tx_bufs;
    if (k->rx_held[b] == zsock::rx_never) return -EINVAL; // never received
    // Released already, or sent (zc_send of a received buffer gives it back).
    if (k->rx_held[b] == zsock::rx_returned || k->rx_held[b] == zsock::rx_sending) return -EALREADY;
    if (p != k->pool + size_t{k->tx_bufs + b} * buf_size + k->rx_off[b]) return -EINVAL;
    if (k->fr.free_slots(k->fr_prod) == 0) {
        kick(*k);
        return -EAGAIN;
    }
    k->rx_held[b] = zsock::rx_returned;
    k->fr.write(k->fr_prod++, fr_desc{b});
    k->fr.publish(k->fr_prod);
    // No wake-up per release (AF_XDP's fill ring has none either): zc-stackd
    // drains this ring before every delivery, and a delivery is what wakes
    // it. Only a ring filling up while it sleeps needs a kick.
    if (k->fr.free_slots(k->fr_prod) < (k->entries >> 1)) kick(*k);
    return 0;
}

} // extern "C"
