// SPDX-License-Identifier: MIT
// An emulated host for zc socket tests: zc-netback in dom0 and two guests,
// each running zc-stackd, all in threads of the test process (one emulated
// domain per hv::port). Applications are the test itself, through libzcnet.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "netback_host.hpp"
#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "common/fdpass.hpp"
#include "stackd/stackd.hpp"
#include "uapi/shm.hpp"
#include "zc.h"

namespace zc::test {

inline uint32_t guest_ip(int i) { return 0x0a000000u | uint32_t(i); } // 10.0.0.i

inline sockaddr_in addr_of(uint32_t ip_host, uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(ip_host);
    a.sin_port = htons(port);
    return a;
}

struct stack_guest {
    std::unique_ptr<hv::port> port;
    std::unique_ptr<stackd::service> svc;
    std::thread loop;
    std::atomic<bool> stop{false};
    std::string sock;
    uint32_t ip = 0;

    void halt() {
        stop = true;
        if (loop.joinable()) loop.join();
    }
    ~stack_guest() { halt(); }
};

struct uapi_rig {
    emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    served_backend be;
    stack_guest g[3]; // g[1], g[2]; index 0 unused

    bool private_headers = true;
    std::function<void(stackd::options&)> tune; // changes to the guests' zc-stackd options
    uint32_t mtu = 1500;                         // the vifs' "mtu" (the toolstack's; 0: none)

    explicit uapi_rig(bool private_hdrs = true, std::function<void(stackd::options&)> t = {}, uint32_t vif_mtu = 1500)
        : private_headers(private_hdrs), tune(std::move(t)), mtu(vif_mtu) {
        dom0 = host.domain(0);
        if (!dom0) return;
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return;
        xs0 = std::move(*x);
        if (!be.start(*dom0)) return;
        for (int d = 1; d <= 2; d++)
            if (!start_guest(d)) return;
    }

    bool start_guest(int d) {
        stack_guest& G = g[d];
        G.port = host.domain(hv::domid_t(d));
        if (!G.port) return false;
        netback::vif_spec s;
        s.frontend = hv::domid_t(d);
        s.mtu = mtu;
        std::string why;
        EXPECT_EQ(netback::vif_create(*xs0, s, &why), 0) << why;
        stackd::options o;
        G.sock = host.dir() + "/stackd" + std::to_string(d) + ".sock";
        G.ip = guest_ip(d);
        o.listen = G.sock;
        o.ip = G.ip;
        o.nf.tx_buffers = 256;
        o.private_headers = private_headers;
        o.max_pool_pages = 8192; // 32 MiB of the guest's 64 for sockets' send buffers: the budget can be hit
        o.max_sockets_per_app = 64; // the tests are one application
        o.max_pool_pages_per_app = 65536;
        if (tune) tune(o);
        auto svc = stackd::service::create(*G.port, o, &why);
        EXPECT_TRUE(svc) << why;
        if (!svc) return false;
        G.svc = std::move(*svc);
        G.loop = std::thread([&G] { (void)G.svc->run(G.stop); });
        return true;
    }

    ~uapi_rig() {
        for (auto& G : g) G.halt();
        for (auto& G : g) G.svc.reset();
        be.stop();
    }
    bool ok() const { return be && g[1].svc && g[2].svc; }

