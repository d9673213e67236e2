// SPDX-License-Identifier: MIT
#include "stackd/stackd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <new>
#include <span>
#include <unordered_map>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

extern "C" {
#include <xen/io/netif.h>
}

#include "common/log.hpp"
#include "proto/checksum.hpp"
#include "proto/ether.hpp"
#include "proto/host.hpp"
#include "proto/icmp.hpp"
#include "proto/ipv4.hpp"
#include "shm.hpp"

namespace zc::stackd {

using namespace zc::uapi;

namespace {

constexpr const char* tag = "stackd";

uint64_t now_ms() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}
// Counters in shared memory have one writer (us): a relaxed load and store,
// no locked read-modify-write per packet.
void bump(std::atomic<uint64_t>& c, uint64_t v) noexcept {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

uint64_t now_us() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

// epoll data: kind in the top byte, socket slot below.
enum : uint64_t { ev_listen = 1, ev_nf = 2, ev_nf_ctl = 3, ev_ctl = 4, ev_kick = 5 };
uint64_t ev_key(uint64_t kind, uint32_t slot) noexcept { return kind << 56 | slot; }

// Cookies for netfront TX and for ARP waiters: socket slot, its
// generation (a completion for a closed socket's slot reused since must not
// touch the new one) and the buffer index.
uint64_t cookie_of(uint32_t slot, uint32_t gen, uint32_t buf) noexcept {
    return uint64_t(slot) << 48 | uint64_t(gen & 0xffff) << 32 | buf;
}

int send_rsp(int fd, const ctl_rsp& r, const int* fds, int nfds) noexcept {
    iovec iov{const_cast<ctl_rsp*>(&r), sizeof r};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * ctl_nfds)];
    if (nfds > 0) {
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * size_t(nfds));
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * size_t(nfds));
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * size_t(nfds));
    }
    return ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) == ssize_t(sizeof r) ? 0 : -errno;
}

struct zsock {
    uint32_t slot = 0, gen = 0;
    bool open = false;     // OPEN done: rings and pool exist
    bool closing = false;  // the application went away; waiting for in-flight sends
    int ctl = -1, notify = -1, kick = -1, shm_fd = -1;
    void* shm = nullptr;
    size_t shm_size = 0;
    shm_layout* lay = nullptr;
    hv::shared_pages pool;
    uint8_t* mem = nullptr; // pool.addr
    uint32_t tx_bufs = 0, rx_bufs = 0, entries = 0;
    uapi::ring<tx_desc> tx;
    uapi::ring<cq_desc> cq;
    uapi::ring<rx_desc> rx;
    uapi::ring<fr_desc> fr;
    uint32_t tx_cons = 0, cq_prod = 0, rx_prod = 0, fr_cons = 0;
    uint32_t cq_reserved = 0;        // TX entries taken whose completion is not yet written
    std::vector<uint8_t> inflight;   // per TX buffer
    std::vector<tx_desc> sent;       // per TX buffer: the entry in flight (for its completion)
    std::vector<uint8_t> rx_given;   // per RX buffer: handed to the application
    std::vector<uint32_t> rx_free;   // RX buffers we own
    uint32_t inflight_n = 0;
    bool dirty = false;              // notify the application at the end of the iteration
    // Addressing.
    uint32_t ip = 0;     // bound address (network order; 0 = any)
    uint16_t port = 0;   // bound port (network order; 0 = unbound)
    // A TX entry taken from the ring but not yet submitted: waiting for ARP,
    // or for room in netfront. Nothing behind it is taken meanwhile.
    enum class hold : uint8_t { none, arp, retry } held = hold::none;
    tx_desc held_desc{};
    uint64_t arp_deadline = 0;
    // A ping request on this connection.
    bool ping = false;
    uint32_t ping_ip = 0;
    uint16_t ping_id = 0, ping_seq = 0;
    uint64_t ping_t0 = 0, ping_deadline = 0;
    bool ping_sent = false;
};

} // namespace

struct service::impl {
    hv::port* port = nullptr;
    options opt;
    std::unique_ptr<link::netfront> nf;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<proto::host> host;
    int ep = -1, lfd = -1;
    std::vector<std::unique_ptr<zsock>> socks; // by slot
    // Bound port (network order) -> socket slot; no_slot when free. A flat
    // table: one load per received datagram.
    static constexpr uint32_t no_slot = ~0u;
    std::vector<uint32_t> ports = std::vector<uint32_t>(65536, no_slot);
    uint32_t pool_pages = 0;
    uint16_t next_ephemeral = 49152;
    uint16_t ping_id = 0x5a00;
    counters n;                        // the loop's own
    mutable std::mutex published_lock; // protects published
    counters published;                // n as of the end of the last iteration, for stats()
    uint8_t reply[2048];

