// SPDX-License-Identifier: MIT
// zc-stackd's copy pool mode (--pool-export copy, stackd_pool.cpp): the
// application's send buffers are a sealed memfd of zc-stackd's, never
// granted, and each datagram is copied into one of the netfront's own TX
// pages. It is what zc-stackd picks in a Xen guest whose kernel cannot
// export granted pages (no udmabuf); here it runs on the emulated host,
// datagrams verified byte for byte both ways.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

void copy_mode(stackd::options& o) { o.pool_mode = stackd::pool_export::copy; }

// n datagrams of several sizes (0 and 1472 among them) from `from` (guest
// a) to the socket bound to `port` on guest b, each with its own pattern;
// every byte checked at the receiver. Returns how many arrived intact.
int send_verified(uapi_rig& r, int a, int b, uint16_t port, int n) {
    int tx = r.open(a), rx = r.open(b);
    EXPECT_GE(tx, 0);
    EXPECT_GE(rx, 0);
    sockaddr_in bn = addr_of(0, port);
    EXPECT_EQ(zc_bind(rx, &bn), 0);
    sockaddr_in to = addr_of(guest_ip(b), port);
    const uint32_t sizes[] = {0, 1, 17, 18, 64, 300, 1000, 1471, 1472};
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const uint32_t len = sizes[i % 9];
        void* buf = nullptr;
        EXPECT_EQ(zc_buf_alloc(tx, &buf), 0);
        if (!buf) break;
        for (uint32_t k = 0; k < len; k++) static_cast<uint8_t*>(buf)[k] = uint8_t(k * 13 + i + a);
        EXPECT_GE(zc_send(tx, buf, len, &to, 0, uint64_t(i)), 0);
        zc_completion c{};
        EXPECT_EQ(reap(tx, &c, 1), 1);
        EXPECT_EQ(c.res, int32_t(len));
        EXPECT_EQ(c.user_data, uint64_t(i));
        // The buffer is the application's again at the completion: scribble
        // on it; what was sent is the copy.
        std::memset(buf, 0xEE, len);
        EXPECT_EQ(zc_buf_free(tx, buf), 0);
        zc_rxd d{};
        if (recv_some(rx, &d, 1) != 1) break;
        bool same = d.len == len && d.from.sin_addr.s_addr == htonl(guest_ip(a));
        for (uint32_t k = 0; same && k < len; k++)
            same = static_cast<const uint8_t*>(d.data)[k] == uint8_t(k * 13 + i + a);
        EXPECT_TRUE(same) << "datagram " << i << " of " << len << " bytes";
        ok += same;
        EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    }
    zc_close(tx);
    zc_close(rx);
    return ok;
}

} // namespace

TEST(UapiPoolCopy, DatagramsBothWaysArriveIntactAndAreCountedAsCopies) {
    uapi_rig r(true, copy_mode);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.g[1].svc->pool_mode(), stackd::pool_export::copy);
    EXPECT_EQ(send_verified(r, 1, 2, 7201, 90), 90);
    EXPECT_EQ(send_verified(r, 2, 1, 7202, 90), 90);
    // Every datagram went through the vif as a copy in the netfront's TX
    // pages (the stats are published at the end of a loop iteration).
    for (int i = 0; i < 300 && (r.g[1].svc->stats().tx_copied < 90 || r.g[2].svc->stats().tx_copied < 90); i++)
        ::usleep(10000);
    EXPECT_EQ(r.g[1].svc->stats().tx_copied, 90u);
    EXPECT_EQ(r.g[2].svc->stats().tx_copied, 90u);
}

TEST(UapiPoolCopy, GrantModeStaysZeroCopy) {
    uapi_rig r(true, [](stackd::options& o) { o.pool_mode = stackd::pool_export::auto_; });
    ASSERT_TRUE(r.ok());
    // The emulated host exports granted pages: auto picks grant.
    ASSERT_EQ(r.g[1].svc->pool_mode(), stackd::pool_export::grant);
    EXPECT_EQ(send_verified(r, 1, 2, 7203, 18), 18);
    ::usleep(50000);
    EXPECT_EQ(r.g[1].svc->stats().tx_copied, 0u);
}

// A socket costs no grant in copy mode: the emulated host gives a guest 64
// exportable regions (stack/hv/emu/layout.hpp), which bound grant mode's
// sockets; copy mode opens more, and the last one carries traffic.
TEST(UapiPoolCopy, SocketsNeedNoGrantsOfTheirOwn) {
    auto many = [](stackd::pool_export m) {
        return [m](stackd::options& o) {
            o.pool_mode = m;
            o.max_sockets = 100;
            o.max_sockets_per_app = 100;
        };
    };
    const int want = 80;
    for (auto m : {stackd::pool_export::grant, stackd::pool_export::copy}) {
        SCOPED_TRACE(stackd::pool_export_name(m));
        uapi_rig r(true, many(m));
        ASSERT_TRUE(r.ok());
        std::vector<int> socks;
        int refused = 0;
        for (int i = 0; i < want; i++) {
            int s = r.open(1, ZC_SOCK_STRICT, 2, 2);
            if (s < 0) {
                refused = s;
                break;
            }
            socks.push_back(s);
        }
        if (m == stackd::pool_export::grant) {
            EXPECT_LT(socks.size(), size_t(want)) << "grant mode should run out of exportable regions";
            EXPECT_NE(refused, 0);
        } else {
            EXPECT_EQ(socks.size(), size_t(want)) << std::strerror(-refused);
            // The last socket works.
            int rx = r.open(2, ZC_SOCK_STRICT, 2, 2);
            ASSERT_GE(rx, 0);
            sockaddr_in bn = addr_of(0, 7204), to = addr_of(guest_ip(2), 7204);
            ASSERT_EQ(zc_bind(rx, &bn), 0);
            void* buf = nullptr;
            ASSERT_EQ(zc_buf_alloc(socks.back(), &buf), 0);
            std::memcpy(buf, "eighty", 6);
            ASSERT_GE(zc_send(socks.back(), buf, 6, &to, 0, 1), 0);
            zc_rxd d{};
            ASSERT_EQ(recv_some(rx, &d, 1), 1);
            ASSERT_EQ(d.len, 6u);
            EXPECT_EQ(std::memcmp(d.data, "eighty", 6), 0);
            zc_close(rx);
        }
        for (int s : socks) zc_close(s);
    }
}
