// SPDX-License-Identifier: MIT
// What zc.h promises about a buffer's bytes, checked against the stack:
// the headroom in front of a send buffer's payload is left alone unless
// zc-stackd runs with --tx-headers headroom, and a datagram longer than
// what a socket takes (its receive buffer, or zc_socket_opts.rx_max)
// arrives cut and flagged with its full length (ZC_RXD_F_TRUNC, as
// recvmsg(2)'s MSG_TRUNC), never silently cut or dropped; a socket refused
// for memory says which limit and what to change. Two guests' zc-stackd
// through zc-netback on the emulated host.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <vector>

#include "capture_stderr.hpp"
#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

// Sends one 100-byte datagram from p.tx with a pattern in the buffer's
// headroom; returns the headroom as it is after the completion.
std::vector<uint8_t> headroom_after_send(pair& p) {
    void* b = nullptr;
    EXPECT_EQ(zc_buf_alloc(p.tx, &b), 0);
    if (!b) return {};
    uint8_t* head = static_cast<uint8_t*>(b) - p.ti.headroom;
    std::memset(head, 0xa5, p.ti.headroom);
    std::memset(b, 'x', 100);
    EXPECT_EQ(zc_send(p.tx, b, 100, nullptr, 0, 1), ZC_SENT_ZEROCOPY);
    zc_completion c{};
    EXPECT_EQ(reap(p.tx, &c, 1), 1);
    EXPECT_EQ(c.res, 100);
    zc_rxd d{};
    EXPECT_EQ(zc_recv_wait(p.rx, &d, 1, 5000), 1);
    EXPECT_EQ(d.len, 100u);
    if (d.data) {
        EXPECT_EQ(zc_rx_release(p.rx, d.data), 0);
    }
    std::vector<uint8_t> out(head, head + p.ti.headroom);
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
    return out;
}

uint16_t ip_csum(const uint8_t* p, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return uint16_t(~s);
}

// Ethernet + IPv4 + UDP (no UDP checksum, RFC 768) with `payload` bytes
// of i * 7 + 3 from 10.0.0.1:sport to 10.0.0.2:dport.
std::vector<uint8_t> udp_frame(const mac_addr& dst, const mac_addr& src, uint16_t sport, uint16_t dport,
                               uint32_t payload) {
    std::vector<uint8_t> f(14 + 20 + 8 + payload);
    std::memcpy(f.data(), dst.b.data(), 6);
    std::memcpy(f.data() + 6, src.b.data(), 6);
    f[12] = 0x08;
    uint8_t* ip = f.data() + 14;
    const uint32_t tot = 20 + 8 + payload;
    ip[0] = 0x45;
    ip[2] = uint8_t(tot >> 8);
    ip[3] = uint8_t(tot);
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    const uint8_t a[8] = {10, 0, 0, 1, 10, 0, 0, 2};
    std::memcpy(ip + 12, a, 8);
    const uint16_t c = ip_csum(ip, 20);
    ip[10] = uint8_t(c >> 8);
    ip[11] = uint8_t(c);
    uint8_t* u = ip + 20;
    u[0] = uint8_t(sport >> 8);
    u[1] = uint8_t(sport);
    u[2] = uint8_t(dport >> 8);
    u[3] = uint8_t(dport);
    u[4] = uint8_t((8 + payload) >> 8);
    u[5] = uint8_t(8 + payload);
    for (uint32_t i = 0; i < payload; i++) u[8 + i] = uint8_t(i * 7 + 3);
    return f;
}

} // namespace

