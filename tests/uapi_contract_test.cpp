// SPDX-License-Identifier: MIT
// What zc.h promises about a buffer's bytes, checked against the stack:
// the headroom in front of a send buffer's payload is left alone unless
// zc-stackd runs with --tx-headers headroom. Two guests' zc-stackd through
// zc-netback on the emulated host.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <vector>

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
