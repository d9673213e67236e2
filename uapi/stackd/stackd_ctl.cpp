// SPDX-License-Identifier: MIT
// zc-stackd, control connections: accepting applications, the requests on
// each connection (open, bind, connect, ping, stats) and closing a socket
// once its application is gone.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>
#include <new>

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.hpp"
#include "common/fdpass.hpp"
#include "common/log.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

int send_rsp(int fd, const ctl_rsp& r, const int* fds, int nfds) noexcept {
    long n = fdpass::send(fd, &r, sizeof r, fds, nfds, MSG_DONTWAIT);
    return n == long(sizeof r) ? 0 : n < 0 ? int(n) : -EIO;
}

int send_rc(int fd, int32_t rc) noexcept {
    ctl_rsp r{};
    r.version = proto_version;
    r.rc = rc;
    return send_rsp(fd, r, nullptr, 0);
}

zsock* service::impl::slot_alloc() noexcept {
    for (uint32_t i = 0; i < socks.size(); i++) {
        if (!socks[i]) {
            socks[i].reset(new (std::nothrow) zsock);
            if (!socks[i]) return nullptr;
            socks[i]->slot = i;
            socks[i]->gen = next_gen++;
            return socks[i].get();
        }
    }
    return nullptr;
}

void service::impl::accept_one() noexcept {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    zsock* s = slot_alloc();
    if (!s) {
        ZC_LOG(warn, tag, "too many connections (%u)", opt.max_sockets);
        ::close(fd);
        return;
    }
    s->ctl = fd;
    s->accepted_ms = now;
    ucred cr{};
    socklen_t cl = sizeof cr;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) s->pid = cr.pid;
    // Connections count against the application's socket limit from here
    // (an idle one until setup_timeout_ms): its OPEN is refused beyond it.
    if (app_conns(s->pid) > opt.max_sockets_per_app) {
        // An application at its limit that closed a socket just before
        // connecting again: that hangup may still wait in our event queue.
        for (auto& o : socks)
            if (o && o.get() != s && !o->closing && o->pid == s->pid && o->ctl >= 0) {
                pollfd p{o->ctl, POLLRDHUP, 0};
                if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP))) handle_ctl(*o);
            }
        if (app_conns(s->pid) > opt.max_sockets_per_app) s->refuse = -EMFILE;
    }
    epoll_add(fd, ev_key(ev_ctl, s->slot));
}

uint32_t service::impl::app_conns(pid_t pid) const noexcept {
    uint32_t k = 0;
    for (auto& o : socks)
        if (o && !o->closing && o->pid == pid) k++;
    return k;
}

// The per-application pool budget for `pages` more (send + receive).
int service::impl::check_limits(const zsock& s, uint32_t pages, uint64_t* held) const noexcept {
    uint64_t mine = pages;
    for (auto& o : socks)
        if (o && o.get() != &s && !o->closing && o->pid == s.pid && o->open)
            mine += uint64_t(o->tx_bufs + o->rx_bufs) * buf_size / hv::page_size;
    *held = mine;
    if (s.refuse) return s.refuse;
    return mine > opt.max_pool_pages_per_app ? -ENOMEM : 0;
}

void service::impl::log_refused(const zsock& s, uint32_t tx, uint32_t rx, int rc, uint64_t held) noexcept {
    const uint32_t kib = (tx + rx) * buf_size / 1024, pages = (tx + rx) * buf_size / uint32_t(hv::page_size);
    char what[96];
    std::snprintf(what, sizeof what, "pid %d: socket of %u+%u buffers (%u KiB of pool) refused", int(s.pid), tx, rx,
                  kib);
    const char* smaller = "open smaller sockets (zc_socket_opts.tx_bufs/rx_bufs, 2 KiB each; default 256+256 = 1 MiB)";
    if (rc == -EMFILE)
        ZC_LOG_RL(refusals_rl, warn, tag, "%s (EMFILE): the application has %u sockets, --max-sockets-per-app %u",
                  what, app_conns(s.pid) - 1, opt.max_sockets_per_app);
    else if (rc == -ENOMEM && held > opt.max_pool_pages_per_app)
        ZC_LOG_RL(refusals_rl, warn, tag,
                  "%s (ENOMEM): the application's pools would be %llu pages, --max-pool-pages-per-app %u; %s, or "
                  "raise the limit",
                  what, (unsigned long long)held, opt.max_pool_pages_per_app, smaller);
    else if (rc == -ENOSPC && pool_pages + pages > opt.max_pool_pages)
        ZC_LOG_RL(refusals_rl, warn, tag,
                  "%s (ENOSPC): its %u pool pages would pass the guest's grant budget, %u of "
                  "--max-pool-pages %u in use; %s, or raise the budget",
                  what, pages, pool_pages, opt.max_pool_pages, smaller);
    else
        ZC_LOG_RL(refusals_rl, warn, tag, "%s (%s): granting its %u pool pages failed (the guest's memory or "
                  "grant table); %s", what, std::strerror(-rc), pages, smaller);
}