// zc.h: the headroom is never the application's; the stack writes headers
// there only when zc-stackd runs with --tx-headers headroom (by default
// they are built in a page of zc-stackd's own).
TEST(UapiContract, HeadroomIsWrittenOnlyWithTxHeadersHeadroom) {
    {
        uapi_rig r; // --tx-headers private, the default
        ASSERT_TRUE(r.ok());
        pair p(r, 7501);
        const auto h = headroom_after_send(p);
        ASSERT_EQ(h.size(), p.ti.headroom);
        EXPECT_EQ(h, std::vector<uint8_t>(h.size(), 0xa5)) << "headers were written into the headroom";
    }
    {
        uapi_rig r(false); // --tx-headers headroom
        ASSERT_TRUE(r.ok());
        pair p(r, 7502);
        const auto h = headroom_after_send(p);
        ASSERT_GE(h.size(), 8u);
        // The UDP header right in front of the payload: destination port
        // and length (8 + 100).
        const uint8_t* udp = h.data() + h.size() - 8;
        EXPECT_EQ(udp[2] << 8 | udp[3], 7502);
        EXPECT_EQ(udp[4] << 8 | udp[5], 108);
    }
}

// recv(2) into a buffer of N bytes takes the first N bytes of a longer
// datagram and says so (MSG_TRUNC in recvmsg's msg_flags, the full length
// with the MSG_TRUNC flag). zc_socket_opts.rx_max is that N.
TEST(UapiContract, DatagramLongerThanRxMaxArrivesCutWithItsFullLength) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.rx_max = 100;
    o.service = r.g[2].sock.c_str();
    int rx = zc_socket(&o);
    ASSERT_GE(rx, 0);
    int tx = r.open(1);
    ASSERT_GE(tx, 0);
    sockaddr_in b = addr_of(0, 7511), to = addr_of(guest_ip(2), 7511);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    for (uint32_t len : {300u, 100u, 1472u, 7u}) {
        SCOPED_TRACE(len);
        void* buf = nullptr;
        ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
        for (uint32_t i = 0; i < len; i++) static_cast<uint8_t*>(buf)[i] = uint8_t(i + len);
        ASSERT_EQ(zc_send(tx, buf, len, &to, 0, len), ZC_SENT_ZEROCOPY);
        zc_completion c{};
        ASSERT_EQ(reap(tx, &c, 1), 1);
        EXPECT_EQ(zc_buf_free(tx, buf), 0);
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(rx, &d, 1, 5000), 1);
        const uint32_t want = len < 100 ? len : 100;
        EXPECT_EQ(d.len, want);
        EXPECT_EQ(ZC_RXD_FULL_LEN(&d), len);
        EXPECT_EQ((d.flags & ZC_RXD_F_TRUNC) != 0, len > 100);
        const auto* got = static_cast<const uint8_t*>(d.data);
        for (uint32_t i = 0; i < d.len; i++) ASSERT_EQ(got[i], uint8_t(i + len)) << i;
        EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    }
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(rx, &st), 0);
    EXPECT_EQ(st.rx_drops, 0u);
    EXPECT_EQ(st.rx_packets, 4u);
    EXPECT_EQ(st.rx_truncated, 2u); // 300 and 1472 came cut to 100
    // A caller compiled against 1.0/1.1 (no rx_truncated) is still served,
    // and nothing past its struct is written.
    struct {
        zc_stats st;
        uint64_t canary;
    } old{};
    std::memset(&old, 0xa5, sizeof old);
    old.st.sz = ZC_STATS_SZ_1_0;
    ASSERT_EQ(zc_socket_stats(rx, &old.st), 0);
    EXPECT_EQ(old.st.rx_packets, 4u);
    EXPECT_EQ(old.st.rx_truncated, 0xa5a5a5a5a5a5a5a5u);
    old.st.sz = ZC_STATS_SZ_1_0 - 1;
    EXPECT_EQ(zc_socket_stats(rx, &old.st), -EINVAL);
    EXPECT_EQ(zc_close(rx), 0);
    EXPECT_EQ(zc_close(tx), 0);
}

