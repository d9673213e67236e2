// SPDX-License-Identifier: MIT
// An emulated host for zc socket tests: zc-netback in dom0 and two guests,
// each running zc-stackd, all in threads of the test process (one emulated
// domain per hv::port). Applications are the test itself, through libzcnet.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <poll.h>

#include "netback_host.hpp"
#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "stackd/stackd.hpp"
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

    explicit uapi_rig(bool private_hdrs = true) : private_headers(private_hdrs) {
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
        std::string why;
        EXPECT_EQ(netback::vif_create(*xs0, s, &why), 0) << why;
        stackd::options o;
        G.sock = host.dir() + "/stackd" + std::to_string(d) + ".sock";
        G.ip = guest_ip(d);
        o.listen = G.sock;
        o.ip = G.ip;
        o.nf.tx_buffers = 256;
        o.private_headers = private_headers;
        o.max_pool_pages = 8192; // 32 MiB of the guest's 64 for sockets' pools: the budget can be hit
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

} // namespace zc::test
