// SPDX-License-Identifier: MIT
// The zc socket API (zc.h) against two guests' zc-stackd through zc-netback
// on the emulated host: the data paths, and every error path of every call.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <sys/epoll.h>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

void fill(uint8_t* p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = uint8_t(x >> 16);
    }
}

bool check(const uint8_t* p, size_t n, uint32_t seed) {
    std::vector<uint8_t> want(n);
    fill(want.data(), n, seed);
    return std::memcmp(p, want.data(), n) == 0;
}

class Uapi : public ::testing::Test {
protected:
    static void SetUpTestSuite() { rig = new uapi_rig; }
    static void TearDownTestSuite() {
        delete rig;
        rig = nullptr;
    }
    void SetUp() override { ASSERT_TRUE(rig && rig->ok()); }
    static uapi_rig* rig;
};
uapi_rig* Uapi::rig = nullptr;

// A connected pair: sender on guest 1, receiver bound on guest 2.
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

} // namespace

TEST_F(Uapi, ZeroCopySendCompletesAndArrivesIntact) {
    pair p(*rig, 7001);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    fill(static_cast<uint8_t*>(b), 1000, 1);
    ASSERT_EQ(zc_send(p.tx, b, 1000, nullptr, 0, 42), ZC_SENT_ZEROCOPY);
    // In flight: neither reusable nor freeable until its completion.
    EXPECT_EQ(zc_send(p.tx, b, 1000, nullptr, 0, 43), -EBUSY);
    EXPECT_EQ(zc_buf_free(p.tx, b), -EBUSY);
    zc_completion c[4];
    ASSERT_EQ(reap(p.tx, c, 1), 1);
    EXPECT_EQ(c[0].user_data, 42u);
    EXPECT_EQ(c[0].res, 1000);
    EXPECT_EQ(c[0].flags, 0u);

    zc_rxd d[4];
    ASSERT_EQ(recv_some(p.rx, d, 4), 1);
    EXPECT_EQ(d[0].len, 1000u);
    EXPECT_TRUE(check(static_cast<const uint8_t*>(d[0].data), 1000, 1));
    EXPECT_EQ(d[0].from.sin_addr.s_addr, htonl(guest_ip(1)));
    EXPECT_NE(d[0].from.sin_port, 0);
    const uint8_t* rb = static_cast<const uint8_t*>(d[0].data);
    EXPECT_TRUE(rb >= static_cast<uint8_t*>(p.ri.base) && rb < static_cast<uint8_t*>(p.ri.base) + p.ri.size);
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), 0);
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), -EALREADY); // double release

    // Back to the application after the completion: reuse, then free.
    ASSERT_EQ(zc_send(p.tx, b, 10, nullptr, 0, 44), ZC_SENT_ZEROCOPY);
    ASSERT_EQ(reap(p.tx, c, 1), 1);
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
    EXPECT_EQ(zc_buf_free(p.tx, b), -EALREADY); // double free

    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(p.tx, &st), 0);
    EXPECT_EQ(st.zc_sends, 2u);
    EXPECT_EQ(st.copied_sends, 0u);
    EXPECT_EQ(st.completions, 2u);
    EXPECT_EQ(st.tx_bytes, 1010u);
    ASSERT_EQ(zc_socket_stats(p.rx, &st), 0);
    EXPECT_GE(st.rx_packets, 1u);
}
