// SPDX-License-Identifier: MIT
// Checksum-blank frames to a frontend that cannot complete checksums
// (netback/offload.hpp, "Destination side"; docs/ARCHITECTURE.md,
// "Counters"): zc-netback completes the checksum, as Linux's host stack
// does in front of such a vif (skb_checksum_help), and counts it.
#include <gtest/gtest.h>

#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "l4_frames.hpp"
#include "netback_datapath_fixture.hpp"

using namespace zc;
using namespace zc::test;
using namespace zc::test::netback_dp;

namespace {

// feature-no-csum-offload (IPv4) and no feature-ipv6-csum-offload: a
// checksum-blank TCP or UDP frame arrives with its checksum completed and
// no checksum flags (CHECKSUM_NONE), whatever its size (a jumbo frame spans
// several bounce buffers); a GSO frame, which would need segmenting, is
// still dropped and counted; a frame with its checksum done goes through
// untouched.
TEST_F(NetbackDatapath, Item7_ChecksumBlankToNoCsumOffloadFrontendIsCompleted) {
    start();
    auto* a = guest(1);
    auto* b = guest(2, false, true, rx_pages, [](netback::vif_params& p) {
        p.feature_no_csum_offload = true;
        p.feature_ipv6_csum_offload = false;
        p.mtu = 9000;
    });
    ASSERT_TRUE(a && b);
    uint64_t completed = 0;
    for (bool v6 : {false, true}) {
        for (uint8_t proto : {uint8_t(6), uint8_t(17)}) {
            for (uint32_t payload : {300u, 8900u}) {
                SCOPED_TRACE(std::string(v6 ? "IPv6 " : "IPv4 ") + (proto == 6 ? "TCP " : "UDP ") +
                             std::to_string(payload));
                auto f = l4_frame(b->mac.b.data(), a->mac.b.data(), v6, proto, payload - (v6 ? 20 : 0));
                ASSERT_FALSE(l4_checksum_ok(f)) << "the field starts out wrong";
                auto ids = a->send(f, {}, 0, 0, 0, NETTXF_csum_blank | NETTXF_data_validated);
                std::vector<netif_tx_response> tr;
                ASSERT_TRUE(a->wait_tx(ids.size(), tr));
                EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
                std::vector<rx_packet> rx;
                ASSERT_TRUE(b->wait_rx(1, rx)) << "not delivered: drop_no_csum " << info(1).stats.drop_no_csum;
                ASSERT_EQ(rx[0].data.size(), f.size());
                EXPECT_TRUE(l4_checksum_ok(rx[0].data)) << "checksum not completed";
                EXPECT_EQ(rx[0].flags0 & (NETRXF_csum_blank | NETRXF_data_validated), 0)
                    << "a completed frame carries no checksum flags";
                const size_t l4 = 14 + (v6 ? 40 : 20), field = l4 + (proto == 6 ? 16 : 6);
                auto want = f;
                want[field] = rx[0].data[field];
                want[field + 1] = rx[0].data[field + 1];
                EXPECT_EQ(rx[0].data, want) << "only the checksum field changes";
                ++completed;
            }
        }
    }
    EXPECT_EQ(info(2).stats.csum_completed, completed);
    EXPECT_EQ(info(2).stats.queued, 0u) << "RX had room: bounced for the checksum, not queued";
    EXPECT_EQ(info(1).stats.drop_no_csum, 0u);

    // GSO: dropped and counted on the sender.
    auto gso = make_frame(b->mac, a->mac, 9000, 10);
    stamp_tcp_headers(gso, false);
    auto ids = a->send(gso, {}, 0, XEN_NETIF_GSO_TYPE_TCPV4, 1448, NETTXF_csum_blank | NETTXF_data_validated);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    EXPECT_TRUE(eventually([&] { return info(1).stats.drop_no_csum == 1; })) << info(1).stats.drop_no_csum;

    // Checksum already done: delivered as sent, data_validated kept.
    auto f = l4_frame(b->mac.b.data(), a->mac.b.data(), false, 6, 400);
    ids = a->send(f, {}, 0, 0, 0, NETTXF_data_validated);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, f);
    EXPECT_EQ(rx[0].flags0 & NETRXF_data_validated, NETRXF_data_validated);
    EXPECT_EQ(info(2).stats.csum_completed, completed);
}

} // namespace
