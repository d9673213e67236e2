// SPDX-License-Identifier: MIT
// libzcnet: the application side of the zc socket API (zc.h). Each socket is
// a SOCK_SEQPACKET connection to zc-stackd, a shared region with four rings
// (uapi/src/shm.hpp) and the socket's pool, both mmapped here. The socket's
// descriptor is the notify eventfd zc-stackd signals.
//
// Buffer states are tracked here (the application's view) and again in
// zc-stackd (which must not trust this process); errors for misuse come from
// here, before anything reaches shared memory. Completions and receiving
// are in zc_recv.cpp; the socket's private state in zsock.hpp.
#include "zc.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/fdpass.hpp"
#include "uapi/shm.hpp"
#include "zsock.hpp"

using namespace zc::uapi;
using namespace zc::uapi::lib;

namespace zc::uapi::lib {

// fd -> socket. The map is shared by all threads; each socket is used by one
// thread at a time (zc.h), so the lock only guards lookups and changes.
std::mutex g_lock;
std::unordered_map<int, std::unique_ptr<zsock>> g_socks;

// This process's id, refreshed in a fork()ed child by the atfork handler,
// so that checking a socket's owner costs no system call. A child inherits
// the descriptors and MAP_SHARED mappings of its parent's sockets; were it
// to use them, both processes would produce on the same rings with private
// indices that no longer agree, and both would lose sends. So an inherited
// socket is not a socket in the child: -EBADF (zc.h, FORK).
std::atomic<pid_t> g_pid{0};

void atfork_prepare() noexcept { g_lock.lock(); }
void atfork_parent() noexcept { g_lock.unlock(); }
void atfork_child() noexcept {
    g_lock.unlock(); // held by the forking thread across fork(): ours now
    g_pid.store(::getpid(), std::memory_order_relaxed);
}

pid_t self_pid() noexcept {
    static std::once_flag once;
    std::call_once(once, [] {
        g_pid.store(::getpid(), std::memory_order_relaxed);
        (void)::pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    });
    return g_pid.load(std::memory_order_relaxed);
}

zsock* find(int s) noexcept {
    pid_t me = self_pid();
    std::lock_guard g(g_lock);
    auto it = g_socks.find(s);
    if (it == g_socks.end() || it->second->owner != me) return nullptr;
    return it->second.get();
}

const char* service_path(const char* p) noexcept {
    if (p && *p) return p;
    const char* e = std::getenv("ZCNET_STACK_SOCK");
    return e && *e ? e : default_service;
}

int dial(const char* path) noexcept {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (std::strlen(path) >= sizeof a.sun_path) return -ENAMETOOLONG;
    std::strcpy(a.sun_path, path);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    return fd;
}

// One request, one response (with up to ctl_nfds fds). timeout_ms bounds the
// wait. On success *nfds descriptors are in fds (nfds = nullptr: none are
// kept); on an error none are.
int call(int ctl, const ctl_req& rq, ctl_rsp& rs, int* fds, int* nfds, int timeout_ms) noexcept {
    if (::send(ctl, &rq, sizeof rq, MSG_NOSIGNAL) != ssize_t(sizeof rq)) return -ENOTCONN;
    pollfd p{ctl, POLLIN, 0};
    int pr;
    do pr = ::poll(&p, 1, timeout_ms);
    while (pr < 0 && errno == EINTR);
    if (pr == 0) return -ETIMEDOUT;
    if (pr < 0) return -errno;
    int got = fds && nfds ? int(ctl_nfds) : 0;
    long n = zc::fdpass::recv(ctl, &rs, sizeof rs, fds, &got);
    if (n == -EMSGSIZE) return -EPROTO; // a longer response than ours, or too many fds
    if (n <= 0) return -ENOTCONN;
    if (n != long(sizeof rs)) {
        for (int i = 0; i < got; i++) ::close(fds[i]);
        return -EPROTO;
    }
    if (nfds) *nfds = got;
    return 0;
}

bool trailing_zero(const void* o, size_t known, size_t sz) noexcept {
    const uint8_t* p = static_cast<const uint8_t*>(o);
    for (size_t i = known; i < sz; i++)
        if (p[i]) return false;
    return true;
}

bool valid_count(uint32_t n) noexcept { return n >= 2 && n <= 4096 && n % 2 == 0; }

// The pool as the application sees it: the send buffers (read-write) and
// right after them the receive buffers (read-only: their descriptor is
// read-only or sealed F_SEAL_FUTURE_WRITE), in one range. MAP_FAILED on
// error.
void* map_pool(int txfd, uint64_t tx_off, int rxfd, size_t tx_bytes, size_t size) noexcept {
    if (tx_bytes >= size) return MAP_FAILED;
    void* area = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) return area;
    uint8_t* a = static_cast<uint8_t*>(area);
    if (::mmap(a, tx_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, txfd, off_t(tx_off)) == MAP_FAILED ||
        ::mmap(a + tx_bytes, size - tx_bytes, PROT_READ, MAP_SHARED | MAP_FIXED, rxfd, 0) == MAP_FAILED) {
        ::munmap(area, size);
        return MAP_FAILED;
    }
    return area;
}

} // namespace zc::uapi::lib

