// SPDX-License-Identifier: MIT
// libzcnet, sending (zc.h "sending"): a datagram or a batch of them into the
// socket's TX ring, from a pool buffer (zero copy) or, on a copy-fallback
// socket, copied into one the library owns; one kick of zc-stackd per call.
// Completions come back in zc_recv.cpp.
#include "zc.h"

#include <cerrno>
#include <cstring>

#include "uapi/shm.hpp"
#include "zsock.hpp"

using namespace zc::uapi;
using namespace zc::uapi::lib;

namespace {

bool valid_dst(const sockaddr_in* to) noexcept {
    return to->sin_family == AF_INET && to->sin_port != 0 && to->sin_addr.s_addr != 0;
}

// One datagram into the TX ring (not published). Returns ZC_SENT_* or -errno.
int enqueue(zsock& k, const void* data, size_t len, const sockaddr_in& dst, uint64_t user_data) noexcept {
    if (!data) return -EINVAL;
    if (len > max_payload) return -EMSGSIZE;
    const uint8_t* p = static_cast<const uint8_t*>(data);
    uint32_t buf;
    bool copied = false;
    uint16_t off = uint16_t(headroom);
    if (p >= k.pool + size_t{k.tx_bufs} * buf_size && p < k.pool + k.pool_size) {
        // A received buffer (rx_app): sent without a copy, and the stack's
        // from now on (zc.h, BUFFER OWNERSHIP).
        size_t at = size_t(p - k.pool);
        buf = uint32_t(at / buf_size);
        const uint32_t r = buf - k.tx_bufs;
        if (r >= k.rx_bufs) return -EINVAL;
        if (k.rx_held[r] == zsock::rx_sending) return -EBUSY;
        if (k.rx_held[r] != zsock::rx_app || at % buf_size != k.rx_off[r]) return -EINVAL;
        if (k.tx.free_slots(k.tx_prod) == 0) return -EAGAIN;
        k.rx_held[r] = zsock::rx_sending;
        off = k.rx_off[r];
    } else if (p >= k.pool && p < k.pool + k.pool_size) {
        size_t at = size_t(p - k.pool);
        buf = uint32_t(at / buf_size);
        if (buf >= k.tx_bufs || at % buf_size != headroom) return -EINVAL;
        if (k.state[buf] == b_stack || k.state[buf] == b_copy) return -EBUSY;
        if (k.state[buf] != b_app) return -EINVAL;
        if (k.tx.free_slots(k.tx_prod) == 0) return -EAGAIN;
    } else {
        if (!(k.flags & ZC_SOCK_COPY_FALLBACK)) {
            k.strict_refused++;
            return -EFAULT;
        }
        if (k.tx.free_slots(k.tx_prod) == 0 || k.free_list.empty()) return -EAGAIN;
        buf = k.free_list.back();
        k.free_list.pop_back();
        std::memcpy(k.pool + size_t{buf} * buf_size + headroom, p, len);
        copied = true;
    }
    if (buf < k.tx_bufs) k.state[buf] = copied ? b_copy : b_stack;
    tx_desc d{};
    d.buf = buf;
    d.off = off;
    d.len = uint16_t(len);
    d.dst_ip = dst.sin_addr.s_addr;
    d.dst_port = dst.sin_port;
    d.flags = copied ? tx_f_copied : 0;
    d.user_data = user_data;
    k.tx.write(k.tx_prod++, d);
    k.tx_bytes += len;
    if (copied) k.copied_sends++;
    else k.zc_sends++;
    return copied ? ZC_SENT_COPIED : ZC_SENT_ZEROCOPY;
}

// A load, not a system call: zc-stackd sets `closed` when it stops serving
// us (a crashed zc-stackd is noticed by service_gone() on -EAGAIN).
int check_served(zsock& k) noexcept {
    if (k.dead || k.lay->closed.load(std::memory_order_acquire)) {
        k.dead = true;
        return -EPIPE;
    }
    return 0;
}

// The destination of a datagram: `to`, or the connected peer for NULL.
int destination(const zsock& k, const sockaddr_in* to, sockaddr_in& dst) noexcept {
    if (to) {
        if (!valid_dst(to)) return -EINVAL;
        dst = *to;
    } else {
        if (!k.connected) return -EDESTADDRREQ;
        dst = k.peer;
    }
    return 0;
}

int send_prologue(zsock* k, uint32_t flags, const sockaddr_in* to, sockaddr_in& dst) noexcept {
    if (!k) return -EBADF;
    if (flags & ~ZC_SEND_FLAGS_ALL) return -EINVAL;
    if (int rc = destination(*k, to, dst); rc < 0) return rc;
    return check_served(*k);
}

int fail_eagain(zsock& k) noexcept { return service_gone(k) ? -EPIPE : -EAGAIN; }

// Element i of a batch: its datagram and destination, or the -errno that
// ends the batch before it.
struct batch_elem {
    const void* base = nullptr;
    uint32_t len = 0;
    uint64_t user_data = 0;
    sockaddr_in dst{};
};

// zc_sendv() and zc_sendmmsg(): the elements in order until the first that
// fails; one publish and one kick for all. Returns how many were accepted,
// or the first element's error.
template <class Elem>
int send_batch(zsock& k, unsigned n, Elem elem, unsigned* copied) noexcept {
    unsigned done = 0, nc = 0;
    int first_err = 0;
    for (; done < n; done++) {
        batch_elem e;
        int rc = elem(done, e);
        if (rc == 0) rc = enqueue(k, e.base, e.len, e.dst, e.user_data);
        if (rc < 0) {
            first_err = rc == -EAGAIN ? fail_eagain(k) : rc;
            break;
        }
        nc += rc == ZC_SENT_COPIED;
    }
    if (copied) *copied = nc;
    if (done == 0) return first_err;
    k.tx.publish(k.tx_prod);
    kick(k);
    return int(done);
}

} // namespace