// The application is gone (or we shut down): stop serving the socket;
// its pool lives on until no send is in flight (the backend may still
// copy from it), then its grants end.
void service::impl::close_sock(zsock& s) noexcept {
    if (s.port) ports[s.port] = no_slot;
    s.port = 0;
    for (int* fd : {&s.ctl, &s.kick, &s.notify}) {
        if (*fd >= 0) {
            (void)::epoll_ctl(ep, EPOLL_CTL_DEL, *fd, nullptr);
            ::close(*fd);
            *fd = -1;
        }
    }
    if (s.open) n.sockets_closed++;
    if (s.lay) s.lay->closed.store(1, std::memory_order_release);
    s.closing = true;
    s.held = zsock::hold::none;
    // Resolved but never sent: nobody waits for them now. (Those still in
    // an ARP queue come back through arp_released and are dropped there.)
    for (const auto& r : s.arp_ready) {
        s.inflight[r.buf] = 0;
        s.inflight_n--;
    }
    s.arp_ready.clear();
}

// Returns true when the slot could be freed.
bool service::impl::destroy(zsock& s, bool force) noexcept {
    if (!s.closing) close_sock(s);
    if (s.inflight_n && !force) return false;
    if (close_pool(s, force) == -EBUSY) return false;
    if (s.shm) ::munmap(s.shm, s.shm_size);
    if (s.shm_fd >= 0) ::close(s.shm_fd);
    s.shm = nullptr;
    s.rxmem = nullptr;
    s.shm_fd = -1;
    return true;
}

void service::impl::reap_closed() noexcept {
    for (auto& s : socks)
        if (s && s->closing && destroy(*s, false)) s.reset();
}

// The shared region (header, then the four rings) in a memfd the
// application maps.
int service::impl::map_shm(zsock& s, uint32_t tx, uint32_t rx, uint32_t ent) noexcept {
    uint64_t off = sizeof(shm_layout);
    const uint64_t tx_off = off;
    off += ring_bytes<tx_desc>(ent);
    const uint64_t cq_off = off;
    off += ring_bytes<cq_desc>(ent);
    const uint64_t rx_off = off;
    off += ring_bytes<rx_desc>(ent);
    const uint64_t fr_off = off;
    off += ring_bytes<fr_desc>(ent);
    size_t size = (size_t(off) + hv::page_size - 1) & ~(hv::page_size - 1);
    // Shared with the application: nobody may change its size (we would
    // take SIGBUS) or its seals.
    int mfd = ::memfd_create("zc-socket", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0) return -errno;
    if (::ftruncate(mfd, off_t(size)) < 0 ||
        ::fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        ::close(mfd);
        return -ENOMEM;
    }
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (m == MAP_FAILED) {
        ::close(mfd);
        return -ENOMEM;
    }
    s.shm_fd = mfd;
    s.shm = m;
    s.shm_size = size;
    s.lay = new (m) shm_layout{};
    shm_layout& L = *s.lay;
    L.magic = shm_magic;
    L.version = proto_version;
    L.entries = ent;
    L.tx_bufs = tx;
    L.rx_bufs = rx;
    L.tx_off = tx_off;
    L.cq_off = cq_off;
    L.rx_off = rx_off;
    L.fr_off = fr_off;
    L.size = off;
    s.tx.attach(m, tx_off, ent);
    s.cq.attach(m, cq_off, ent);
    s.rx.attach(m, rx_off, ent);
    s.fr.attach(m, fr_off, ent);
    return 0;
}