extern "C" {

const char* zc_version(void) { return "1.2"; }

const char* zc_service_path(const char* service) { return service_path(service); }

int zc_socket(const struct zc_socket_opts* o) {
    // The struct of 1.0/1.1 ends before rx_max; anything between that and
    // today's size is a truncated field.
    constexpr size_t known = sizeof(zc_socket_opts);
    if (!o || (o->sz != ZC_SOCKET_OPTS_SZ_1_0 && o->sz < known) ||
        (o->sz >= known && !trailing_zero(o, known, o->sz)))
        return -EINVAL;
    const bool v1_2 = o->sz >= known;
    if (o->flags & ~ZC_SOCK_FLAGS_ALL || (v1_2 && o->pad)) return -EINVAL;
    uint32_t tx = o->tx_bufs ? o->tx_bufs : 256, rx = o->rx_bufs ? o->rx_bufs : 256;
    uint32_t ent = o->ring_entries ? o->ring_entries : 512;
    if (!valid_count(tx) || !valid_count(rx) || ent < 8 || ent > 4096 || (ent & (ent - 1))) return -EINVAL;

    auto k = std::unique_ptr<zsock>(new (std::nothrow) zsock);
    if (!k) return -ENOMEM;
    k->flags = o->flags;
    if (o->flags & ZC_SOCK_BUSY_POLL) {
        const char* e = std::getenv("ZCNET_BUSY_POLL_US");
        unsigned long us = e && *e ? std::strtoul(e, nullptr, 10) : 50;
        k->bp.set_budget_us(uint32_t(std::min<unsigned long>(us, 1000)));
    }
    k->rx_max = v1_2 && o->rx_max ? o->rx_max : rx_capacity;
    k->owner = self_pid();
    k->local.sin_family = AF_INET;
    int fd = dial(service_path(o->service));
    if (fd < 0) return fd;
    k->ctl = fd;
    ctl_req rq{};
    rq.op = uint32_t(op::open);
    rq.version = proto_version;
    rq.tx_bufs = tx;
    rq.rx_bufs = rx;
    rq.entries = ent;
    ctl_rsp rs{};
    int fds[ctl_nfds] = {-1, -1, -1, -1};
    int nfds = 0;
    if (int rc = call(k->ctl, rq, rs, fds, &nfds, 10000); rc < 0) return rc;
    auto close_fds = [&] {
        for (int i = 0; i < nfds; i++) ::close(fds[i]);
    };
    if (rs.rc < 0) {
        close_fds();
        return rs.rc;
    }
    if (rs.version != proto_version || nfds != ctl_nfds) {
        close_fds();
        return -EPROTO;
    }
    k->notify = fds[fd_notify];
    k->kick = fds[fd_kick];
    k->shm_size = size_t(rs.shm_size);
    k->pool_size = size_t(rs.pool_size);
    void* shm = ::mmap(nullptr, k->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[fd_shm], 0);
    void* pool = map_pool(fds[fd_pool], rs.pool_off, fds[fd_rx], size_t{tx} * buf_size, k->pool_size);
    for (int f : {fd_shm, fd_pool, fd_rx}) ::close(fds[f]);
    if (shm == MAP_FAILED || pool == MAP_FAILED) {
        if (shm != MAP_FAILED) ::munmap(shm, k->shm_size);
        if (pool != MAP_FAILED) ::munmap(pool, k->pool_size);
        return -ENOMEM;
    }
    k->shm = shm;
    k->pool = static_cast<uint8_t*>(pool);
    k->lay = static_cast<shm_layout*>(shm);
    const shm_layout& L = *k->lay;
    if (L.magic != shm_magic || L.version != proto_version || L.entries != ent || L.tx_bufs != tx ||
        L.rx_bufs != rx || L.size > k->shm_size || size_t{tx + rx} * buf_size > k->pool_size)
        return -EPROTO;
    k->tx_bufs = tx;
    k->rx_bufs = rx;
    k->entries = ent;
    k->tx.attach(shm, L.tx_off, ent);
    k->cq.attach(shm, L.cq_off, ent);
    k->rx.attach(shm, L.rx_off, ent);
    k->fr.attach(shm, L.fr_off, ent);
    k->state.assign(tx, b_free);
    k->rx_held.assign(rx, zsock::rx_never);
    k->rx_off.assign(rx, 0);
    k->free_list.reserve(tx);
    for (uint32_t i = tx; i-- > 0;) k->free_list.push_back(i);
    int s = k->notify;
    std::lock_guard g(g_lock);
    auto& slot = g_socks[s];
    // An entry under this number means the application closed an earlier
    // socket with close(2) instead of zc_close(): that number is ours now,
    // so drop the stale entry without closing it.
    if (slot) slot->notify = -1;
    slot = std::move(k);
    return s;
}

int zc_close(int s) {
    std::unique_ptr<zsock> k;
    {
        std::lock_guard g(g_lock);
        auto it = g_socks.find(s);
        if (it == g_socks.end()) return -EBADF;
        // In a fork()ed child this releases only the child's inherited
        // copies of the mappings and descriptors; the parent's socket lives on.
        k = std::move(it->second);
        g_socks.erase(it);
    }
    return 0; // ~zsock unmaps and closes; zc-stackd sees the connection close
}

static int bind_or_connect(int s, const sockaddr_in* a, op what) noexcept {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!a || a->sin_family != AF_INET) return -EINVAL;
    if (what == op::connect && (a->sin_port == 0 || a->sin_addr.s_addr == 0)) return -EINVAL;
    ctl_req rq{};
    rq.op = uint32_t(what);
    rq.version = proto_version;
    rq.ip = a->sin_addr.s_addr;
    rq.port = a->sin_port;
    ctl_rsp rs{};
    if (int rc = call(k->ctl, rq, rs, nullptr, nullptr, 10000); rc < 0) return rc;
    if (rs.rc < 0) return rs.rc;
    if (what == op::connect) {
        k->connected = true;
        k->peer = *a;
    }
    k->local.sin_addr.s_addr = rs.ip;
    k->local.sin_port = rs.port;
    return 0;
}

