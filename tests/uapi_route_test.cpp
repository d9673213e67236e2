// SPDX-License-Identifier: MIT
// zc-stackd's neighbour resolution and routing as a UDP sender sees them:
// datagrams to a neighbour that does not answer ARP wait in its bounded
// queue (Linux's arp_queue) without holding the socket's other
// destinations, and complete with -EHOSTUNREACH when resolution fails;
// off-subnet destinations go to the default gateway's MAC (zc-stackd
// --gateway), played here by a third guest's raw netfront.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "link/netfront.hpp"
#include "proto/arp.hpp"
#include "proto/ether.hpp"
#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

constexpr uint32_t retry_ms = 200, requests = 2, qlen = 4;

void short_arp(stackd::options& o) {
    o.arp_retry_ms = retry_ms;
    o.arp_requests = requests;
    o.unres_qlen = qlen;
}

uint64_t ms_now() {
    return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

// Sends len bytes from a fresh pool buffer (*out: the buffer).
int send_to(int s, const sockaddr_in& to, uint32_t len, uint64_t ud, void** out = nullptr) {
    void* b = nullptr;
    if (int rc = zc_buf_alloc(s, &b); rc < 0) return rc;
    if (out) *out = b;
    std::memset(b, int(ud), len);
    return zc_send(s, b, len, &to, 0, ud);
}

} // namespace

TEST(UapiNeighbour, UnresolvedDestinationDoesNotHoldOthers) {
    uapi_rig rig(true, short_arp);
    ASSERT_TRUE(rig.ok());
    int tx = rig.open(1, ZC_SOCK_STRICT, 32);
    int rx = rig.open(2);
    ASSERT_GE(tx, 0);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7300);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    const sockaddr_in nobody = addr_of(0x0a000061, 9); // 10.0.0.97: nobody answers ARP
    const sockaddr_in good = addr_of(guest_ip(2), 7300);

    // The good neighbour resolved first (its first datagrams would wait for
    // ARP like any others).
    {
        ASSERT_EQ(send_to(tx, good, 30, 50), 0);
        zc_rxd d;
        ASSERT_EQ(zc_recv_wait(rx, &d, 1, 5000), 1);
        EXPECT_EQ(zc_rx_release(rx, d.data), 0);
        zc_completion c;
        ASSERT_EQ(reap(tx, &c, 1), 1);
        ASSERT_EQ(c.res, 30);
    }
    const uint64_t t0 = ms_now();
    // A full queue for the silent neighbour, then datagrams to the good one
    // behind them in the same TX ring.
    std::vector<void*> bufs(qlen + 8);
    for (uint32_t i = 0; i < qlen; i++) ASSERT_EQ(send_to(tx, nobody, 20, 100 + i, &bufs[i]), 0);
    for (uint32_t i = 0; i < 8; i++) ASSERT_EQ(send_to(tx, good, 30, i, &bufs[qlen + i]), 0);

    int got = 0;
    zc_rxd d[8];
    while (got < 8) {
        int n = zc_recv_wait(rx, d, 8, 5000);
        ASSERT_GT(n, 0) << std::strerror(-n);
        for (int k = 0; k < n; k++) {
            EXPECT_EQ(d[k].len, 30u);
            EXPECT_EQ(zc_rx_release(rx, d[k].data), 0);
        }
        got += n;
    }

    // Completions in the order the stack gave them: the good ones first,
    // the queued ones only when resolution failed.
    std::vector<zc_completion> c(qlen + 8);
    ASSERT_EQ(reap(tx, c.data(), int(c.size()), 10000), int(c.size()));
    const uint64_t t_done = ms_now();
    uint32_t good_done = 0, unreachable = 0;
    for (const auto& x : c) {
        if (x.user_data < 8) {
            EXPECT_EQ(x.res, 30);
            EXPECT_EQ(unreachable, 0u) << "a good datagram completed after the unresolved ones";
            good_done++;
        } else {
            EXPECT_EQ(x.res, -EHOSTUNREACH) << x.user_data;
            unreachable++;
        }
    }
    EXPECT_EQ(good_done, 8u);
    EXPECT_EQ(unreachable, qlen);
    // Resolution gives up after `requests` requests retry_ms apart.
    EXPECT_GE(t_done - t0, uint64_t(retry_ms) * requests - retry_ms / 2);

    // Every buffer came back, and the counters say why.
    for (void* p : bufs) EXPECT_EQ(zc_buf_free(tx, p), 0);
    stackd::counters st{};
    for (int i = 0; i < 100; i++) { // published per iteration
        st = rig.g[1].svc->stats();
        if (st.tx_unresolved == qlen) break;
        ::usleep(10000);
    }
    EXPECT_EQ(st.tx_unresolved, qlen);
    EXPECT_EQ(st.tx_unres_waits, 0u);
    zc_stats ss{};
    ss.sz = sizeof ss;
    ASSERT_EQ(zc_socket_stats(tx, &ss), 0);
    EXPECT_EQ(ss.send_errors, qlen);
    zc_close(tx);
    zc_close(rx);
}

