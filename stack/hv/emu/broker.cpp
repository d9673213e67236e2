// SPDX-License-Identifier: MIT
// The emulated hypervisor's control plane. See broker.hpp.
//
// Threading: run() is a single-threaded epoll loop; every piece of broker
// state below is touched only from it (xenstored runs its own thread and is
// thread-safe). request_stop() only writes an eventfd.
#include "hv/emu/broker.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "hv/emu/foreign.hpp"
#include "hv/emu/grant.hpp"
#include "hv/emu/layout.hpp"
#include "hv/emu/proto.hpp"
#include "hv/emu/xenstored.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

namespace {

constexpr const char* tag = "emu-broker";

// Which fds a connection gets of a domain (broker.hpp, "Who gets what").
constexpr uint32_t bit(int fd) { return 1u << fd; }
constexpr uint32_t evtchn_fds = bit(proto::fd_bindings) | bit(proto::fd_bitmaps) | bit(proto::fd_registry);
constexpr uint32_t own_fds = evtchn_fds | bit(proto::fd_mem) | bit(proto::fd_gnttab);
constexpr uint32_t foreign_fds = own_fds | bit(proto::fd_active);

// Every memfd is sealable: the broker seals each one once it has its size.
int make_memfd(const std::string& name, size_t bytes) noexcept {
    int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    if (::ftruncate(fd, off_t(bytes)) < 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    return fd;
}

// Memory several processes map shared: nobody may shrink it (the others
// would take SIGBUS on the cut-off pages) or grow it, nor add seals (a
// F_SEAL_FUTURE_WRITE added by a domain would refuse dom0's writable grant
// mappings). See broker.hpp, "Who gets what".
int seal_size(int fd) noexcept {
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) return -errno;
    return 0;
}

bool same_token(const uint8_t* a, const uint8_t* b) noexcept {
    uint8_t diff = 0; // constant time: no early exit on the first wrong byte
    for (size_t i = 0; i < proto::token_bytes; i++) diff |= uint8_t(a[i] ^ b[i]);
    return diff == 0;
}

int random_token(uint8_t* out) noexcept {
    size_t got = 0;
    while (got < proto::token_bytes) {
        ssize_t n = ::getrandom(out + got, proto::token_bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        got += size_t(n);
    }
    return 0;
}

void* map_fd(int fd, size_t bytes) noexcept {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}

// After the broker has mapped a table writable, seal it so that domains can
// only map it read-only: the binding table and the registry are "hypervisor"
// memory.
void seal_readonly(int fd) noexcept {
    (void)::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

struct domain {
    domid_t id = 0;
    uint32_t generation = 0;
    uint32_t mem_pages = 0;
    uint32_t nr_grefs = 0;
    int fds[proto::n_domain_fds - 1] = {-1, -1, -1, -1, -1}; // mem..bitmaps
    evtchn_binding* bindings = nullptr; // broker's writable view
    evtchn_bitmaps* bitmaps = nullptr;  // to clear a freed port's bits (close_port)
    domain_view grants;                 // gnttab + active only, to release a dead mapper's pins
    std::vector<int> handle_fds;        // index = handle id; -1 = closed
    std::vector<int> conns;             // connections that hold the domain alive
    std::string xs_path;
    uint8_t token[proto::token_bytes] = {}; // attach secret (broker.hpp)
    bool privileged = false;                // may get other domains' memory and tables
    int region_fds[region_slots];           // -1 = unpopulated (layout.hpp, "memory regions")
    uint32_t region_pages = 0;              // populated pages over all regions
    foreign_pins fpins;                     // its pins on other domains' grants (foreign.hpp)
    region_lent lent;                       // which domains hold which of its regions

    domain() noexcept { std::fill(std::begin(region_fds), std::end(region_fds), -1); }
    region_slot* regions() const noexcept {
        return bindings ? reinterpret_cast<region_slot*>(reinterpret_cast<uint8_t*>(bindings) + evtchn_bindings_bytes)
                        : nullptr;
    }

    bool has_handle(uint32_t h) const noexcept { return h != 0 && h < handle_fds.size() && handle_fds[h] >= 0; }

    void close_all() noexcept {
        for (int& fd : fds) {
            if (fd >= 0) ::close(fd);
            fd = -1;
        }
        for (int& fd : handle_fds)
            if (fd >= 0) {
                ::close(fd);
                fd = -1;
            }
        for (int& fd : region_fds)
            if (fd >= 0) {
                ::close(fd);
                fd = -1;
            }
        if (bindings) ::munmap(bindings, bindings_memfd_bytes);
        bindings = nullptr;
        if (bitmaps) ::munmap(bitmaps, sizeof(evtchn_bitmaps));
        bitmaps = nullptr;
        if (grants.gnttab) ::munmap(grants.gnttab, size_t(nr_grefs) * sizeof(grant_entry_v1_t));
        if (grants.active) ::munmap(grants.active, size_t(nr_grefs) * sizeof(active_entry));
        grants = domain_view{};
    }
};

struct conn {
    int fd = -1;
    domid_t dom = domid_invalid; // after hello
    pid_t pid = 0;               // SO_PEERCRED at accept, for the log
};

} // namespace

struct broker::impl {
    broker_options opts;
    std::string sock_path;
    int listen_fd = -1;
    int epoll_fd = -1;
    int stop_fd = -1;
    int registry_fd = -1;
    registry_slot* registry = nullptr;
    uint8_t admin[proto::token_bytes] = {};
    std::string admin_hex;
    std::string token_path; // <dir>/admin.token
    std::unordered_map<int, conn> conns;            // by fd
    std::unordered_map<domid_t, domain> domains;    // live domains
    xenstored xs;
    std::thread thread;
    bool stopped = false;
    bool bound = false; // we own sock_path (never unlink another broker's socket)

    ~impl() { teardown(); }

    int init(std::string* why) noexcept;
    void teardown() noexcept;
    int serve() noexcept;
    void accept_one() noexcept;
    void handle(conn& c) noexcept;
    void drop_conn(int fd) noexcept;
    void destroy_domain(domid_t d) noexcept;
    void reply(int fd, const proto::reply_header& h, const void* text, size_t len,
               const int* fds, int nfds) noexcept;

    int op_hello(conn& c, const proto::request& r, proto::reply_header& h, int* fds, int& nfds, std::string& text) noexcept;
    int op_get_domain(const conn& c, const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept;
    int op_get_evtchn(const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept;
    int op_region_new(domain& me, const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept;
    int op_region_free(domain& me, const proto::request& r) noexcept;
    int op_region_get(const conn& c, const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept;
    int op_grant_pin(domain& me, const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept;
    int op_grant_unpin(domain& me, const proto::request& r) noexcept;
    void describe(const domain& d, uint32_t mask, proto::reply_header& h, int* fds, int& nfds) const noexcept;
    bool is_admin(const proto::request& r) const noexcept { return same_token(r.token, admin); }
    int alloc_port(domain& d) noexcept;
    void close_port(domain& d, evtchn_port_t p) noexcept;
};

namespace {
bool fail(std::string* why, const std::string& msg, int err) {
    if (why) *why = msg + ": " + std::strerror(err);
    return false;
}
} // namespace

int broker::impl::init(std::string* why) noexcept {
    if (opts.dir.empty()) {
        if (why) *why = "broker: no runtime directory";
        return -EINVAL;
    }
    if (::mkdir(opts.dir.c_str(), 0700) < 0 && errno != EEXIST) {
        int e = errno;
        fail(why, "broker: mkdir " + opts.dir, e);
        return -e;
    }
    std::string xs_dir = opts.dir + "/xs";
    if (::mkdir(xs_dir.c_str(), 0700) < 0 && errno != EEXIST) {
        int e = errno;
        fail(why, "broker: mkdir " + xs_dir, e);
        return -e;
    }
    sock_path = opts.dir + "/broker.sock";
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (sock_path.size() >= sizeof sa.sun_path) {
        if (why) *why = "broker: socket path too long: " + sock_path;
        return -ENAMETOOLONG;
    }
    std::memcpy(sa.sun_path, sock_path.c_str(), sock_path.size() + 1);

    listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0) return fail(why, "broker: socket", errno), -errno;
    // A live broker answers connect(); only a stale socket file is replaced.
    int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
        ::close(probe);
        if (live) {
            if (why) *why = "broker: another broker is already serving " + sock_path;
            return -EADDRINUSE;
        }
    }
    ::unlink(sock_path.c_str());
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || ::listen(listen_fd, 64) < 0) {
        int e = errno;
        fail(why, "broker: bind/listen " + sock_path, e);
        return -e;
    }
    bound = true;

    if (int e = random_token(admin); e < 0) return fail(why, "broker: getrandom", -e), e;
    admin_hex = proto::token_hex(admin);
    token_path = opts.dir + "/admin.token";
    ::unlink(token_path.c_str());
    int tfd = ::open(token_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (tfd < 0) return fail(why, "broker: create " + token_path, errno), -errno;
    bool wrote = ::write(tfd, admin_hex.data(), admin_hex.size()) == ssize_t(admin_hex.size());
    ::close(tfd);
    if (!wrote) return fail(why, "broker: write " + token_path, EIO), -EIO;

    registry_fd = make_memfd("zcemu-registry", registry_bytes);
    if (registry_fd < 0) return fail(why, "broker: registry memfd", -registry_fd), registry_fd;
    registry = static_cast<registry_slot*>(map_fd(registry_fd, registry_bytes));
    if (!registry) return fail(why, "broker: mmap registry", errno), -errno;
    seal_readonly(registry_fd);

    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epoll_fd < 0 || stop_fd < 0) return fail(why, "broker: epoll/eventfd", errno), -errno;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.fd = stop_fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, stop_fd, &ev);

    int rc = xs.start();
    if (rc < 0) return fail(why, "broker: xenstored", -rc), rc;
    return 0;
}

void broker::impl::teardown() noexcept {
    if (stopped) return;
    stopped = true;
    std::vector<domid_t> ids;
    for (auto& [id, d] : domains) ids.push_back(id);
    for (domid_t id : ids) destroy_domain(id);
    for (auto& [fd, c] : conns) ::close(fd);
    conns.clear();
    xs.stop();
    if (listen_fd >= 0) ::close(listen_fd);
    if (bound) ::unlink(sock_path.c_str());
    if (!token_path.empty()) ::unlink(token_path.c_str());
    if (epoll_fd >= 0) ::close(epoll_fd);
    if (stop_fd >= 0) ::close(stop_fd);
    if (registry) ::munmap(registry, registry_bytes);
    if (registry_fd >= 0) ::close(registry_fd);
    listen_fd = epoll_fd = stop_fd = registry_fd = -1;
    registry = nullptr;
}

int broker::impl::serve() noexcept {
    if (!opts.quiet) ZC_LOG(info, tag, "serving %s", sock_path.c_str());
    epoll_event evs[32];
    for (;;) {
        int n = ::epoll_wait(epoll_fd, evs, 32, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            ZC_LOG(error, tag, "epoll_wait: %s", std::strerror(errno));
            return -errno;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == stop_fd) {
                if (!opts.quiet) ZC_LOG(info, tag, "stopping");
                return 0;
            }
            if (fd == listen_fd) {
                accept_one();
                continue;
            }
            auto it = conns.find(fd);
            if (it == conns.end()) continue;
            if (evs[i].events & EPOLLIN) handle(it->second);
            else drop_conn(fd);
        }
    }
}

void broker::impl::accept_one() noexcept {
    for (;;) {
        int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        // Only our own user (or root) may talk to the hypervisor at all; the
        // tokens then decide what a connection is (broker.hpp).
        ucred cr{};
        socklen_t crl = sizeof cr;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || (cr.uid != ::geteuid() && cr.uid != 0)) {
            ZC_LOG(warn, tag, "refused a connection from pid %d uid %u: not the broker's user", int(cr.pid),
                   unsigned(cr.uid));
            ::close(fd);
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
        conns[fd] = conn{fd, domid_invalid, cr.pid};
    }
}

void broker::impl::drop_conn(int fd) noexcept {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    domid_t dom = it->second.dom;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(it);
    auto d = domains.find(dom);
    if (d == domains.end()) return;
    auto& v = d->second.conns;
    std::erase(v, fd);
    // A domain lives as long as some process of it is connected.
    if (v.empty()) destroy_domain(dom);
}

void broker::impl::close_port(domain& d, evtchn_port_t p) noexcept {
    evtchn_binding& b = d.bindings[p];
    uint32_t st = b.state.load(std::memory_order_acquire);
    if (st == ecs_interdomain) {
        // As Xen's evtchn_close(): the peer's end falls back to unbound,
        // still naming us as the remote.
        auto r = domains.find(b.remote_dom);
        if (r != domains.end() && b.remote_port < max_evtchn_ports) {
            evtchn_binding& rb = r->second.bindings[b.remote_port];
            if (rb.state.load(std::memory_order_relaxed) == ecs_interdomain && rb.remote_dom == d.id &&
                rb.remote_port == p) {
                rb.remote_port = 0;
                rb.state.store(ecs_unbound, std::memory_order_release);
            }
        }
    }
    b.remote_dom = 0;
    b.remote_port = 0;
    b.handle = 0;
    b.state.store(ecs_free, std::memory_order_release);
    // Xen's free_evtchn(): "Clear pending event to avoid unexpected behavior
    // on re-bind"; and the mask, which a Linux guest's bind clears (its irq
    // startup unmasks), as our own unbind does (evtchn.cpp). Else a port
    // freed with its bit set (a handle closed before it took its event)
    // stays pending for the next binding, whose notifiers then never kick.
    const uint64_t bit = uint64_t(1) << (p % 64);
    d.bitmaps->pending[p / 64].fetch_and(~bit);
    d.bitmaps->mask[p / 64].fetch_and(~bit);
}

void broker::impl::destroy_domain(domid_t id) noexcept {
    auto it = domains.find(id);
    if (it == domains.end()) return;
    domain& d = it->second;
    // New maps and copies of its grants fail from here on (GNTST_bad_domain);
    // existing mappings keep the memfd pages alive, as a dying Xen domain's
    // pages live until every mapping is gone.
    registry[id].state.store(dom_dying, std::memory_order_release);
    for (evtchn_port_t p = 1; p < max_evtchn_ports; p++)
        if (d.bindings[p].state.load(std::memory_order_relaxed) != ecs_free) close_port(d, p);
    for (int fd : d.conns) {
        ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        conns.erase(fd);
    }
    d.conns.clear();
    // Its processes are gone: drop the pins it held on other domains' grants
    // (Xen's gnttab_release_mappings), so those granters can end access.
    uint32_t released = 0;
    for (auto& [gid, g] : domains)
        if (gid != id) {
            released += release_pins_of(g.grants, id);
            g.fpins.forget(id); // its tables go: pins on them are gone with them
        }
    if (released && !opts.quiet) ZC_LOG(info, tag, "domain %u: released %u grant pins", unsigned(id), released);
    xs.remove_domain(id);
    ::unlink(d.xs_path.c_str());
    d.close_all();
    if (!opts.quiet) ZC_LOG(info, tag, "domain %u destroyed", unsigned(id));
    domains.erase(it);
}

int broker::impl::alloc_port(domain& d) noexcept {
    // Port 0 is never handed out (Xen reserves it).
    for (evtchn_port_t p = 1; p < max_evtchn_ports; p++)
        if (d.bindings[p].state.load(std::memory_order_relaxed) == ecs_free) return int(p);
    return -ENOSPC;
}

void broker::impl::reply(int fd, const proto::reply_header& h, const void* text, size_t len,
                         const int* fds, int nfds) noexcept {
    char buf[proto::max_reply];
    proto::reply_header hh = h;
    len = std::min(len, sizeof buf - sizeof hh);
    hh.text_len = uint32_t(len);
    std::memcpy(buf, &hh, sizeof hh);
    if (len) std::memcpy(buf + sizeof hh, text, len);
    long rc = fdpass::send(fd, buf, sizeof hh + len, fds, nfds);
    if (rc < 0 && !opts.quiet) ZC_LOG(warn, tag, "reply: %s", std::strerror(int(-rc)));
}

int broker::impl::op_hello(conn& c, const proto::request& r, proto::reply_header& h, int* fds, int& nfds,
                           std::string& text) noexcept {
    if (c.dom != domid_invalid) return -EALREADY;
    if (r.d != proto::version) return -EPROTO;
    if (r.a >= max_domains) return -EINVAL;
    if (r.c & ~uint32_t(proto::hello_attach | proto::hello_privileged)) return -EINVAL;
    domid_t id = domid_t(r.a);
    bool attach = r.c & proto::hello_attach;
    const bool admin_ok = is_admin(r);
    auto it = domains.find(id);
    if (it != domains.end()) {
        if (!attach) return -EEXIST;
        if (!admin_ok && !same_token(r.token, it->second.token)) {
            ZC_LOG(warn, tag, "pid %d: attach to domain %u refused: wrong token", int(c.pid), unsigned(id));
            return -EACCES;
        }
        it->second.conns.push_back(c.fd);
        c.dom = id;
    } else {
        // Creating a domain is the toolstack's (the admin token's) job.
        if (!admin_ok) {
            ZC_LOG(warn, tag, "pid %d: creating domain %u refused: no admin token", int(c.pid), unsigned(id));
            return -EACCES;
        }
        uint32_t pages = r.b ? r.b : default_mem_pages;
        if (pages > (1u << 22)) return -EINVAL; // 16 GiB of emulated guest memory at most
        domain d;
        d.id = id;
        d.mem_pages = pages;
        d.nr_grefs = default_nr_grefs;
        d.generation = registry[id].generation.load(std::memory_order_relaxed) + 1;
        d.privileged = id == 0 || (r.c & proto::hello_privileged);
        if (int e = random_token(d.token); e < 0) return e;
        std::string pfx = "zcemu-d" + std::to_string(id);
        int e;
        if ((e = make_memfd(pfx + "-mem", size_t(pages) * page_size)) < 0) return e;
        d.fds[proto::fd_mem] = e;
        if ((e = make_memfd(pfx + "-gnttab", size_t(d.nr_grefs) * sizeof(grant_entry_v1_t))) < 0)
            return d.close_all(), e;
        d.fds[proto::fd_gnttab] = e;
        if ((e = make_memfd(pfx + "-active", size_t(d.nr_grefs) * sizeof(active_entry))) < 0)
            return d.close_all(), e;
        d.fds[proto::fd_active] = e;
        for (int i : {proto::fd_mem, proto::fd_gnttab, proto::fd_active})
            if ((e = seal_size(d.fds[i])) < 0) return d.close_all(), e;
        d.grants.dom = id;
        d.grants.nr_grefs = d.nr_grefs;
        d.grants.gnttab = static_cast<grant_entry_v1_t*>(
            map_fd(d.fds[proto::fd_gnttab], size_t(d.nr_grefs) * sizeof(grant_entry_v1_t)));
        d.grants.active = static_cast<active_entry*>(
            map_fd(d.fds[proto::fd_active], size_t(d.nr_grefs) * sizeof(active_entry)));
        if (!d.grants.gnttab || !d.grants.active) return d.close_all(), -ENOMEM;
        if ((e = make_memfd(pfx + "-evtchn", bindings_memfd_bytes)) < 0) return d.close_all(), e;
        d.fds[proto::fd_bindings] = e;
        d.bindings = static_cast<evtchn_binding*>(map_fd(e, bindings_memfd_bytes));
        if (!d.bindings) return d.close_all(), -ENOMEM;
        d.grants.mem_pages = d.mem_pages;
        d.grants.regions = d.regions();
        seal_readonly(e);
        if ((e = make_memfd(pfx + "-evtbits", sizeof(evtchn_bitmaps))) < 0) return d.close_all(), e;
        d.fds[proto::fd_bitmaps] = e;
        if ((e = seal_size(e)) < 0) return d.close_all(), e;
        d.bitmaps = static_cast<evtchn_bitmaps*>(map_fd(d.fds[proto::fd_bitmaps], sizeof(evtchn_bitmaps)));
        if (!d.bitmaps) return d.close_all(), -ENOMEM;
        d.xs_path = opts.dir + "/xs/dom" + std::to_string(id) + ".sock";
        int rc = xs.add_domain(id, d.xs_path, id == 0 ? "Domain-0" : "dom" + std::to_string(id));
        if (rc < 0) return d.close_all(), rc;
        d.conns.push_back(c.fd);
        registry_slot& s = registry[id];
        s.mem_pages = d.mem_pages;
        s.nr_grefs = d.nr_grefs;
        s.generation.store(d.generation, std::memory_order_relaxed);
        s.state.store(dom_alive, std::memory_order_release);
        c.dom = id;
        if (!opts.quiet)
            ZC_LOG(info, tag, "domain %u created (%u pages, %u grant entries%s)", unsigned(id), pages, d.nr_grefs,
                   d.privileged ? ", privileged" : "");
        it = domains.emplace(id, std::move(d)).first;
    }
    describe(it->second, own_fds, h, fds, nfds);
    text.assign(reinterpret_cast<const char*>(it->second.token), proto::token_bytes);
    text += it->second.xs_path;
    return 0;
}

// A domain's geometry and the table fds named by `mask` (1 << domain_fd).
void broker::impl::describe(const domain& d, uint32_t mask, proto::reply_header& h, int* fds, int& nfds) const noexcept {
    h.a = d.generation;
    h.b = d.mem_pages;
    h.c = d.nr_grefs;
    h.d = mask;
    nfds = 0;
    for (int i = 0; i < proto::n_domain_fds; i++)
        if (mask & (1u << i)) fds[nfds++] = i == proto::fd_registry ? registry_fd : d.fds[i];
}

// Memory and tables of a domain: one's own (without the active table), or,
// for a privileged caller, another's with its active table (broker.hpp).
int broker::impl::op_get_domain(const conn& c, const proto::request& r, proto::reply_header& h, int* fds,
                                int& nfds) noexcept {
    auto it = domains.find(domid_t(r.a));
    if (r.a >= max_domains || it == domains.end()) return -ESRCH;
    if (it->first == c.dom) {
        describe(it->second, own_fds, h, fds, nfds);
        return 0;
    }
    auto me = domains.find(c.dom);
    if (me == domains.end() || !me->second.privileged) {
        // Debug only: every unprivileged domain's first map or copy of
        // another's grant asks, then goes through grant_pin (foreign.hpp).
        ZC_LOG(debug, tag, "pid %d (domain %u): refused domain %u's memory: not a privileged domain", int(c.pid),
               unsigned(c.dom), unsigned(r.a));
        return -EPERM;
    }
    describe(it->second, foreign_fds, h, fds, nfds);
    return 0;
}

// What any domain needs of another to notify it (evtchn.cpp).
int broker::impl::op_get_evtchn(const proto::request& r, proto::reply_header& h, int* fds, int& nfds) noexcept {
    auto it = domains.find(domid_t(r.a));
    if (r.a >= max_domains || it == domains.end()) return -ESRCH;
    describe(it->second, evtchn_fds, h, fds, nfds);
    return 0;
}

// A new region of the caller's own memory (layout.hpp, "memory regions"):
// a fresh memfd, sealed against shrink and grow before anyone sees it. A
// domain's regions together hold at most as many pages as its base memory
// (its maximum reservation, as Xen's max_pages bounds populate_physmap).
int broker::impl::op_region_new(domain& me, const proto::request& r, proto::reply_header& h, int* fds,
                                int& nfds) noexcept {
    if (r.a == 0 || r.a > region_max_pages) return -EINVAL;
    if (me.region_pages + r.a > me.mem_pages) return -ENOMEM;
    uint32_t i = 0;
    while (i < region_slots && me.region_fds[i] >= 0) ++i;
    if (i == region_slots) return -ENOSPC;
    const std::string name = "zcemu-d" + std::to_string(me.id) + "-region" + std::to_string(i);
    int fd = make_memfd(name, size_t(r.a) * page_size);
    if (fd < 0) return fd;
    if (int e = seal_size(fd); e < 0) {
        ::close(fd);
        return e;
    }
    region_slot& s = me.regions()[i];
    me.region_fds[i] = fd;
    me.region_pages += r.a;
    s.pages.store(r.a, std::memory_order_relaxed);
    h.b = s.gen.load(std::memory_order_relaxed) + 1;
    s.gen.store(h.b, std::memory_order_release);
    fds[0] = fd;
    nfds = 1;
    return int(i);
}

// The region's frames become unpopulated; whoever still maps its memfd
// keeps those pages (a process of the domain, or a mapper that has not
// noticed yet), but no grant reaches them any more.
int broker::impl::op_region_free(domain& me, const proto::request& r) noexcept {
    if (r.a >= region_slots || me.region_fds[r.a] < 0) return -EINVAL;
    region_slot& s = me.regions()[r.a];
    me.region_pages -= s.pages.load(std::memory_order_relaxed);
    s.pages.store(0, std::memory_order_relaxed);
    s.gen.store(s.gen.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    ::close(me.region_fds[r.a]);
    me.region_fds[r.a] = -1;
    return 0;
}

// A region's memfd for a mapper: the domain itself, or a privileged one (the
// same rule as get_domain's memory).
int broker::impl::op_region_get(const conn& c, const proto::request& r, proto::reply_header& h, int* fds,
                                int& nfds) noexcept {
    auto it = domains.find(domid_t(r.a));
    if (r.a >= max_domains || it == domains.end()) return -ESRCH;
    if (it->first != c.dom) {
        auto me = domains.find(c.dom);
        if (me == domains.end() || !me->second.privileged) {
            ZC_LOG(warn, tag, "pid %d (domain %u): refused a region of domain %u: not a privileged domain",
                   int(c.pid), unsigned(c.dom), unsigned(r.a));
            return -EPERM;
        }
    }
    const domain& d = it->second;
    if (r.b >= region_slots || d.region_fds[r.b] < 0) return -ENOENT;
    const region_slot& s = d.regions()[r.b];
    h.a = s.gen.load(std::memory_order_relaxed);
    h.b = s.pages.load(std::memory_order_relaxed);
    fds[0] = d.region_fds[r.b];
    nfds = 1;
    return 0;
}

// An unprivileged domain's map or copy of another domain's grant: validated
// and pinned here, against the granter's tables (foreign.hpp). The GNTST_*
// code goes in h.a; rc is 0 unless the request itself is malformed.
int broker::impl::op_grant_pin(domain& me, const proto::request& r, proto::reply_header& h, int* fds,
                               int& nfds) noexcept {
    if (r.c & ~uint32_t(proto::pin_readonly | proto::pin_map)) return -EINVAL;
    auto it = domains.find(domid_t(r.a));
    // Xen rcu_lock_domain_by_id(). A domain's own grants are mapped in its
    // own process (grant.cpp), never asked for here.
    int16_t st = GNTST_bad_domain;
    if (r.a < max_domains && it != domains.end() && it->first != me.id) {
        domain& g = it->second;
        pinned_page p = foreign_pin(granter_ref{g.grants, g.region_fds, g.lent}, g.generation, me.fpins, me.id, r.b,
                                    r.c & proto::pin_readonly, r.c & proto::pin_map);
        st = p.status;
        if (st == GNTST_okay) {
            h.b = p.page;
            h.c = g.generation;
            fds[0] = p.fd;
            nfds = 1;
        }
    }
    h.a = uint32_t(uint16_t(st));
    return 0;
}

int broker::impl::op_grant_unpin(domain& me, const proto::request& r) noexcept {
    if (r.c & ~uint32_t(proto::pin_readonly | proto::pin_map)) return -EINVAL;
    auto it = domains.find(domid_t(r.a));
    const bool same = r.a < max_domains && it != domains.end() && it->second.generation == r.d;
    return foreign_unpin(same ? &it->second.grants : nullptr, me.fpins, domid_t(r.a), r.d, r.b,
                         r.c & proto::pin_readonly);
}

void broker::impl::handle(conn& c) noexcept {
    proto::request r{};
    int in_fds[proto::max_fds];
    int n_in = proto::max_fds;
    int cfd = c.fd;
    long n = fdpass::recv(cfd, &r, sizeof r, in_fds, &n_in);
    if (n <= 0) {
        drop_conn(cfd);
        return;
    }
    proto::reply_header h{};
    int out_fds[proto::max_fds];
    int n_out = 0;
    std::string text;
    int rc = 0;
    auto self = domains.find(c.dom);
    domain* me = self == domains.end() ? nullptr : &self->second;

    if (size_t(n) != sizeof r || r.magic != proto::magic) {
        rc = -EPROTO;
    } else if ((r.code == proto::op::list_domains || r.code == proto::op::shutdown) && !is_admin(r)) {
        ZC_LOG(warn, tag, "pid %d: op %u refused: no admin token", int(c.pid), unsigned(r.code));
        rc = -EACCES;
    } else if (r.code != proto::op::hello && !me && r.code != proto::op::list_domains &&
               r.code != proto::op::shutdown) {
        // Must say hello first: the connection is nobody yet (broker.hpp).
        ZC_LOG(warn, tag, "pid %d: op %u before hello refused", int(c.pid), unsigned(r.code));
        rc = -ENOTCONN;
    } else {
        switch (r.code) {
        case proto::op::hello: rc = op_hello(c, r, h, out_fds, n_out, text); break;
        case proto::op::get_domain: rc = op_get_domain(c, r, h, out_fds, n_out); break;
        case proto::op::get_evtchn: rc = op_get_evtchn(r, h, out_fds, n_out); break;
        case proto::op::region_new: rc = op_region_new(*me, r, h, out_fds, n_out); break;
        case proto::op::region_free: rc = op_region_free(*me, r); break;
        case proto::op::region_get: rc = op_region_get(c, r, h, out_fds, n_out); break;
        case proto::op::grant_pin: rc = op_grant_pin(*me, r, h, out_fds, n_out); break;
        case proto::op::grant_unpin: rc = op_grant_unpin(*me, r); break;
        case proto::op::evtchn_open:
            if (n_in != 1) {
                rc = -EINVAL;
                break;
            }
            if (me->handle_fds.size() >= 0xFFFF) {
                rc = -EMFILE;
                break;
            }
            // Handle 0 is never used so that a zeroed binding names no handle.
            if (me->handle_fds.empty()) me->handle_fds.push_back(-1);
            me->handle_fds.push_back(in_fds[0]);
            n_in = 0;
            rc = int(me->handle_fds.size() - 1);
            break;
        case proto::op::evtchn_close:
            if (!me->has_handle(r.a)) {
                rc = -EINVAL;
                break;
            }
            for (evtchn_port_t p = 1; p < max_evtchn_ports; p++)
                if (me->bindings[p].state.load(std::memory_order_relaxed) != ecs_free && me->bindings[p].handle == r.a)
                    close_port(*me, p);
            ::close(me->handle_fds[r.a]);
            me->handle_fds[r.a] = -1;
            break;
        case proto::op::evtchn_alloc_unbound: {
            if (!me->has_handle(r.a) || r.b >= max_domains) {
                rc = -EINVAL;
                break;
            }
            rc = alloc_port(*me);
            if (rc < 0) break;
            evtchn_binding& b = me->bindings[rc];
            b.remote_dom = uint16_t(r.b);
            b.remote_port = 0;
            b.handle = uint16_t(r.a);
            b.state.store(ecs_unbound, std::memory_order_release);
            break;
        }
        case proto::op::evtchn_bind: {
            // Xen's evtchn_bind_interdomain(): the remote port must be unbound
            // and reserved for us.
            if (!me->has_handle(r.a) || r.b >= max_domains) {
                rc = -EINVAL;
                break;
            }
            auto rit = domains.find(domid_t(r.b));
            if (rit == domains.end()) {
                rc = -ESRCH;
                break;
            }
            domain& rd = rit->second;
            if (r.c == 0 || r.c >= max_evtchn_ports) {
                rc = -EINVAL;
                break;
            }
            evtchn_binding& rb = rd.bindings[r.c];
            if (rb.state.load(std::memory_order_relaxed) != ecs_unbound || rb.remote_dom != me->id) {
                rc = -EINVAL;
                break;
            }
            rc = alloc_port(*me);
            if (rc < 0) break;
            if (&rd == me && evtchn_port_t(rc) == r.c) {
                rc = -EINVAL;
                break;
            }
            evtchn_binding& b = me->bindings[rc];
            b.remote_dom = rd.id;
            b.remote_port = r.c;
            b.handle = uint16_t(r.a);
            rb.remote_port = evtchn_port_t(rc);
            rb.state.store(ecs_interdomain, std::memory_order_release);
            b.state.store(ecs_interdomain, std::memory_order_release);
            break;
        }
        case proto::op::evtchn_unbind:
            if (r.a == 0 || r.a >= max_evtchn_ports ||
                me->bindings[r.a].state.load(std::memory_order_relaxed) == ecs_free) {
                rc = -EINVAL;
                break;
            }
            close_port(*me, r.a);
            break;
        case proto::op::evtchn_handle_fd: {
            auto rit = domains.find(domid_t(r.a));
            if (r.a >= max_domains || rit == domains.end()) {
                rc = -ESRCH;
                break;
            }
            auto& hf = rit->second.handle_fds;
            if (r.b >= hf.size() || hf[r.b] < 0) {
                rc = -ENOENT;
                break;
            }
            out_fds[0] = hf[r.b];
            n_out = 1;
            break;
        }
        case proto::op::list_domains: {
            std::vector<uint16_t> ids;
            for (auto& [id, d] : domains) ids.push_back(id);
            std::sort(ids.begin(), ids.end());
            h.a = uint32_t(ids.size());
            text.assign(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(uint16_t));
            break;
        }
        case proto::op::shutdown: {
            uint64_t one = 1;
            (void)!::write(stop_fd, &one, sizeof one);
            break;
        }
        default: rc = -EOPNOTSUPP; break;
        }
    }
    for (int i = 0; i < n_in; i++) ::close(in_fds[i]);
    h.rc = rc;
    reply(cfd, h, text.data(), text.size(), rc < 0 ? nullptr : out_fds, rc < 0 ? 0 : n_out);
    // grant_pin's fd is made for this reply; every other op's are borrowed.
    if (r.code == proto::op::grant_pin && n_out == 1) ::close(out_fds[0]);
}

// ---------------------------------------------------------------------------

broker::broker(std::unique_ptr<impl> p) noexcept : _p(std::move(p)) {}
broker::~broker() { stop(); }

result<std::unique_ptr<broker>> broker::create(const broker_options& o, std::string* why) noexcept {
    auto p = std::make_unique<impl>();
    p->opts = o;
    int rc = p->init(why);
    if (rc < 0) return err(rc);
    return std::unique_ptr<broker>(new broker(std::move(p)));
}

int broker::run() noexcept {
    int rc = _p->serve();
    return rc;
}

int broker::start_thread() noexcept {
    if (_p->thread.joinable()) return -EALREADY;
    _p->thread = std::thread([this] { _p->serve(); });
    return 0;
}

void broker::request_stop() noexcept {
    uint64_t one = 1;
    if (_p && _p->stop_fd >= 0) (void)!::write(_p->stop_fd, &one, sizeof one);
}

void broker::stop() noexcept {
    if (!_p) return;
    if (_p->thread.joinable()) {
        request_stop();
        _p->thread.join();
    }
    _p->teardown();
}

const std::string& broker::socket_path() const noexcept { return _p->sock_path; }
const std::string& broker::dir() const noexcept { return _p->opts.dir; }
const std::string& broker::admin_token() const noexcept { return _p->admin_hex; }

} // namespace zc::hv::emu