int zc_bind(int s, const struct sockaddr_in* addr) { return bind_or_connect(s, addr, op::bind); }
int zc_connect(int s, const struct sockaddr_in* addr) { return bind_or_connect(s, addr, op::connect); }

int zc_getsockname(int s, struct sockaddr_in* out) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!out) return -EINVAL;
    *out = k->local;
    return 0;
}

int zc_pool_mmap(int s, struct zc_pool_info* info) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!info || info->sz < sizeof(zc_pool_info)) return -EINVAL;
    size_t sz = info->sz;
    std::memset(static_cast<void*>(info), 0, sz);
    info->sz = sz;
    info->base = k->pool;
    info->size = k->pool_size;
    info->buf_size = buf_size;
    info->headroom = headroom;
    info->max_payload = max_payload;
    info->tx_bufs = k->tx_bufs;
    info->rx_bufs = k->rx_bufs;
    return 0;
}

int zc_buf_alloc(int s, void** data) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    if (!data) return -EINVAL;
    if (k->free_list.empty()) return -ENOBUFS;
    uint32_t b = k->free_list.back();
    k->free_list.pop_back();
    k->state[b] = b_app;
    *data = k->pool + size_t{b} * buf_size + headroom;
    return 0;
}

int zc_buf_free(int s, void* data) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    const uint8_t* p = static_cast<const uint8_t*>(data);
    if (!p || p < k->pool || p >= k->pool + k->pool_size) return -EFAULT;
    size_t at = size_t(p - k->pool);
    uint32_t b = uint32_t(at / buf_size);
    if (b >= k->tx_bufs || at % buf_size != headroom) return -EINVAL;
    switch (k->state[b]) {
    case b_free: return -EALREADY;
    case b_stack:
    case b_copy: return -EBUSY; // b_copy buffers are never handed out, so a pointer to one is a stale one
    default: break;
    }
    k->state[b] = b_free;
    k->free_list.push_back(b);
    return 0;
}


int zc_socket_stats(int s, struct zc_stats* st) {
    zsock* k = find(s);
    if (!k) return -EBADF;
    // The struct of 1.0/1.1 ends before rx_truncated (ZC_STATS_SZ_1_0).
    if (!st || st->sz < ZC_STATS_SZ_1_0) return -EINVAL;
    size_t sz = st->sz;
    std::memset(static_cast<void*>(st), 0, sz);
    st->sz = sz;
    st->zc_sends = k->zc_sends;
    st->copied_sends = k->copied_sends;
    st->completions = k->completions;
    st->send_errors = k->send_errors;
    st->tx_bytes = k->tx_bytes;
    st->strict_refused = k->strict_refused;
    const shm_stats& ss = k->lay->stats;
    st->rx_packets = ss.rx_packets.load(std::memory_order_relaxed);
    st->rx_bytes = ss.rx_bytes.load(std::memory_order_relaxed);
    st->rx_drops = ss.rx_drops.load(std::memory_order_relaxed);
    if (sz >= sizeof(zc_stats)) st->rx_truncated = k->rx_truncated;
    return 0;
}

int zc_ping(const char* service, const struct sockaddr_in* dst, int timeout_ms) {
    if (!dst || dst->sin_family != AF_INET || dst->sin_addr.s_addr == 0 || timeout_ms <= 0) return -EINVAL;
    int fd = dial(service_path(service));
    if (fd < 0) return fd;
    ctl_req rq{};
    rq.op = uint32_t(op::ping);
    rq.version = proto_version;
    rq.ip = dst->sin_addr.s_addr;
    rq.timeout_ms = timeout_ms;
    ctl_rsp rs{};
    int rc = call(fd, rq, rs, nullptr, nullptr, timeout_ms + 1000);
    ::close(fd);
    return rc < 0 ? rc : rs.rc;
}

} // extern "C"