extern "C" {

int zc_send(int s, const void* data, size_t len, const struct sockaddr_in* to, uint32_t flags, uint64_t user_data) {
    zsock* k = find(s);
    sockaddr_in dst;
    if (int rc = send_prologue(k, flags, to, dst); rc < 0) return rc;
    int rc = enqueue(*k, data, len, dst, user_data);
    if (rc == -EAGAIN) return fail_eagain(*k);
    if (rc < 0) return rc;
    k->tx.publish(k->tx_prod);
    kick(*k);
    return rc;
}

int zc_sendv(int s, const struct zc_iov* iov, unsigned n, const struct sockaddr_in* to, uint32_t flags,
             unsigned* copied) {
    zsock* k = find(s);
    sockaddr_in dst;
    if (int rc = send_prologue(k, flags, to, dst); rc < 0) return rc;
    if (!iov || n == 0 || n > 1024) return -EINVAL;
    return send_batch(*k, n, [&](unsigned i, batch_elem& e) {
        if (iov[i].pad) return -EINVAL;
        e = {iov[i].base, iov[i].len, iov[i].user_data, dst};
        return 0;
    }, copied);
}

// As sendmmsg(2) with a msg_name per message: each element names its own
// destination (AF_UNSPEC: the connected peer, as a NULL msg_name).
int zc_sendmmsg(int s, const struct zc_mmsg* msgs, unsigned n, uint32_t flags, unsigned* copied) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (flags & ~ZC_SEND_FLAGS_ALL || !msgs || n == 0 || n > 1024) return -EINVAL;
    if (int rc = check_served(*k); rc < 0) return rc;
    return send_batch(*k, n, [&](unsigned i, batch_elem& e) {
        const zc_mmsg& m = msgs[i];
        if (m.pad) return -EINVAL;
        const bool to_peer = m.to.sin_family == AF_UNSPEC;
        if (int rc = destination(*k, to_peer ? nullptr : &m.to, e.dst); rc < 0) return rc;
        e.base = m.base;
        e.len = m.len;
        e.user_data = m.user_data;
        return 0;
    }, copied);
}

} // extern "C"
