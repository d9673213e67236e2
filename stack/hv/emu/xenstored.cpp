// SPDX-License-Identifier: MIT
// The emulated xenstored's daemon: the per-domain Unix sockets, the epoll
// thread, connections (framing input into messages, flushing queued
// output), domain introduction and release, and the public xenstored API.
// Messages are handled in xenstored_ops.cpp; the overview of the whole
// daemon and its threading is in xenstored_impl.hpp.
#include "hv/emu/xenstored.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "hv/emu/xenstored_impl.hpp"

namespace zc::hv::emu {

xenstored::impl::impl() {
    // setup_structure(): "/" and /tool/xenstored, owned by dom0.
    for (const char* p : {"/", "/tool", "/tool/xenstored"}) {
        node& n = _tree[p];
        n.perms = {{0, perm_none}};
        n.gen = ++_gen;
    }
    _tree["/"].children = {"tool"};
    _tree["/tool"].children = {"xenstored"};
    _special["@introduceDomain"] = {{0, perm_none}};
    _special["@releaseDomain"] = {{0, perm_none}};

    _ep = epoll_create1(EPOLL_CLOEXEC);
    _evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (_ep < 0 || _evfd < 0) {
        _init_err = -errno;
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(_ep, EPOLL_CTL_ADD, _evfd, &ev) < 0)
        _init_err = -errno;
}

xenstored::impl::~impl() {
    if (_ep >= 0)
        close(_ep);
    if (_evfd >= 0)
        close(_evfd);
}

// ---- flushing output --------------------------------------------------------

void xenstored::impl::set_out_interest(conn& cn, bool want) {
    if (cn.want_out == want)
        return;
    epoll_event ev{};
    ev.events = want ? uint32_t(EPOLLIN | EPOLLOUT) : uint32_t(EPOLLIN);
    ev.data.u64 = cn.key;
    if (epoll_ctl(_ep, EPOLL_CTL_MOD, cn.fd, &ev) == 0)
        cn.want_out = want;
}


bool xenstored::impl::flush(conn& cn) {
    while (cn.out_off < cn.out.size()) {
        ssize_t n = send(cn.fd, cn.out.data() + cn.out_off, cn.out.size() - cn.out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            cn.out_off += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        close_conn(cn.key);
        return false;
    }
    if (cn.out_off == cn.out.size()) {
        cn.out.clear();
        cn.out_off = 0;
    } else if (cn.out.size() - cn.out_off > max_out_bytes) {
        if (_rl_bad.allow())
            ZC_LOG(warn, tag, "dom%u: client not reading its replies, disconnecting", cn.dom);
        close_conn(cn.key);
        return false;
    }
    set_out_interest(cn, cn.out_off < cn.out.size());
    return true;
}

void xenstored::impl::flush_all() {
    std::vector<uint64_t> keys;
    for (auto& [k, cn] : _conns)
        if (cn->out_off < cn->out.size())
            keys.push_back(k);
    for (uint64_t k : keys) {
        auto it = _conns.find(k);
        if (it != _conns.end())
            flush(*it->second);
    }
}

void xenstored::impl::close_conn(uint64_t key) {
    auto it = _conns.find(key);
    if (it == _conns.end())
        return;
    // Deregister first: a forked child may hold a copy of the fd, which
    // would keep the epoll registration (and its events) alive.
    epoll_ctl(_ep, EPOLL_CTL_DEL, it->second->fd, nullptr);
    close(it->second->fd);
    _conns.erase(it);
}

// ---- input ------------------------------------------------------------------

void xenstored::impl::handle_input(conn& cn) {
    const uint64_t key = cn.key;
    // Bounded read: at most one chunk per wakeup, then every complete
    // message is processed, so `in` never holds more than a chunk plus
    // one partial message.
    size_t old = cn.in.size();
    cn.in.resize(old + 65536);
    ssize_t n;
    do {
        n = recv(cn.fd, cn.in.data() + old, 65536, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        cn.in.resize(old);
        return;
    }
    if (n <= 0) {
        close_conn(key);
        return;
    }
    cn.in.resize(old + size_t(n));

    size_t off = 0;
    while (cn.in.size() - off >= sizeof(xsd_sockmsg)) {
        xsd_sockmsg h;
        std::memcpy(&h, cn.in.data() + off, sizeof(h));
        if (h.len > XENSTORE_PAYLOAD_MAX) {
            // As xenstored: the stream cannot be resynchronised.
            if (_rl_bad.allow())
                ZC_LOG(warn, tag, "dom%u: message length %u > %u, disconnecting", cn.dom, h.len,
                       unsigned(XENSTORE_PAYLOAD_MAX));
            close_conn(key);
            return;
        }
        if (cn.in.size() - off < sizeof(h) + h.len)
            break;
        // Copy the payload out: processing may append to other
        // connections but never reallocates this one's input.
        std::vector<char> body(cn.in.begin() + long(off + sizeof(h)),
                               cn.in.begin() + long(off + sizeof(h) + h.len));
        off += sizeof(h) + h.len;
        process(cn, h, body.data(), h.len);
    }
    cn.in.erase(cn.in.begin(), cn.in.begin() + long(off));
    flush_all();
}

// ---- daemon loop ------------------------------------------------------------

void xenstored::impl::accept_on(uint16_t dom, int lfd) {
    for (int i = 0; i < 16; i++) {
        int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        size_t n = 0;
        for (auto& [k, cn] : _conns)
            n += cn->dom == dom;
        if (n >= max_conns_per_domain) {
            if (_rl_bad.allow())
                ZC_LOG(warn, tag, "dom%u: too many connections", dom);
            close(fd);
            continue;
        }
        auto cn = std::make_unique<conn>();
        cn->key = _next_key++;
        cn->fd = fd;
        cn->dom = dom;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = cn->key;
        if (epoll_ctl(_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        _conns.emplace(cn->key, std::move(cn));
    }
}

void xenstored::impl::run() {
    epoll_event evs[32];
    for (;;) {
        int n = epoll_wait(_ep, evs, 32, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ZC_LOG(error, tag, "epoll_wait: %s", std::strerror(errno));
            return;
        }
        std::lock_guard<std::mutex> g(_mu);
        if (_stopping)
            return;
        for (int i = 0; i < n; i++) {
            uint64_t key = evs[i].data.u64;
            if (key == 0) {
                uint64_t v;
                (void)!::read(_evfd, &v, sizeof(v));
                continue;
            }
            // Keys are never reused, so a stale event for a connection
            // closed earlier in this batch finds nothing.
            if (auto lit = _listener_keys.find(key); lit != _listener_keys.end()) {
                auto d = _domains.find(lit->second);
                if (d != _domains.end())
                    accept_on(d->first, d->second.listen_fd);
                continue;
            }
            auto cit = _conns.find(key);
            if (cit == _conns.end())
                continue;
            conn& cn = *cit->second;
            if (evs[i].events & EPOLLOUT) {
                if (!flush(cn))
                    continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                handle_input(cn);
        }
    }
}

void xenstored::impl::close_domain_locked(uint16_t dom) {
    auto it = _domains.find(dom);
    if (it == _domains.end())
        return;
    epoll_ctl(_ep, EPOLL_CTL_DEL, it->second.listen_fd, nullptr);
    close(it->second.listen_fd);
    unlink(it->second.sock_path.c_str());
    _listener_keys.erase(it->second.key);
    std::vector<uint64_t> keys;
    for (auto& [k, cn] : _conns)
        if (cn->dom == dom)
            keys.push_back(k);
    for (uint64_t k : keys)
        close_conn(k);
    _domains.erase(it);
}

xenstored::xenstored() : _p(std::make_unique<impl>()) {}

xenstored::~xenstored() { stop(); }

int xenstored::start() noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    if (_p->_init_err)
        return _p->_init_err;
    if (_p->_thr.joinable() || _p->_stopped)
        return -EALREADY;
    try {
        _p->_thr = std::thread([p = _p.get()] { p->run(); });
    } catch (...) {
        return -EAGAIN;
    }
    return 0;
}

void xenstored::stop() noexcept {
    {
        std::lock_guard<std::mutex> g(_p->_mu);
        if (_p->_stopped)
            return;
        _p->_stopping = true;
        _p->_stopped = true;
        if (_p->_evfd >= 0) {
            uint64_t one = 1;
            (void)!::write(_p->_evfd, &one, sizeof(one));
        }
    }
    if (_p->_thr.joinable())
        _p->_thr.join();
    std::lock_guard<std::mutex> g(_p->_mu);
    std::vector<uint16_t> doms;
    for (auto& [d, r] : _p->_domains)
        doms.push_back(d);
    for (uint16_t d : doms)
        _p->close_domain_locked(d);
    std::vector<uint64_t> keys;
    for (auto& [k, c] : _p->_conns)
        keys.push_back(k);
    for (uint64_t k : keys)
        _p->close_conn(k);
}

int xenstored::add_domain(uint16_t dom, const std::string& sock_path, const std::string& name) noexcept {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (sock_path.empty() || sock_path.size() >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    if (dom >= domid_self) // DOMID_FIRST_RESERVED and above
        return -EINVAL;
    std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);

    std::lock_guard<std::mutex> g(_p->_mu);
    if (_p->_init_err)
        return _p->_init_err;
    if (_p->_stopped)
        return -ESHUTDOWN;
    if (_p->_domains.count(dom))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(sock_path.c_str()); // a stale socket from an earlier run
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd, 64) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint64_t key = _p->_next_key++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (epoll_ctl(_p->_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = -errno;
        close(fd);
        unlink(sock_path.c_str());
        return e;
    }
    _p->_domains[dom] = domain_rec{dom, key, fd, sock_path};
    _p->_listener_keys[key] = dom;

    // What a toolstack writes at domain creation: the home directory owned
    // by the guest (others: none; dom0 is privileged anyway).
    who tool{0};
    ctx live{&_p->_tree, nullptr};
    std::string home = domain_path(dom);
    int e = _p->op_mkdir(tool, live, home);
    if (!e)
        e = _p->op_set_perms(tool, live, home, {{dom, perm_none}});
    if (!e)
        e = _p->op_write(tool, live, home + "/domid", std::to_string(dom));
    if (!e)
        e = _p->op_write(tool, live, home + "/name", name);
    if (e) {
        _p->close_domain_locked(dom);
        return -e;
    }
    _p->fire_live("@introduceDomain", false, nullptr, nullptr);
    _p->flush_all();
    return 0;
}

void xenstored::remove_domain(uint16_t dom) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    if (!_p->_domains.count(dom))
        return;
    _p->close_domain_locked(dom);
    ctx live{&_p->_tree, nullptr};
    (void)_p->op_rm(who{0}, live, domain_path(dom));
    _p->fire_live("@releaseDomain", false, nullptr, nullptr);
    _p->flush_all();
}

int xenstored::write(const std::string& path, const std::string& value) noexcept {
    if (value.size() > XENSTORE_PAYLOAD_MAX)
        return -E2BIG;
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    int e = _p->op_write(who{0}, live, canonicalize(who{0}, path), value);
    _p->flush_all();
    return -e;
}

result<std::string> xenstored::read(const std::string& path) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    std::string out;
    int e = _p->op_read(who{0}, live, canonicalize(who{0}, path), &out);
    if (e)
        return err(-e);
    return out;
}

int xenstored::rm(const std::string& path) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    int e = _p->op_rm(who{0}, live, canonicalize(who{0}, path));
    _p->flush_all();
    return -e;
}

} // namespace zc::hv::emu