int service::impl::do_open(zsock& s, const ctl_req& rq) noexcept {
    if (s.open) return -EINVAL;
    uint32_t tx = rq.tx_bufs, rx = rq.rx_bufs, ent = rq.entries;
    if (tx < 2 || tx > 4096 || tx % 2 || rx < 2 || rx > 4096 || rx % 2 || ent < 8 || ent > 4096 ||
        (ent & (ent - 1)))
        return -EINVAL;
    const uint32_t pages = (tx + rx) * buf_size / uint32_t(hv::page_size); // all granted
    uint64_t held = 0;
    if (int rc = check_limits(s, pages, &held); rc < 0) {
        n.app_limits++;
        log_refused(s, tx, rx, rc, held);
        return rc;
    }
    if (!copy_pool && pool_pages + pages > opt.max_pool_pages) {
        log_refused(s, tx, rx, -ENOSPC, held);
        return -ENOSPC;
    }
    if (int rc = map_shm(s, tx, rx, ent); rc < 0) return rc;
    // The send and the receive buffers, in memory that can be handed to the
    // application without anything else (stackd_pool.cpp): granted to the
    // backend, which copies from them (a received buffer can be sent on:
    // uapi/README.md, "Pools"), or (copy mode) ours, copied from. We copy
    // received payloads into the receive buffers.
    s.rx_bytes = size_t{rx} * buf_size;
    if (int e = open_pool(s, tx * buf_size / uint32_t(hv::page_size), rx * buf_size / uint32_t(hv::page_size));
        e < 0) {
        const int rc = e == -ENOSPC ? -ENOSPC : -ENOMEM;
        log_refused(s, tx, rx, rc, held);
        return rc;
    }
    if (!copy_pool) pool_pages += pages;
    s.tx_bufs = tx;
    s.rx_bufs = rx;
    s.entries = ent;
    s.inflight.assign(tx + rx, 0);
    s.sent.assign(tx + rx, tx_desc{});
    s.arp_ready.clear();
    s.arp_ready.reserve(tx + rx);
    s.rx_given.assign(rx, zsock::rx_ours);
    s.rx_free.clear();
    for (uint32_t i = rx; i-- > 0;) s.rx_free.push_back(i);
    s.notify = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s.kick = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s.notify < 0 || s.kick < 0) return -EMFILE;
    epoll_add(s.kick, ev_key(ev_kick, s.slot));
    s.open = true;
    n.sockets_opened++;
    return 0;
}

int service::impl::do_bind(zsock& s, uint32_t ip, uint16_t port, bool implicit) noexcept {
    if (!s.open) return -EINVAL;
    if (s.port) return implicit ? 0 : -EINVAL;
    if (ip && ip != htonl(opt.ip)) return -EADDRNOTAVAIL;
    if (!port) {
        for (uint32_t tries = 0; tries < 16384; tries++) {
            uint16_t p = htons(next_ephemeral);
            next_ephemeral = uint16_t(next_ephemeral == 65535 ? 49152 : next_ephemeral + 1);
            if (ports[p] == no_slot) {
                port = p;
                break;
            }
        }
        if (!port) return -EADDRINUSE;
    } else if (ports[port] != no_slot) {
        return -EADDRINUSE;
    }
    ports[port] = s.slot;
    s.port = port;
    s.ip = ip;
    return 0;
}

// OPEN: the region, pool, notify and kick descriptors go back with the
// response. Returns false when the connection was closed (a failed open
// ends it: nothing else can follow).
bool service::impl::answer_open(zsock& s, ctl_rsp& r, const ctl_req& rq) noexcept {
    r.rc = do_open(s, rq);
    if (r.rc < 0) {
        (void)send_rsp(s.ctl, r, nullptr, 0);
        close_sock(s);
        return false;
    }
    hv::gntshr::exported_fd ex{};
    int rxfd = -1;
    if (int rc = export_pool(s, ex, rxfd); rc < 0) {
        r.rc = rc;
        (void)send_rsp(s.ctl, r, nullptr, 0);
        close_sock(s);
        return false;
    }
    r.shm_size = s.shm_size;
    r.pool_off = ex.offset;
    r.pool_size = size_t{s.tx_bufs} * buf_size + s.rx_bytes;
    int fds[ctl_nfds];
    fds[fd_shm] = s.shm_fd;
    fds[fd_pool] = ex.fd;
    fds[fd_rx] = rxfd;
    fds[fd_notify] = s.notify;
    fds[fd_kick] = s.kick;
    (void)send_rsp(s.ctl, r, fds, ctl_nfds);
    ::close(ex.fd);
    ::close(rxfd);
    return true;
}

// STATS: the response header, then the counters (zc-stackd stats).
void service::impl::answer_stats(zsock& s, const ctl_rsp& r) noexcept {
    struct {
        ctl_rsp h;
        counters c;
    } m{r, n};
    m.h.rc = int32_t(sizeof m.c);
    (void)fdpass::send(s.ctl, &m, sizeof m, nullptr, 0, MSG_DONTWAIT);
}