// More datagrams for the silent neighbour than its queue holds: the ring
// waits (nothing is dropped); each resolution round fails its queue with
// -EHOSTUNREACH, in the order they were sent.
TEST(UapiNeighbour, FullArpQueueHoldsTheRingNotDrops) {
    uapi_rig rig(true, short_arp);
    ASSERT_TRUE(rig.ok());
    int tx = rig.open(1, ZC_SOCK_STRICT, 32);
    ASSERT_GE(tx, 0);
    const sockaddr_in nobody = addr_of(0x0a000061, 9);
    const uint32_t k = qlen + 2;
    for (uint32_t i = 0; i < k; i++) ASSERT_EQ(send_to(tx, nobody, 20, i), 0);
    std::vector<zc_completion> c(k);
    ASSERT_EQ(reap(tx, c.data(), int(k), 10000), int(k));
    for (uint32_t i = 0; i < k; i++) {
        EXPECT_EQ(c[i].user_data, i);
        EXPECT_EQ(c[i].res, -EHOSTUNREACH);
    }
    stackd::counters st{};
    for (int i = 0; i < 100; i++) {
        st = rig.g[1].svc->stats();
        if (st.tx_unresolved == k) break;
        ::usleep(10000);
    }
    EXPECT_EQ(st.tx_unresolved, k);
    EXPECT_GE(st.tx_unres_waits, 1u);
    zc_close(tx);
}

TEST(UapiNeighbour, ClosingWithDatagramsInAnArpQueue) {
    uapi_rig rig(true, short_arp);
    ASSERT_TRUE(rig.ok());
    int tx = rig.open(1);
    ASSERT_GE(tx, 0);
    const sockaddr_in nobody = addr_of(0x0a000061, 9);
    for (uint32_t i = 0; i < qlen; i++) ASSERT_EQ(send_to(tx, nobody, 20, i), 0);
    zc_close(tx);
    // The stack keeps the buffers until resolution fails, then frees the
    // slot; a new socket works meanwhile and after.
    int s2 = rig.open(1);
    ASSERT_GE(s2, 0);
    ::usleep((retry_ms * requests + 300) * 1000);
    const sockaddr_in good = addr_of(guest_ip(2), 9);
    ASSERT_EQ(send_to(s2, good, 10, 1), 0);
    zc_completion c;
    ASSERT_EQ(reap(s2, &c, 1), 1);
    EXPECT_EQ(c.res, 10);
    EXPECT_EQ(rig.g[1].svc->stats().sockets_closed, 1u);
    zc_close(s2);
}

namespace {

constexpr uint32_t gw_ip = 0x0a0000fe;  // 10.0.0.254
constexpr uint32_t far_ip = 0xc0a80709; // 192.168.7.9: off the guests' 10.0.0.0/24

// The gateway: guest 3 with a bare netfront, answering ARP for gw_ip and
// catching the UDP frames sent to its MAC.
struct gateway_guest {
    std::unique_ptr<hv::port> port;
    std::unique_ptr<link::netfront> nf;
    uint32_t arp_answered = 0;