    // A socket on guest d's stack.
    int open(int d, uint32_t flags = ZC_SOCK_STRICT, uint32_t tx_bufs = 0, uint32_t rx_bufs = 0) {
        zc_socket_opts o{};
        o.sz = sizeof o;
        o.flags = flags;
        o.tx_bufs = tx_bufs;
        o.rx_bufs = rx_bufs;
        o.service = g[d].sock.c_str();
        return zc_socket(&o);
    }
};

// A connected pair: sender on guest 1, receiver bound on guest 2.
// A test suite whose tests share one rig, made before the first test and
// torn down after the last: `class MySuite : public rig_suite {};`.
class rig_suite : public ::testing::Test {
protected:
    static void SetUpTestSuite() { rig = new uapi_rig; }
    static void TearDownTestSuite() {
        delete rig;
        rig = nullptr;
    }
    void SetUp() override { ASSERT_TRUE(rig && rig->ok()); }
    static inline uapi_rig* rig = nullptr;
};

struct pair {
    int tx = -1, rx = -1;
    zc_pool_info ti{}, ri{};
    pair(uapi_rig& r, uint16_t port, uint32_t tx_flags = ZC_SOCK_STRICT, uint32_t rx_bufs = 0) {
        tx = r.open(1, tx_flags);
        rx = r.open(2, ZC_SOCK_STRICT, 0, rx_bufs);
        EXPECT_GE(tx, 0);
        EXPECT_GE(rx, 0);
        sockaddr_in b = addr_of(0, port);
        EXPECT_EQ(zc_bind(rx, &b), 0);
        sockaddr_in to = addr_of(guest_ip(2), port);
        EXPECT_EQ(zc_connect(tx, &to), 0);
        ti.sz = sizeof ti;
        ri.sz = sizeof ri;
        EXPECT_EQ(zc_pool_mmap(tx, &ti), 0);
        EXPECT_EQ(zc_pool_mmap(rx, &ri), 0);
    }
    ~pair() {
        if (tx >= 0) zc_close(tx);
        if (rx >= 0) zc_close(rx);
    }
};

// Wait for the socket to become readable (bounded).
inline bool wait_readable(int s, int timeout_ms = 5000) {
    pollfd p{s, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

// Reap until `want` completions arrived or the time is up; returns how many.
inline int reap(int s, zc_completion* out, int want, int timeout_ms = 8000) {
    int got = 0;
    for (int waited = 0; got < want && waited < timeout_ms; waited += 10) {
        int n = zc_completions(s, out + got, unsigned(want - got));
        if (n > 0) {
            got += n;
            continue;
        }
        wait_readable(s, 10);
    }
    return got;
}

inline int recv_some(int s, zc_rxd* out, unsigned max, int timeout_ms = 8000) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        int n = zc_recv(s, out, max);
        if (n != -EAGAIN) return n;
        wait_readable(s, 10);
    }
    return -EAGAIN;
}

// An application that speaks zc-stackd's control protocol itself
// (uapi/src/shm.hpp), to do what libzcnet never would.
struct raw_sock {
    int ctl = -1;
    int fds[uapi::ctl_nfds] = {-1, -1, -1, -1};
    uapi::ctl_rsp rsp{};
    void* shm = nullptr;
    size_t shm_size = 0;
    uapi::shm_layout* lay = nullptr;
    uapi::ring<uapi::tx_desc> tx;
    uapi::ring<uapi::cq_desc> cq;
    uapi::ring<uapi::fr_desc> fr;

    bool connect(const std::string& path) {
        ctl = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        return ::connect(ctl, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    // OPEN: rsp.rc is the service's answer.
    bool open(const std::string& path, uint32_t entries, uint32_t tx_bufs = 8, uint32_t rx_bufs = 8) {
        if (!connect(path)) return false;
        uapi::ctl_req rq{};
        rq.op = uint32_t(uapi::op::open);
        rq.version = uapi::proto_version;
        rq.tx_bufs = tx_bufs;
        rq.rx_bufs = rx_bufs;
        rq.entries = entries;
        if (::send(ctl, &rq, sizeof rq, 0) != ssize_t(sizeof rq)) return false;
        int nfds = uapi::ctl_nfds;
        if (fdpass::recv(ctl, &rsp, sizeof rsp, fds, &nfds) != long(sizeof rsp) || rsp.rc < 0 ||
            nfds != uapi::ctl_nfds)
            return false;
        shm_size = rsp.shm_size;
        shm = ::mmap(nullptr, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[uapi::fd_shm], 0);
        if (shm == MAP_FAILED) return false;
        lay = static_cast<uapi::shm_layout*>(shm);
        tx.attach(shm, lay->tx_off, entries);
        cq.attach(shm, lay->cq_off, entries);
        fr.attach(shm, lay->fr_off, entries);
        return true;
    }
    void kick() {
        uint64_t one = 1;
        (void)!::write(fds[uapi::fd_kick], &one, sizeof one);
    }
    ~raw_sock() {
        if (shm && shm != MAP_FAILED) ::munmap(shm, shm_size);
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
        if (ctl >= 0) ::close(ctl);
    }
};

} // namespace zc::test