// A jumbo frame from the vif carries a datagram longer than a receive
// buffer (1984 payload bytes): the socket gets its first 1984 bytes,
// flagged with the full length, instead of a silent drop. The vifs have a
// jumbo MTU (9000); guest 1's service loop is stopped and its netfront
// sends the frame by hand.
TEST(UapiContract, JumboDatagramLongerThanTheBufferArrivesCutNotDropped) {
    uapi_rig r(true, {}, 9000);
    ASSERT_TRUE(r.ok());
    int rx = r.open(2);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7521);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    zc_pool_info pi{};
    pi.sz = sizeof pi;
    ASSERT_EQ(zc_pool_mmap(rx, &pi), 0);
    const uint32_t cap = pi.buf_size - pi.headroom;
    r.g[1].halt();
    link::netfront& nf = r.g[1].svc->link();
    ASSERT_TRUE(nf.backend_sg()) << "a frame over one page needs feature-sg";
    const auto f = udp_frame(r.g[2].svc->link().mac(), nf.mac(), 7520, 7521, 3000);
    ASSERT_EQ(nf.send(f.data(), f.size()), 0);
    zc_rxd d{};
    ASSERT_EQ(zc_recv_wait(rx, &d, 1, 5000), 1);
    EXPECT_EQ(d.len, cap);
    EXPECT_TRUE(d.flags & ZC_RXD_F_TRUNC);
    EXPECT_EQ(ZC_RXD_FULL_LEN(&d), 3000u);
    EXPECT_EQ(ntohs(d.from.sin_port), 7520);
    const auto* got = static_cast<const uint8_t*>(d.data);
    for (uint32_t i = 0; i < d.len; i++) ASSERT_EQ(got[i], uint8_t(i * 7 + 3)) << i;
    EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    auto socks = stackd::query_sockets(r.g[2].sock);
    ASSERT_TRUE(socks);
    ASSERT_EQ(socks->size(), 1u);
    EXPECT_EQ((*socks)[0].c.rx_truncated, 1u);
    EXPECT_EQ((*socks)[0].c.rx_drops, 0u);
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(rx, &st), 0);
    EXPECT_EQ(st.rx_truncated, 1u);
    EXPECT_EQ(zc_close(rx), 0);
}

// zc_socket()'s -ENOSPC (the guest's grant budget, --max-pool-pages) and
// -ENOMEM (the application's pool pages, --max-pool-pages-per-app) come
// with a log line naming the limit and the fix, and the fix works: a
// smaller socket (zc_socket_opts.tx_bufs/rx_bufs) still opens.
TEST(UapiContract, SocketRefusedForMemoryNamesTheLimitAndTheFix) {
    uapi_rig r(true, [](stackd::options& o) {
        o.max_pool_pages = 300;          // granted pool pages (send + receive) of the guest
        o.max_pool_pages_per_app = 500;  // pool pages of one process
    });
    ASSERT_TRUE(r.ok());
    int a = r.open(1); // 256 + 256 buffers: 256 granted pages
    ASSERT_GE(a, 0);
    int b = 0, c = 0, d = 0;
    const std::string log = capture_stderr([&] {
        b = r.open(1, ZC_SOCK_STRICT, 256, 2); // 129 more granted: past 300
        c = r.open(1, ZC_SOCK_STRICT, 2, 64);  // 33 more, 289 in all: fits both
        d = r.open(1);                         // 256 more of the app's: past 500
    });
    EXPECT_EQ(b, -ENOSPC);
    EXPECT_GE(c, 0) << "a smaller socket must still open";
    EXPECT_EQ(d, -ENOMEM);
    EXPECT_NE(log.find("socket of 256+2 buffers (516 KiB of pool) refused (ENOSPC)"), std::string::npos) << log;
    EXPECT_NE(log.find("its 129 pool pages would pass the guest's grant budget, 256 of --max-pool-pages 300"),
              std::string::npos) << log;
    EXPECT_NE(log.find("socket of 256+256 buffers (1024 KiB of pool) refused (ENOMEM)"), std::string::npos) << log;
    EXPECT_NE(log.find("the application's pools would be 545 pages, --max-pool-pages-per-app 500"),
              std::string::npos) << log;
    EXPECT_EQ(count_of(log, "zc_socket_opts.tx_bufs/rx_bufs"), 2u) << log;
    EXPECT_EQ(zc_close(a), 0);
    if (c >= 0) {
        EXPECT_EQ(zc_close(c), 0);
    }
}
