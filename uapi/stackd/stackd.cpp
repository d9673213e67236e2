// SPDX-License-Identifier: MIT
// zc-stackd, the service: creating it (netfront, grant sharing, proto host,
// the listening socket), its event loop and its end. The work of an
// iteration is in stackd_ctl.cpp, stackd_tx.cpp and stackd_rx.cpp.
#include "stackd/stackd.hpp"

#include <cerrno>
#include <cstring>
#include <new>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

service::impl::~impl() {
    for (auto& s : socks)
        if (s) destroy(*s, true);
    if (lfd >= 0) {
        ::close(lfd);
        ::unlink(opt.listen.c_str());
    }
    if (ep >= 0) ::close(ep);
    if (nf) nf->disconnect();
}

void service::impl::epoll_add(int fd, uint64_t key) noexcept {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = key;
    (void)::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

// One epoll event: a new connection, a request, or a kick (the work a kick
// asks for is done by every iteration anyway).
void service::impl::dispatch(uint64_t key) noexcept {
    uint64_t kind = key >> 56;
    uint32_t slot = uint32_t(key & 0xffffffff);
    if (kind == ev_listen) accept_one();
    else if (kind == ev_ctl && slot < socks.size() && socks[slot] && socks[slot]->ctl >= 0)
        handle_ctl(*socks[slot]);
    else if (kind == ev_kick && slot < socks.size() && socks[slot] && socks[slot]->kick >= 0) {
        uint64_t v;
        (void)!::read(socks[slot]->kick, &v, sizeof v);
    }
}

// Wake the applications whose rings got entries in this iteration; one
// that waits for datagrams only is not woken for completions (shm.hpp,
// rx_only_wait: it finds them when its wait ends).
void service::impl::notify_dirty() noexcept {
    for (auto& s : socks) {
        if (!s) continue;
        if (s->dirty && s->notify >= 0) {
            bool wake = true;
            if (!s->dirty_rx && s->lay) {
                s->lay->cq_wake_skipped.store(1, std::memory_order_seq_cst);
                wake = s->lay->rx_only_wait.load(std::memory_order_seq_cst) == 0;
                if (!wake) n.cq_wakes_skipped++;
            }
            if (wake) {
                n.app_wakes++;
                uint64_t one = 1;
                (void)!::write(s->notify, &one, sizeof one);
            }
        }
        s->dirty = s->dirty_rx = false;
    }
}

// The backend's TX responses only free buffers and complete sends. While
// every socket with sends in flight has its application asleep for
// datagrams only (shm.hpp, rx_only_wait), nobody waits for them: they are
// collected at the next pass (a datagram, a kick) instead of costing a
// wake-up of their own, which on a busy host takes a CPU from the
// receiving side. libzcnet kicks when such a wait ends with sends out.
void service::impl::lazy_tx_events() noexcept {
    bool lazy = opt.lazy_tx_events;
    for (auto& s : socks)
        if (lazy && s && s->inflight_n &&
            (s->closing || !s->lay || s->lay->rx_only_wait.load(std::memory_order_seq_cst) == 0))
            lazy = false;
    // A socket waiting for room in netfront (its TX pages or ring: copy
    // mode's sends, stackd_pool.cpp, hold no buffer of the socket's) is
    // waiting for TX responses.
    for (auto& s : socks)
        if (lazy && s && (s->held == zsock::hold::retry || !s->arp_ready.empty())) lazy = false;
    if (nf->tx_lazy_events(lazy)) reap_tx();
}

int service::impl::step(int timeout_ms) noexcept {
    epoll_event evs[64];
    int k = 0;
    // --busy-poll-us: no sleep (and no wake-up) while events come soon
    // and a CPU is idle.
    if (timeout_ms != 0) (void)bp.spin([&] { return (k = ::epoll_wait(ep, evs, 64, 0)) != 0; });
    if (k == 0) k = ::epoll_wait(ep, evs, 64, timeout_ms);
    now = uint64_t(mono_ms());
    for (int i = 0; i < k; i++) dispatch(evs[i].data.u64);
    int rc = nf->process_events();
    if (rc < 0) return rc;
    if (!nf->connected()) return -ENOTCONN;
    reap_tx();
    // Releases first: they are the buffers the deliveries below need
    // (applications do not wake us for them).
    for (auto& s : socks)
        if (s) drain_fr(*s);
    rx_all();
    for (auto& s : socks)
        if (s) drain_tx(*s);
    reap_tx();
    timers();
    direct_sweep();
    reap_closed();
    lazy_tx_events();
    notify_dirty();
    std::lock_guard g(published_lock);
    published = n;
    return 0;
}

service::service(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}
service::~service() = default;
link::netfront& service::link() noexcept { return *_p->nf; }
pool_export service::pool_mode() const noexcept { return _p->copy_pool ? pool_export::copy : pool_export::grant; }
counters service::stats() const noexcept {
    std::lock_guard g(_p->published_lock);
    return _p->published;
}
int service::step(int timeout_ms) noexcept { return _p->step(timeout_ms); }

int service::run(const std::atomic<bool>& stop) noexcept {
    while (!stop.load(std::memory_order_relaxed)) {
        int rc = _p->step(100);
        if (rc < 0) return rc;
    }
    return 0;
}

result<std::unique_ptr<service>> service::create(hv::port& port, const options& o, std::string* why) noexcept {
    auto say = [&](const std::string& s) {
        if (why) *why = s;
    };
    if (o.listen.empty() || !o.ip || o.max_sockets == 0 || o.max_sockets > 65535) {
        say("bad options (need --listen and --ip)");
        return err(-EINVAL);
    }
    if (o.unres_qlen > 1024 || o.arp_retry_ms == 0 || o.arp_requests == 0 || o.arp_requests > 255) {
        say("bad ARP options (--unres-qlen at most 1024; retries 1..255, retry time > 0)");
        return err(-EINVAL);
    }
    if (o.gateway && (o.gateway & o.netmask) != (o.ip & o.netmask)) {
        say("the gateway is not on the subnet of --ip and --netmask");
        return err(-EINVAL);
    }
    auto m = std::unique_ptr<impl>(new (std::nothrow) impl);
    if (!m) return err(-ENOMEM);
    m->port = &port;
    m->opt = o;
    if (o.busy_poll_us > 1000) {
        say("--busy-poll-us is at most 1000");
        return err(-EINVAL);
    }
    m->bp.set_budget_us(o.busy_poll_us);
    m->socks.resize(o.max_sockets);
    if (o.zc_direct && (o.direct_quota == 0 || o.direct_map_pages == 0)) {
        say("bad direct-path options (quota and mapped pages > 0)");
        return err(-EINVAL);
    }
    link::netfront_options nfo = o.nf;
    nfo.zc_direct = o.zc_direct;
    auto nf = link::netfront::connect(port, nfo, why);
    if (!nf) return err(nf.error());
    m->nf = std::move(*nf);
    auto sh = port.open_gntshr();
    if (!sh) {
        say("gntshr");
        return err(sh.error());
    }
    m->shr = std::move(*sh);
    m->choose_pool_mode();
    if (m->nf->zc_direct()) {
        // Receiving on the direct path: senders' pages, mapped read-only.
        auto t = port.open_gnttab();
        if (!t) {
            say("gnttab (the direct path)");
            return err(t.error());
        }
        m->dtab = std::move(*t);
        m->dmaps.reset(new (std::nothrow) direct_maps(*m->dtab, o.direct_map_pages, o.direct_map_idle_ms));
        if (!m->dmaps) return err(-ENOMEM);
        m->dir_releases.reserve(1024);
    }
    proto::host_config hc;
    hc.mac = m->nf->mac();
    hc.ip = proto::ipv4_addr{o.ip};
    hc.netmask = proto::ipv4_addr{o.netmask};
    hc.arp.max_waiters = o.unres_qlen;
    hc.arp.retry_ms = o.arp_retry_ms;
    hc.arp.max_requests = o.arp_requests;
    hc.gateway = proto::ipv4_addr{o.gateway};
    auto h = proto::host::create(hc);
    if (!h) {
        say("proto::host::create (a bad --ip, --netmask or --gateway?)");
        return err(h.error());
    }
    m->host.reset(new (std::nothrow) proto::host(std::move(*h)));
    if (!m->host) return err(-ENOMEM);

    m->ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (m->ep < 0) return err(-errno);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (o.listen.size() >= sizeof a.sun_path) {
        say("listen path too long");
        return err(-ENAMETOOLONG);
    }
    std::strcpy(a.sun_path, o.listen.c_str());
    m->lfd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (m->lfd < 0) return err(-errno);
    ::unlink(o.listen.c_str());
    if (::bind(m->lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(m->lfd, 64) < 0) {
        int e = errno;
        say("bind " + o.listen + ": " + std::strerror(e));
        ::close(m->lfd);
        m->lfd = -1;
        return err(-e);
    }
    m->epoll_add(m->lfd, ev_key(ev_listen, 0));
    for (uint32_t q = 0; q < m->nf->queues(); q++) m->epoll_add(m->nf->event_fd(q), ev_key(ev_nf, q));
    m->epoll_add(m->nf->control_fd(), ev_key(ev_nf_ctl, 0));
    return std::unique_ptr<service>(new service(std::move(m)));
}

} // namespace zc::stackd
