// SPDX-License-Identifier: MIT
// A hostile sender on the direct path toward zc-stackd (docs/ARCHITECTURE.md,
// "Direct path (guest to guest)"): a third guest's raw netfront, on the
// extension, sends descriptors zc-netback lets through (headers that pass
// its checks, the right destination) but whose payload grant is not one the
// receiver may map, or whose headers are not UDP. zc-stackd drops them,
// counted, gives every cookie back (the forger's sends complete), and goes
// on serving its sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <arpa/inet.h>

extern "C" {
#include <xen/io/netif.h>
}

#include "proto/host.hpp"
#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

bool until(link::netfront& nf, const std::function<bool()>& pred, int ms = 5000) {
    for (int i = 0; i < ms / 5; i++) {
        (void)nf.process_events();
        if (pred()) return true;
        (void)nf.wait(5);
    }
    return pred();
}

} // namespace

TEST(UapiDirectHostile, ForgedGrantsAndHeadersAreDroppedAndReleased) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    // The forger: domain 3, a raw netfront on the extension.
    auto port = r.host.domain(3);
    ASSERT_TRUE(port);
    netback::vif_spec spec;
    spec.frontend = 3;
    std::string why;
    ASSERT_EQ(netback::vif_create(*r.xs0, spec, &why), 0) << why;
    link::netfront_options o;
    o.zc_direct = true;
    auto nf = link::netfront::connect(*port, o, &why);
    ASSERT_TRUE(nf) << why;
    link::netfront& f = **nf;
    const mac_addr g2 = r.g[2].svc->link().mac();
    ASSERT_TRUE(until(f, [&] { return bool(f.peer_domid(g2)); }));

    // A socket on guest 2 the forged datagrams are addressed to.
    int rx = r.open(2);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7201);
    ASSERT_EQ(zc_bind(rx, &b), 0);

    proto::host_config hc;
    hc.mac = f.mac();
    hc.ip = proto::ipv4_addr{guest_ip(3)};
    auto h = proto::host::create(hc);
    ASSERT_TRUE(h);
    proto::udp_flow fl;
    fl.dst_mac = g2;
    fl.dst_ip = proto::ipv4_addr{guest_ip(2)};
    fl.src_port = 5000;
    fl.dst_port = 7201;
    uint8_t udp[42];
    proto::tx_headers th;
    ASSERT_EQ(h->udp_headers(std::span<uint8_t>(udp, 42), 500, 0, fl, proto::tx_csum::offload, th), 0);
    link::tx_offload off{};
    off.csum_blank = true;
    // Headers that are not UDP: an ARP-typed frame of 42 bytes.
    uint8_t arp[42];
    std::memcpy(arp, udp, 42);
    arp[12] = 0x08, arp[13] = 0x06;

    const auto before = r.g[2].svc->stats();
    const int n = 100;
    // Grants that do not exist or are not ours to give: refused maps.
    for (int i = 0; i < n; i++) {
        const bool not_udp = i % 10 == 0;
        int rc = -EAGAIN;
        for (int t = 0; rc == -EAGAIN && t < 1000; t++) {
            rc = f.send_direct(not_udp ? arp : udp, 42, 2, hv::gref_t(100 + i), 0, 500, uint64_t(i), 0,
                               not_udp ? nullptr : &off);
            if (rc == -EAGAIN) (void)f.wait(5);
        }
        ASSERT_EQ(rc, 0) << i;
    }
    // Every one completes: zc-stackd released it (OKAY) or zc-netback
    // refused it (the receiver's ring was short: ERROR); none hangs.
    uint32_t done = 0, okay = 0;
    EXPECT_TRUE(until(f, [&] {
        link::tx_done d[64];
        uint32_t k = f.tx_reap_granted(d, 64);
        for (uint32_t i = 0; i < k; i++) okay += d[i].status == NETIF_RSP_OKAY;
        done += k;
        return done == uint32_t(n);
    })) << done;
    const auto after = r.g[2].svc->stats();
    EXPECT_EQ(after.rx_direct - before.rx_direct, okay);
    EXPECT_EQ(after.rx_direct_bad - before.rx_direct_bad, okay);
    EXPECT_GT(okay, 0u);
    EXPECT_EQ(after.rx_udp, before.rx_udp); // nothing delivered
    EXPECT_EQ(after.direct_maps, before.direct_maps);

    // Guest 2 still serves its sockets: an ordinary datagram from guest 1.
    int tx = r.open(1);
    ASSERT_GE(tx, 0);
    sockaddr_in to = addr_of(guest_ip(2), 7201);
    ASSERT_EQ(zc_connect(tx, &to), 0);
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
    std::memset(buf, 0x5a, 300);
    ASSERT_GE(zc_send(tx, buf, 300, nullptr, 0, 1), 0);
    zc_rxd d[4];
    ASSERT_EQ(recv_some(rx, d, 4), 1);
    EXPECT_EQ(d[0].len, 300u);
    (void)zc_rx_release(rx, d[0].data);
    zc_close(tx);
    zc_close(rx);
    (void)f.disconnect();
}