    bool start(uapi_rig& rig) {
        port = rig.host.domain(3);
        if (!port) return false;
        netback::vif_spec s;
        s.frontend = 3;
        s.mtu = 1500;
        std::string why;
        EXPECT_EQ(netback::vif_create(*rig.xs0, s, &why), 0) << why;
        auto n = link::netfront::connect(*port, {}, &why);
        EXPECT_TRUE(n) << why;
        if (!n) return false;
        nf = std::move(*n);
        return true;
    }

    void answer_arp(const uint8_t* f, size_t len) {
        proto::arp_view a;
        if (proto::parse_arp(std::span<const uint8_t>(f + 14, len - 14), a) != proto::arp_error::none) return;
        if (a.op != proto::arp_op::request || a.tpa.v != gw_ip) return;
        uint8_t r[60] = {};
        proto::write_eth(std::span<uint8_t>(r, 14), a.sha, nf->mac(), proto::ethertype::arp);
        proto::write_arp(std::span<uint8_t>(r + 14, 28), proto::arp_op::reply, nf->mac(), proto::ipv4_addr{gw_ip},
                         a.sha, a.spa);
        if (nf->send(r, sizeof r) == 0) arp_answered++;
    }

    // Serves ARP until an IPv4 frame of protocol `proto` (UDP by default)
    // arrives (returned) or timeout_ms pass (empty).
    std::vector<uint8_t> next_udp(int timeout_ms, uint8_t ip_proto = 17) {
        for (int waited = 0; waited < timeout_ms; waited += 10) {
            (void)nf->wait(10);
            uint8_t f[2048];
            for (;;) {
                auto r = nf->recv(f, sizeof f);
                if (!r) break;
                const size_t len = *r;
                if (len < 42) continue;
                if (f[12] == 0x08 && f[13] == 0x06) answer_arp(f, len);
                else if (f[12] == 0x08 && f[13] == 0x00 && f[23] == ip_proto) return {f, f + len};
            }
        }
        return {};
    }
};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

void with_gateway(stackd::options& o) { o.gateway = gw_ip; }

} // namespace

TEST(UapiGateway, OffSubnetGoesToTheGatewaysMac) {
    uapi_rig rig(true, with_gateway);
    ASSERT_TRUE(rig.ok());
    gateway_guest gw;
    ASSERT_TRUE(gw.start(rig));
    int tx = rig.open(1);
    ASSERT_GE(tx, 0);
    const sockaddr_in far = addr_of(far_ip, 5000);
    ASSERT_EQ(send_to(tx, far, 100, 7), 0);
    std::vector<uint8_t> f = gw.next_udp(5000);
    ASSERT_EQ(f.size(), 42u + 100u);
    EXPECT_EQ(gw.arp_answered, 1u); // guest 1 asked for the gateway, not for far_ip
    EXPECT_TRUE(std::equal(f.begin(), f.begin() + 6, gw.nf->mac().b.begin())) << "not to the gateway's MAC";
    EXPECT_EQ(be32(&f[26]), guest_ip(1));
    EXPECT_EQ(be32(&f[30]), far_ip);
    EXPECT_EQ(uint32_t(f[36]) << 8 | f[37], 5000u);
    EXPECT_EQ(f[42], 7);
    zc_completion c;
    ASSERT_EQ(reap(tx, &c, 1), 1);
    EXPECT_EQ(c.res, 100);

    // Another off-subnet address: the same next hop, no new ARP.
    ASSERT_EQ(send_to(tx, addr_of(0x08080808, 53), 10, 8), 0);
    f = gw.next_udp(5000);
    ASSERT_EQ(f.size(), 42u + 10u);
    EXPECT_EQ(be32(&f[30]), 0x08080808u);
    EXPECT_EQ(gw.arp_answered, 1u);

    // On the subnet: straight to guest 2, the gateway sees nothing of it.
    int rx = rig.open(2);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7301);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    ASSERT_EQ(send_to(tx, addr_of(guest_ip(2), 7301), 20, 9), 0);
    zc_rxd d;
    ASSERT_EQ(zc_recv_wait(rx, &d, 1, 5000), 1);
    EXPECT_EQ(d.len, 20u);
    EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    EXPECT_TRUE(gw.next_udp(200).empty());
    zc_close(rx);
    zc_close(tx);
}