// SOCKET_STATS: the response header (rc: how many), then one socket_stat
// per open socket, in one message.
void service::impl::answer_socket_stats(zsock& s, ctl_rsp r) noexcept {
    std::vector<uint8_t> m(sizeof r);
    uint32_t k = 0;
    for (auto& sp : socks) {
        if (!sp || !sp->open || sp->closing) continue;
        socket_stat e{};
        e.slot = sp->slot;
        e.pid = int32_t(sp->pid);
        e.ip = sp->ip;
        e.port = sp->port;
        e.tx_bufs = sp->tx_bufs;
        e.rx_bufs = sp->rx_bufs;
        e.c = sp->st;
        m.resize(m.size() + sizeof e);
        std::memcpy(m.data() + sizeof r + size_t{k} * sizeof e, &e, sizeof e);
        ++k;
    }
    r.rc = int32_t(k);
    std::memcpy(m.data(), &r, sizeof r);
    (void)fdpass::send(s.ctl, m.data(), m.size(), nullptr, 0, MSG_DONTWAIT);
}

// One well-formed request. Returns false when the connection was closed.
bool service::impl::answer(zsock& s, const ctl_req& rq) noexcept {
    ctl_rsp r{};
    r.version = proto_version;
    switch (op(rq.op)) {
    case op::open: return answer_open(s, r, rq);
    case op::bind:
        r.rc = do_bind(s, rq.ip, rq.port, false);
        r.ip = s.ip;
        r.port = s.port;
        break;
    case op::connect:
        r.rc = !s.open || !rq.ip || !rq.port ? -EINVAL : do_bind(s, 0, 0, true);
        if (r.rc >= 0) {
            s.peer_ip = rq.ip;
            s.peer_port = rq.port;
        }
        // The local address the peer sees (getsockname(2) of a connected
        // UDP socket names the source address, not INADDR_ANY: 127.0.0.1
        // for a peer on 127.0.0.0/8).
        r.ip = r.rc >= 0 ? source_for(s, rq.ip) : s.ip;
        r.port = s.port;
        break;
    case op::stats: answer_stats(s, r); return true;
    case op::socket_stats: answer_socket_stats(s, r); return true;
    case op::ping:
        r.rc = start_ping(s, rq);
        if (r.rc >= 0) return true; // answered by the echo reply or the timeout
        break;
    default: r.rc = -EINVAL;
    }
    (void)send_rsp(s.ctl, r, nullptr, 0);
    return true;
}

// Every request waiting on the connection; closes it at EOF or on an error.
void service::impl::handle_ctl(zsock& s) noexcept {
    for (;;) {
        ctl_req rq{};
        // Nobody passes us descriptors: fdpass::recv closes any that came.
        long len = fdpass::recv(s.ctl, &rq, sizeof rq, nullptr, nullptr, MSG_DONTWAIT);
        if (len == -EAGAIN) return;
        // -EMSGSIZE: longer than a request, or more descriptors than fit.
        // The message is gone either way; it is answered as a malformed one.
        if (len <= 0 && len != -EMSGSIZE) {
            close_sock(s);
            return;
        }
        if (len != long(sizeof rq) || rq.version != proto_version) {
            (void)send_rc(s.ctl, -EPROTO);
            continue;
        }
        if (!answer(s, rq)) return;
    }
}

int service::impl::start_ping(zsock& s, const ctl_req& rq) noexcept {
    if (s.ping || !rq.ip || rq.timeout_ms <= 0) return -EINVAL;
    proto::ipv4_addr dst{ntohl(rq.ip)};
    // Off the subnet with no --gateway: no route, answered at once as
    // ping(8) reports connect()'s ENETUNREACH (host::next_hop()).
    if (host->next_hop(dst).is_zero()) return -ENETUNREACH;
    auto r = host->resolve(dst, uint64_t(mono_ms()), nullptr);
    if (r.send_request) send_arp_request(r.target);
    s.ping = true;
    s.ping_ip = rq.ip;
    s.ping_id = ping_id++;
    s.ping_seq = 1;
    s.ping_t0 = uint64_t(mono_us());
    s.ping_deadline = uint64_t(mono_ms()) + uint64_t(rq.timeout_ms);
    s.ping_sent = false;
    if (r.st == proto::arp_cache::status::resolved) send_echo(s, r.mac);
    return 0;
}

} // namespace zc::stackd