    ~impl() {
        for (auto& s : socks)
            if (s) destroy(*s, true);
        if (lfd >= 0) {
            ::close(lfd);
            ::unlink(opt.listen.c_str());
        }
        if (ep >= 0) ::close(ep);
        if (nf) nf->disconnect();
    }

    // ---- sockets ---------------------------------------------------------------

    void epoll_add(int fd, uint64_t key) noexcept {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.u64 = key;
        (void)::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    }

    zsock* slot_alloc() noexcept {
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
    uint32_t next_gen = 1;

    void accept_one() noexcept {
        int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return;
        zsock* s = slot_alloc();
        if (!s) {
            ZC_LOG(warn, tag, "too many connections (%u)", opt.max_sockets);
            ::close(fd);
            return;
        }
        s->ctl = fd;
        epoll_add(fd, ev_key(ev_ctl, s->slot));
    }

    // The application is gone (or we shut down): stop serving the socket;
    // its pool lives on until no send is in flight (the backend may still
    // copy from it), then its grants end.
    void close_sock(zsock& s) noexcept {
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
    }

    // Returns true when the slot could be freed.
    bool destroy(zsock& s, bool force) noexcept {
        if (!s.closing) close_sock(s);
        if (s.inflight_n && !force) return false;
        if (s.pool.addr) {
            uint32_t pages = s.pool.count; // unshare() clears s.pool
            int rc = shr->unshare(s.pool);
            if (rc == -EBUSY && !force) return false;
            if (rc == 0) pool_pages -= pages;
        }
        if (s.shm) ::munmap(s.shm, s.shm_size);
        if (s.shm_fd >= 0) ::close(s.shm_fd);
        s.shm = nullptr;
        s.shm_fd = -1;
        return true;
    }

    void reap_closed() noexcept {
        for (auto& s : socks)
            if (s && s->closing && destroy(*s, false)) s.reset();
    }

    int do_open(zsock& s, const ctl_req& rq) noexcept {
        if (s.open) return -EINVAL;
        uint32_t tx = rq.tx_bufs, rx = rq.rx_bufs, ent = rq.entries;
        if (tx < 2 || tx > 4096 || tx % 2 || rx < 2 || rx > 4096 || rx % 2 || ent < 8 || ent > 4096 ||
            (ent & (ent - 1)))
            return -EINVAL;
        uint32_t pages = (tx + rx) * buf_size / uint32_t(hv::page_size);
        if (pool_pages + pages > opt.max_pool_pages) return -ENOSPC;
        // The shared region.
        uint64_t off = sizeof(shm_layout);
        uint64_t tx_off = off;
        off += ring_bytes<tx_desc>(ent);
        uint64_t cq_off = off;
        off += ring_bytes<cq_desc>(ent);
        uint64_t rx_off = off;
        off += ring_bytes<rx_desc>(ent);
        uint64_t fr_off = off;
        off += ring_bytes<fr_desc>(ent);
        size_t size = (size_t(off) + hv::page_size - 1) & ~(hv::page_size - 1);
        int mfd = ::memfd_create("zc-socket", MFD_CLOEXEC);
        if (mfd < 0) return -errno;
        if (::ftruncate(mfd, off_t(size)) < 0) {
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
        // The pool: granted to the backend, which copies from it.
        auto p = shr->share(nf->backend_id(), pages, false);
        if (!p) return p.error() == -ENOSPC ? -ENOSPC : -ENOMEM;
        s.pool = std::move(*p);
        pool_pages += pages;
        s.mem = static_cast<uint8_t*>(s.pool.addr);
        s.tx_bufs = tx;
        s.rx_bufs = rx;
        s.entries = ent;
        s.inflight.assign(tx, 0);
        s.sent.assign(tx, tx_desc{});
        s.rx_given.assign(rx, 0);
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

    int do_bind(zsock& s, uint32_t ip, uint16_t port, bool implicit) noexcept {
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

    void handle_ctl(zsock& s) noexcept {
        for (;;) {
            ctl_req rq{};
            alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
            iovec iov{&rq, sizeof rq};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = cbuf;
            m.msg_controllen = sizeof cbuf;
            ssize_t len = ::recvmsg(s.ctl, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (len < 0 && (errno == EAGAIN || errno == EINTR)) return;
            // Nobody passes us fds: close any that came.
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    ::close(fd);
                }
            }
            if (len <= 0) {
                close_sock(s);
                return;
            }
            ctl_rsp r{};
            r.version = proto_version;
            if (len != ssize_t(sizeof rq) || rq.version != proto_version) {
                r.rc = -EPROTO;
                (void)send_rsp(s.ctl, r, nullptr, 0);
                continue;
            }
            switch (op(rq.op)) {
            case op::open: {
                r.rc = do_open(s, rq);
                if (r.rc < 0) {
                    (void)send_rsp(s.ctl, r, nullptr, 0);
                    close_sock(s); // nothing else can follow a failed open
                    return;
                }
                auto ex = shr->export_fd(s.pool);
                if (!ex) {
                    r.rc = ex.error();
                    (void)send_rsp(s.ctl, r, nullptr, 0);
                    close_sock(s);
                    return;
                }
                r.shm_size = s.shm_size;
                r.pool_off = ex->offset;
                r.pool_size = size_t{s.pool.count} * hv::page_size;
                int fds[ctl_nfds];
                fds[fd_shm] = s.shm_fd;
                fds[fd_pool] = ex->fd;
                fds[fd_notify] = s.notify;
                fds[fd_kick] = s.kick;
                (void)send_rsp(s.ctl, r, fds, ctl_nfds);
                ::close(ex->fd);
                break;
            }
            case op::bind:
                r.rc = do_bind(s, rq.ip, rq.port, false);
                r.ip = s.ip;
                r.port = s.port;
                (void)send_rsp(s.ctl, r, nullptr, 0);
                break;
            case op::connect:
                r.rc = s.open ? do_bind(s, 0, 0, true) : -EINVAL;
                r.ip = s.ip;
                r.port = s.port;
                (void)send_rsp(s.ctl, r, nullptr, 0);
                break;
            case op::stats: {
                struct {
                    ctl_rsp h;
                    counters c;
                } m{r, n};
                m.h.rc = int32_t(sizeof m.c);
                (void)::send(s.ctl, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
                break;
            }
            case op::ping:
                r.rc = start_ping(s, rq);
                if (r.rc < 0) (void)send_rsp(s.ctl, r, nullptr, 0);
                break;
            default:
                r.rc = -EINVAL;
                (void)send_rsp(s.ctl, r, nullptr, 0);
            }
        }
    }

    // ---- transmit -------------------------------------------------------------------

    void complete(zsock& s, const tx_desc& d, int32_t res) noexcept {
        if (s.cq_reserved) s.cq_reserved--;
        if (res < 0) {
            n.tx_errors++;
            if (s.lay) bump(s.lay->stats.tx_errors, 1);
        }
        if (s.closing) return;
        cq_desc c{d.user_data, res, d.buf | ((d.flags & tx_f_copied) ? cq_buf_copied : 0)};
        s.cq.write(s.cq_prod++, c);
        s.cq.publish(s.cq_prod);
        s.dirty = true;
    }

    // Headers into the buffer's headroom, then the page's grant into a
    // netfront TX slot. Returns false when netfront is full (retry later).
    bool submit(zsock& s, const tx_desc& d, const proto::mac_addr& dmac) noexcept {
        uint8_t* b = s.mem + size_t{d.buf} * buf_size;
        proto::udp_flow f;
        f.dst_mac = dmac;
        f.dst_ip = proto::ipv4_addr{ntohl(d.dst_ip)};
        f.src_port = ntohs(s.port);
        f.dst_port = ntohs(d.dst_port);
        proto::tx_headers h;
        const proto::tx_csum mode = opt.csum_offload ? proto::tx_csum::offload : proto::tx_csum::full;
        link::tx_offload off{};
        const uint64_t ck = cookie_of(s.slot, s.gen, d.buf);
        if (opt.private_headers && d.len > 0) {
            // Headers in a page of ours (netfront copies the 42 bytes into
            // its TX page), the payload from the application's pool page:
            // two slots, and the application cannot rewrite the headers
            // between here and the backend's copy.
            uint8_t hdr[proto::udp_headroom];
            const uint8_t* pay = b + d.off;
            uint32_t sum = mode == proto::tx_csum::full ? proto::csum_partial(pay, d.len) : 0;
            int rc = host->udp_headers(std::span<uint8_t>(hdr, sizeof hdr), d.len, sum, f, mode, h);
            if (rc < 0) {
                complete(s, d, rc);
                return true;
            }
            size_t at = size_t{d.buf} * buf_size + d.off;
            off.csum_blank = h.csum_blank;
            rc = nf->tx_submit_granted_sg(hdr, sizeof hdr, s.pool.refs[at / hv::page_size],
                                          uint16_t(at % hv::page_size), d.len, ck, 0, &off);
            if (rc == -EAGAIN) return false;
            if (rc != -EOPNOTSUPP) { // no feature-sg: the one-slot path below
                if (rc < 0) {
                    complete(s, d, rc);
                    return true;
                }
                accepted(s, d);
                return true;
            }
        }
        int rc = host->udp_in_headroom(std::span<uint8_t>(b, buf_size), d.off, d.len, f, mode, h);
        if (rc < 0) {
            complete(s, d, rc);
            return true;
        }
        size_t at = size_t{d.buf} * buf_size + h.frame_off;
        uint32_t page = uint32_t(at / hv::page_size);
        off.csum_blank = h.csum_blank;
        rc = nf->tx_submit_granted(s.pool.refs[page], uint16_t(at % hv::page_size), h.frame_len, ck, 0, &off);
        if (rc == -EAGAIN) return false;
        if (rc < 0) {
            complete(s, d, rc);
            return true;
        }
        accepted(s, d);
        return true;
    }

    // netfront took the buffer: it is the stack's until its TX response.
    void accepted(zsock& s, const tx_desc& d) noexcept {
        s.inflight[d.buf] = 1;
        s.inflight_n++;
        n.tx_zc++;
        s.sent[d.buf] = d;
    }

    // Returns false when the entry is held (ARP pending, or netfront full).
    bool send_one(zsock& s, const tx_desc& d) noexcept {
        proto::ipv4_addr dst{ntohl(d.dst_ip)};
        uint64_t ck = cookie_of(s.slot, s.gen, d.buf);
        auto r = host->resolve(dst, now, &ck);
        if (r.send_request) send_arp_request(r.target);
        switch (r.st) {
        case proto::arp_cache::status::resolved:
            if (submit(s, d, r.mac)) return true;
            s.held = zsock::hold::retry;
            s.held_desc = d;
            return false;
        case proto::arp_cache::status::pending:
            s.held = zsock::hold::arp;
            s.held_desc = d;
            s.arp_deadline = now + 5000;
            return false;
        case proto::arp_cache::status::unknown: complete(s, d, -ENETUNREACH); return true;
        default: complete(s, d, -ENOBUFS); return true;
        }
    }

    void send_arp_request(proto::ipv4_addr target) noexcept {
        uint8_t f[64] = {};
        size_t len = host->build_arp_request(target, std::span<uint8_t>(f, sizeof f));
        if (len) (void)nf->send(f, std::max<size_t>(len, 60));
    }

    void drain_tx(zsock& s) noexcept {
        if (!s.open || s.closing || s.held == zsock::hold::arp) return;
        if (s.held == zsock::hold::retry) {
            s.held = zsock::hold::none;
            if (!send_one(s, s.held_desc)) return;
        }
        uint32_t avail = s.tx.avail(s.tx_cons);
        if (avail && !s.port) (void)do_bind(s, 0, 0, true); // sendto on an unbound socket, as UDP does
        if (avail > s.entries) avail = 0; // a producer index we cannot believe: ignore until sane
        while (avail) {
            // Room for the completion must exist before we take the entry.
            if (s.cq.free_slots(s.cq_prod) <= s.cq_reserved) break;
            tx_desc d = s.tx.read(s.tx_cons);
            bool bad = d.buf >= s.tx_bufs || d.off < hdr_len || d.len > max_payload ||
                       size_t{d.off} + d.len > buf_size || d.dst_ip == 0 || d.dst_port == 0 || !s.port;
            if (!bad && s.inflight[d.buf]) bad = true; // sent again before its completion
            s.tx_cons++;
            avail--;
            s.cq_reserved++;
            if (bad) {
                n.tx_bad_desc++;
                complete(s, d, d.buf < s.tx_bufs && s.inflight[d.buf] ? -EBUSY : -EINVAL);
                continue;
            }
            if (!send_one(s, d)) break; // held
        }
        s.tx.release(s.tx_cons);
    }

    void reap_tx() noexcept {
        link::tx_done buf[64];
        for (;;) {
            uint32_t k = nf->tx_reap_granted(buf, 64);
            for (uint32_t i = 0; i < k; i++) {
                // A slot is reused only once nothing of it is in flight, so
                // the socket is there; the checks guard against our own bugs.
                uint32_t slot = uint32_t(buf[i].cookie >> 48), b = uint32_t(buf[i].cookie & 0xffffffffu);
                if (slot >= socks.size() || !socks[slot]) continue;
                zsock& s = *socks[slot];
                if ((s.gen & 0xffff) != ((buf[i].cookie >> 32) & 0xffff) || b >= s.tx_bufs || !s.inflight[b])
                    continue;
                const tx_desc d = s.sent[b];
                s.inflight[d.buf] = 0;
                s.inflight_n--;
                complete(s, d, buf[i].status == NETIF_RSP_OKAY ? int32_t(d.len) : -EIO);
            }
            if (k < 64) break;
        }
    }

    // ARP answered (or failed) for waiters: the cookies name sockets.
    void arp_released(std::span<const uint64_t> cookies, const proto::mac_addr* mac) noexcept {
        for (uint64_t ck : cookies) {
            uint32_t slot = uint32_t(ck >> 48);
            if (slot >= socks.size() || !socks[slot]) continue;
            zsock& s = *socks[slot];
            if ((s.gen & 0xffff) != ((ck >> 32) & 0xffff) || s.held != zsock::hold::arp) continue;
            s.held = zsock::hold::none;
            if (!mac) complete(s, s.held_desc, -ENETUNREACH);
            else if (!submit(s, s.held_desc, *mac)) s.held = zsock::hold::retry; // netfront full
        }
    }

    void timers() noexcept {
        uint64_t t = now_ms();
        proto::arp_cache::event ev;
        while (host->arp_expire(t, ev)) {
            if (ev.what == proto::arp_cache::event::kind::retry) send_arp_request(ev.ip);
            else arp_released(ev.waiters, nullptr);
        }
        for (auto& sp : socks) {
            if (!sp) continue;
            zsock& s = *sp;
            if (s.held == zsock::hold::arp && t > s.arp_deadline) {
                s.held = zsock::hold::none;
                complete(s, s.held_desc, -ENETUNREACH);
            }
            if (s.ping && t > s.ping_deadline) {
                s.ping = false;
                ctl_rsp r{};
                r.version = proto_version;
                r.rc = -ETIMEDOUT;
                (void)send_rsp(s.ctl, r, nullptr, 0);
            }
        }
    }

    // ---- ping -----------------------------------------------------------------------------

    int start_ping(zsock& s, const ctl_req& rq) noexcept {
        if (s.ping || !rq.ip || rq.timeout_ms <= 0) return -EINVAL;
        proto::ipv4_addr dst{ntohl(rq.ip)};
        auto r = host->resolve(dst, now_ms(), nullptr);
        if (r.send_request) send_arp_request(r.target);
        s.ping = true;
        s.ping_ip = rq.ip;
        s.ping_id = ping_id++;
        s.ping_seq = 1;
        s.ping_t0 = now_us();
        s.ping_deadline = now_ms() + uint64_t(rq.timeout_ms);
        s.ping_sent = false;
        if (r.st == proto::arp_cache::status::resolved) send_echo(s, r.mac);
        return 0;
    }

    void send_echo(zsock& s, const proto::mac_addr& mac) noexcept {
        uint8_t f[14 + 20 + 8 + 56] = {};
        const size_t icmp_len = 8 + 56;
        proto::write_eth(std::span<uint8_t>(f, 14), mac, host->config().mac, proto::ethertype::ipv4);
        proto::ipv4_params ip;
        ip.src = host->config().ip;
        ip.dst = proto::ipv4_addr{ntohl(s.ping_ip)};
        ip.proto = proto::ip_proto::icmp;
        ip.payload_len = uint16_t(icmp_len);
        ip.id = s.ping_id;
        proto::write_ipv4(std::span<uint8_t>(f + 14, 20), ip);
        uint8_t* ic = f + 34;
        ic[0] = proto::icmp_type::echo_request;
        ic[1] = 0;
        ic[4] = uint8_t(s.ping_id >> 8), ic[5] = uint8_t(s.ping_id);
        ic[6] = uint8_t(s.ping_seq >> 8), ic[7] = uint8_t(s.ping_seq);
        for (size_t i = 8; i < icmp_len; i++) ic[i] = uint8_t(i);
        uint16_t cs = proto::internet_checksum(ic, icmp_len); // host order (checksum.hpp)
        ic[2] = uint8_t(cs >> 8), ic[3] = uint8_t(cs);
        s.ping_t0 = now_us();
        if (nf->send(f, sizeof f) == 0) {
            s.ping_sent = true;
            n.pings_sent++;
        }
    }

    void pings_resolve() noexcept {
        for (auto& sp : socks) {
            if (!sp || !sp->ping || sp->ping_sent) continue;
            auto r = host->arp().lookup(proto::ipv4_addr{ntohl(sp->ping_ip)}, now_ms());
            if (r.st == proto::arp_cache::status::resolved) send_echo(*sp, r.mac);
        }
    }

    // An echo reply (the host ignores those: it only answers requests).
    void maybe_echo_reply(const uint8_t* f, size_t len) noexcept {
        proto::eth_view e;
        if (proto::parse_eth(std::span<const uint8_t>(f, len), e) != proto::eth_error::none ||
            e.type != proto::ethertype::ipv4)
            return;
        proto::ipv4_view ip;
        auto l3 = std::span<const uint8_t>(f + e.hdr_len, len - e.hdr_len);
        if (proto::parse_ipv4(l3, ip) != proto::ipv4_error::none || ip.proto != proto::ip_proto::icmp) return;
        const uint8_t* ic = l3.data() + ip.hdr_len;
        if (ip.payload_len() < 8 || ic[0] != proto::icmp_type::echo_reply || ic[1] != 0) return;
        if (!proto::csum_verify(ic, ip.payload_len())) return;
        uint16_t id = uint16_t(ic[4] << 8 | ic[5]), seq = uint16_t(ic[6] << 8 | ic[7]);
        for (auto& sp : socks) {
            if (!sp || !sp->ping || sp->ping_id != id || sp->ping_seq != seq ||
                htonl(ip.src.v) != sp->ping_ip)
                continue;
            sp->ping = false;
            n.pings_answered++;
            ctl_rsp r{};
            r.version = proto_version;
            r.rc = int32_t(std::min<uint64_t>(now_us() - sp->ping_t0, 0x7fffffff));
            (void)send_rsp(sp->ctl, r, nullptr, 0);
        }
    }

    // ---- receive -----------------------------------------------------------------------------

    // recv_view fills rx_info before it calls back.
    struct rx_ctx {
        impl* self;
        const link::rx_info* info;
    };

    static void on_frame(const uint8_t* f, size_t len, void* arg) noexcept {
        auto* c = static_cast<rx_ctx*>(arg);
        c->self->rx_frame(f, len, c->info->flags);
    }

    void rx_frame(const uint8_t* f, size_t len, uint16_t flags) noexcept {
        n.rx_frames++;
        auto v = host->receive(std::span<const uint8_t>(f, len), proto::rx_csum_from_netrxf(flags),
                               std::span<uint8_t>(reply, sizeof reply), now);
        switch (v.action) {
        case proto::rx_action::reply:
            if (v.reply_len >= 14) {
                // ARP replies go out padded to the Ethernet minimum.
                size_t l = std::max<size_t>(v.reply_len, 60);
                if (l > v.reply_len) std::memset(reply + v.reply_len, 0, l - v.reply_len);
                (void)nf->send(reply, l);
                if (f[12] == 0x08 && f[13] == 0x06) n.arp_replies++;
                else n.echo_replies++;
            }
            if (!v.released.empty()) arp_released(v.released, &v.released_mac);
            break;
        case proto::rx_action::consumed:
            if (!v.released.empty()) arp_released(v.released, &v.released_mac);
            pings_resolve();
            break;
        case proto::rx_action::udp: deliver(f, v.udp); break;
        case proto::rx_action::drop:
            if (v.reason == proto::drop_reason::icmp_ignored) maybe_echo_reply(f, len);
            break;
        }
    }

    void deliver(const uint8_t* f, const proto::udp_delivery& u) noexcept {
        uint32_t slot = ports[htons(u.dst_port)];
        if (slot == no_slot) {
            n.rx_no_socket++;
            return;
        }
        zsock& s = *socks[slot];
        if (s.closing || !s.open) return;
        if (s.ip && s.ip != htonl(u.dst_ip.v)) {
            n.rx_no_socket++;
            return;
        }
        if (s.rx_free.empty() || s.rx.free_slots(s.rx_prod) == 0 || u.payload_len > buf_size - headroom) {
            n.rx_drops++;
            bump(s.lay->stats.rx_drops, 1);
            return;
        }
        uint32_t b = s.rx_free.back();
        s.rx_free.pop_back();
        s.rx_given[b] = 1;
        // The one local copy of a receive: netfront RX page -> the socket's pool.
        std::memcpy(s.mem + size_t{s.tx_bufs + b} * buf_size + headroom, f + u.payload_off, u.payload_len);
        rx_desc d{};
        d.buf = b;
        d.off = uint16_t(headroom);
        d.len = uint16_t(u.payload_len);
        d.src_ip = htonl(u.src_ip.v);
        d.src_port = htons(u.src_port);
        s.rx.write(s.rx_prod++, d);
        s.rx.publish(s.rx_prod);
        s.dirty = true;
        n.rx_udp++;
        bump(s.lay->stats.rx_packets, 1);
        bump(s.lay->stats.rx_bytes, u.payload_len);
    }

    void drain_fr(zsock& s) noexcept {
        if (!s.open || s.closing) return;
        uint32_t avail = s.fr.avail(s.fr_cons);
        if (avail > s.entries) avail = 0;
        while (avail--) {
            fr_desc d = s.fr.read(s.fr_cons++);
            if (d.buf >= s.rx_bufs || !s.rx_given[d.buf]) {
                n.fr_bad++;
                continue;
            }
            s.rx_given[d.buf] = 0;
            s.rx_free.push_back(d.buf);
        }
        s.fr.release(s.fr_cons);
    }

    void rx_all() noexcept {
        for (int i = 0; i < 512; i++) {
            link::rx_info info;
            rx_ctx c{this, &info};
            auto r = nf->recv_view(&impl::on_frame, &c, 0, &info);
            if (!r) break;
        }
    }

    // ---- the loop ---------------------------------------------------------------------------

    // The clock, read once per loop iteration (the ARP cache takes time as
    // an argument so that the data path makes no system call for it).
    uint64_t now = 0;

    int step(int timeout_ms) noexcept {
        epoll_event evs[64];
        int k = ::epoll_wait(ep, evs, 64, timeout_ms);
        now = now_ms();
        for (int i = 0; i < k; i++) {
            uint64_t kind = evs[i].data.u64 >> 56;
            uint32_t slot = uint32_t(evs[i].data.u64 & 0xffffffff);
            if (kind == ev_listen) accept_one();
            else if (kind == ev_ctl && slot < socks.size() && socks[slot] && socks[slot]->ctl >= 0)
                handle_ctl(*socks[slot]);
            else if (kind == ev_kick && slot < socks.size() && socks[slot] && socks[slot]->kick >= 0) {
                uint64_t v;
                (void)!::read(socks[slot]->kick, &v, sizeof v);
            }
        }
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
        reap_closed();
        for (auto& s : socks) {
            if (s && s->dirty && s->notify >= 0) {
                uint64_t one = 1;
                (void)!::write(s->notify, &one, sizeof one);
            }
            if (s) s->dirty = false;
        }
        std::lock_guard g(published_lock);
        published = n;
        return 0;
    }
};

service::service(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}
service::~service() = default;
link::netfront& service::link() noexcept { return *_p->nf; }
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
    auto m = std::unique_ptr<impl>(new (std::nothrow) impl);
    if (!m) return err(-ENOMEM);
    m->port = &port;
    m->opt = o;
    m->socks.resize(o.max_sockets);
    auto nf = link::netfront::connect(port, o.nf, why);
    if (!nf) return err(nf.error());
    m->nf = std::move(*nf);
    auto sh = port.open_gntshr();
    if (!sh) {
        say("gntshr");
        return err(sh.error());
    }
    m->shr = std::move(*sh);
    proto::host_config hc;
    hc.mac = m->nf->mac();
    hc.ip = proto::ipv4_addr{o.ip};
    hc.netmask = proto::ipv4_addr{o.netmask};
    auto h = proto::host::create(hc);
    if (!h) {
        say("proto::host::create");
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