// zc_ping (zc-ping) to an off-subnet address: the echo request goes to
// the gateway's MAC too.
TEST(UapiGateway, PingOffSubnetGoesToTheGateway) {
    uapi_rig rig(true, with_gateway);
    ASSERT_TRUE(rig.ok());
    gateway_guest gw;
    ASSERT_TRUE(gw.start(rig));
    std::atomic<int> rc{1};
    std::thread t([&] {
        sockaddr_in far = addr_of(far_ip, 0);
        rc = zc_ping(rig.g[1].sock.c_str(), &far, 2000);
    });
    std::vector<uint8_t> f = gw.next_udp(5000, 1); // ICMP
    t.join();
    ASSERT_GE(f.size(), 42u);
    EXPECT_TRUE(std::equal(f.begin(), f.begin() + 6, gw.nf->mac().b.begin()));
    EXPECT_EQ(be32(&f[30]), far_ip);
    EXPECT_EQ(f[34], 8); // echo request
    EXPECT_EQ(rc.load(), -ETIMEDOUT); // the gateway forwards nothing
}

TEST(UapiGateway, NoGatewayIsNetUnreachableAtOnce) {
    uapi_rig rig;
    ASSERT_TRUE(rig.ok());
    int tx = rig.open(1);
    ASSERT_GE(tx, 0);
    ASSERT_EQ(send_to(tx, addr_of(far_ip, 5000), 10, 1), 0);
    zc_completion c;
    ASSERT_EQ(reap(tx, &c, 1), 1);
    EXPECT_EQ(c.res, -ENETUNREACH);
    zc_close(tx);
}

// ping(8) without a route fails at once with ENETUNREACH (connect() on its
// socket); zc_ping did so only after its whole timeout.
TEST(UapiGateway, PingOffSubnetWithoutGatewayIsNetUnreachable) {
    uapi_rig rig;
    ASSERT_TRUE(rig.ok());
    sockaddr_in far = addr_of(far_ip, 0);
    EXPECT_EQ(zc_ping(rig.g[1].sock.c_str(), &far, 500), -ENETUNREACH);
    // On the subnet, a silent address is still a timeout, and a guest that
    // answers still answers.
    sockaddr_in nobody = addr_of(0x0a000061, 0);
    EXPECT_EQ(zc_ping(rig.g[1].sock.c_str(), &nobody, 300), -ETIMEDOUT);
    sockaddr_in peer = addr_of(guest_ip(2), 0);
    EXPECT_GE(zc_ping(rig.g[1].sock.c_str(), &peer, 5000), 0);
}

TEST(UapiGateway, GatewayOffTheSubnetOrABadArpQueueIsRefused) {
    uapi_rig rig;
    ASSERT_TRUE(rig.ok());
    stackd::options o;
    o.listen = rig.host.dir() + "/gw.sock";
    o.ip = guest_ip(1);
    o.gateway = 0x0a000100; // 10.0.1.0: not on 10.0.0.0/24
    std::string why;
    auto svc = stackd::service::create(*rig.g[1].port, o, &why);
    ASSERT_FALSE(svc);
    EXPECT_EQ(svc.error(), -EINVAL);
    EXPECT_NE(why.find("gateway"), std::string::npos) << why;
    o.gateway = 0;
    o.unres_qlen = 1025; // more than the ARP cache takes
    svc = stackd::service::create(*rig.g[1].port, o, &why);
    ASSERT_FALSE(svc);
    EXPECT_EQ(svc.error(), -EINVAL);
    EXPECT_NE(why.find("--unres-qlen"), std::string::npos) << why;
}
