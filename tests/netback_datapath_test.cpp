// SPDX-License-Identifier: MIT
// zc-netback's data path against a raw frontend: guest domains (in this
// process) grant their ring and buffer pages to dom0 and write netif requests
// by hand, so that a test can be as hostile as it likes. dom0 runs the
// datapath. Every rule test names the Linux rule (and XSA) it checks.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "capture_stderr.hpp"
#include "l4_frames.hpp"
#include "netback/offload.hpp"
#include "netback_datapath_fixture.hpp"
#include "netns_veth.hpp"

using namespace zc;
using zc::mac_addr;
using namespace zc::test::netback_dp;

namespace {

// ---- VM to VM ------------------------------------------------------------------

void exchange_all_sizes(NetbackDatapath& t, raw_frontend& a, raw_frontend& b) {
    const uint32_t sizes[] = {60, 64, 128, 129, 1514, 2000, 4096, 4097, 9000, 32768, 65535};
    uint64_t expect_slots[2] = {0, 0};
    uint32_t seed = 1;
    for (uint32_t len : sizes) {
        for (int dir = 0; dir < 2; ++dir) {
            raw_frontend& from = dir ? b : a;
            raw_frontend& to = dir ? a : b;
            auto f = make_frame(to.mac, from.mac, len, seed++);
            // SG layout: a short first slot at an offset, then full pages.
            std::vector<uint16_t> sizes_v;
            const uint16_t off = len > 1000 ? 24 : 0;
            uint32_t left = len;
            uint32_t first = std::min<uint32_t>(left, len > 1000 ? 1000 : left);
            sizes_v.push_back(uint16_t(first));
            left -= first;
            while (left) {
                uint32_t k = std::min<uint32_t>(left, hv::page_size);
                sizes_v.push_back(uint16_t(k));
                left -= k;
            }
            const bool gso = len > 1514;
            const uint8_t gtype = dir ? XEN_NETIF_GSO_TYPE_TCPV6 : XEN_NETIF_GSO_TYPE_TCPV4;
            const uint16_t txflags = (seed % 2) ? NETTXF_csum_blank : NETTXF_data_validated;
            if (gso || (txflags & NETTXF_csum_blank)) stamp_tcp_headers(f, dir && len >= 74);
            auto ids = from.send(f, sizes_v, off, gso ? gtype : 0, gso ? 1448 : 0, txflags);
            std::vector<netif_tx_response> tr;
            ASSERT_TRUE(from.wait_tx(ids.size(), tr)) << len;
            ASSERT_EQ(tr.size(), ids.size());
            for (size_t i = 0; i < tr.size(); ++i) {
                EXPECT_EQ(tr[i].id, ids[i]);
                EXPECT_EQ(tr[i].status, NETIF_RSP_OKAY);
            }
            std::vector<rx_packet> rx;
            ASSERT_TRUE(to.wait_rx(1, rx)) << len;
            ASSERT_EQ(rx.size(), 1u);
            EXPECT_EQ(rx[0].error, 0);
            EXPECT_TRUE(rx[0].data == f) << "payload differs at size " << len;
            // Linux xenvif_rx_next_chunk: every RX page filled before the next.
            const uint32_t pages = (len + uint32_t(hv::page_size) - 1) / uint32_t(hv::page_size);
            EXPECT_EQ(rx[0].data_slots, pages) << "RX pages filled at size " << len;
            expect_slots[dir ? 0 : 1] += pages;
            EXPECT_EQ(rx[0].has_gso, gso);
            if (gso) {
                EXPECT_TRUE(rx[0].flags0 & NETRXF_extra_info);
                EXPECT_EQ(rx[0].gso.u.gso.type, gtype);
                EXPECT_EQ(rx[0].gso.u.gso.size, 1448);
            }
            // Checksum flags carried as Linux maps them (xenvif_rx_data_slot).
            if (txflags & NETTXF_csum_blank)
                EXPECT_EQ(rx[0].flags0 & (NETRXF_csum_blank | NETRXF_data_validated),
                          NETRXF_csum_blank | NETRXF_data_validated);
            else
                EXPECT_EQ(rx[0].flags0 & (NETRXF_csum_blank | NETRXF_data_validated), NETRXF_data_validated);
        }
    }
    auto ia = t.info(a.dom), ib = t.info(b.dom);
    EXPECT_EQ(ia.stats.rx_slots, expect_slots[0]);
    EXPECT_EQ(ib.stats.rx_slots, expect_slots[1]);
    // The one copy: gref->gref segments, each source slot split at most once
    // per RX page boundary it straddles; frames of at most 128 bytes in one
    // slot (60, 64, 128) go from the header copy that read them whole.
    EXPECT_EQ(ia.stats.hdr_payload_segments, 3u);
    EXPECT_EQ(ib.stats.hdr_payload_segments, 3u);
    EXPECT_GE(ia.stats.vm_to_vm_segments + 3, ia.stats.tx_slots);
    EXPECT_LE(ia.stats.vm_to_vm_segments + 3, ia.stats.tx_slots + ib.stats.rx_slots);
    EXPECT_GE(ib.stats.vm_to_vm_segments + 3, ib.stats.tx_slots);
    EXPECT_LE(ib.stats.vm_to_vm_segments + 3, ib.stats.tx_slots + ia.stats.rx_slots);
    EXPECT_EQ(ia.stats.fallback_copies, 0u);
    EXPECT_EQ(ib.stats.fallback_copies, 0u);
    EXPECT_EQ(ia.stats.header_copy_segments, ia.stats.tx_packets);
    // Every segment is a header copy or the one VM-to-VM copy.
    EXPECT_EQ(ia.stats.grant_copy_segments,
              ia.stats.header_copy_segments + ia.stats.vm_to_vm_segments + ia.stats.hdr_payload_segments);
    EXPECT_EQ(ia.stats.tx_packets, std::size(sizes));
    EXPECT_EQ(ib.stats.rx_packets, std::size(sizes));
    EXPECT_EQ(ia.stats.drop_malformed + ia.stats.drop_copy_error + ia.stats.drop_rx_full, 0u);
}

TEST_F(NetbackDatapath, TwoVifsExchangeFrames60BTo64KiBWithOneCopyPerSlot) {
    start();
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    exchange_all_sizes(*this, *a, *b);
}

TEST_F(NetbackDatapath, TwoWorkersSplitEventChannelsExchangeFrames) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto a = guest(1, true), b = guest(2, true);
    ASSERT_TRUE(a && b);
    exchange_all_sizes(*this, *a, *b);
}

// Both directions at once from two threads, two workers: RX rings are filled
// by the worker of the other vif (the cross-worker path).
TEST_F(NetbackDatapath, ConcurrentBidirectionalTrafficAcrossWorkers) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    constexpr int n = 200;
    auto run = [&](raw_frontend& me, raw_frontend& peer, uint32_t base, std::atomic<int>& ok) {
        std::vector<rx_packet> got;
        for (int i = 0; i < n; ++i) {
            const uint32_t len = 60 + (uint32_t(i) * 977u) % 9000u;
            auto f = make_frame(peer.mac, me.mac, len, base + uint32_t(i));
            auto ids = me.send(f);
            std::vector<netif_tx_response> tr;
            if (!me.wait_tx(ids.size(), tr)) return;
            me.wait_rx(0, got, 0);
        }
        if (!me.wait_rx(n, got, 10000)) return;
        int good = 0;
        for (int i = 0; i < n; ++i) {
            const uint32_t len = 60 + (uint32_t(i) * 977u) % 9000u;
            good += got[size_t(i)].data == make_frame(me.mac, peer.mac, len, (base ^ 1000u) + uint32_t(i));
        }
        ok = good;
    };
    std::atomic<int> ok_a{0}, ok_b{0};
    std::thread ta([&] { run(*a, *b, 0, ok_a); });
    std::thread tb([&] { run(*b, *a, 1000, ok_b); });
    ta.join();
    tb.join();
    EXPECT_EQ(ok_a.load(), n);
    EXPECT_EQ(ok_b.load(), n);
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
    EXPECT_EQ(info(1).stats.vm_to_vm_segments + info(1).stats.hdr_payload_segments, info(2).stats.rx_slots);
}

// Each new queue goes to the worker serving the fewest: two vifs land on
// different workers, and a vif that replaces a removed one takes the freed
// worker (a round-robin counter in connect order would pair it with the
// survivor and leave a worker idle).
TEST_F(NetbackDatapath, QueuesSpreadOverWorkersAlsoAfterARemoval) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(info(1).queue_state.size(), 1u);
    ASSERT_EQ(info(2).queue_state.size(), 1u);
    EXPECT_NE(info(1).queue_state[0].worker, info(2).queue_state[0].worker);
    ASSERT_EQ(dp->remove_vif(2, 0), 0);
    auto c = guest(3);
    ASSERT_TRUE(c);
    EXPECT_NE(info(1).queue_state[0].worker, info(3).queue_state[0].worker);
    exchange_all_sizes(*this, *a, *c); // and the two workers carry traffic between them
}

// ---- switch ----------------------------------------------------------------------

TEST_F(NetbackDatapath, UnknownUnicastFloodsLearnedMacUnicasts) {
    start();
    auto a = guest(1, false, false), b = guest(2, false, false), c = guest(3, false, false);
    ASSERT_TRUE(a && b && c);
    const mac_addr x = {0x02, 0xaa, 0, 0, 0, 0x42}; // C will use this MAC
    // Unknown unicast: flooded to every other vif, each with its own copy.
    auto f1 = make_frame(x, a->mac, 300, 1);
    a->send(f1);
    std::vector<rx_packet> rb, rc;
    ASSERT_TRUE(b->wait_rx(1, rb));
    ASSERT_TRUE(c->wait_rx(1, rc));
    EXPECT_EQ(rb[0].data, f1);
    EXPECT_EQ(rc[0].data, f1);
    // C speaks from X: learned.
    auto f2 = make_frame(bcast, x, 100, 2);
    c->send(f2);
    std::vector<rx_packet> ra;
    ASSERT_TRUE(a->wait_rx(1, ra));
    rb.clear();
    ASSERT_TRUE(b->wait_rx(1, rb));
    EXPECT_EQ(rb[0].data, f2) << "broadcast floods";
    // Now unicast to X reaches C only; then a frame for B (learned from
    // nothing yet: floods) must be the next thing B sees.
    auto f3 = make_frame(x, a->mac, 500, 3);
    a->send(f3);
    rc.clear();
    ASSERT_TRUE(c->wait_rx(1, rc));
    EXPECT_EQ(rc[0].data, f3);
    // B sends once so that it is learned, then A unicasts to B.
    auto f4 = make_frame(bcast, b->mac, 80, 4);
    b->send(f4);
    ra.clear();
    ASSERT_TRUE(a->wait_rx(1, ra));
    auto f5 = make_frame(b->mac, a->mac, 90, 5);
    a->send(f5);
    rb.clear();
    ASSERT_TRUE(b->wait_rx(1, rb));
    EXPECT_EQ(rb[0].data, f5) << "B must not have seen the frame for X";
    rc.clear();
    c->wait_rx(1, rc, 0);
    EXPECT_TRUE(rc.empty() || rc[0].data == f4) << "C saw only the broadcast";
    EXPECT_EQ(info(1).stats.drop_no_dest, 0u);
}

TEST_F(NetbackDatapath, FrameToOwnMacHasNowhereToGoAndIsCounted) {
    start();
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    auto f = make_frame(a->mac, a->mac, 100, 1);
    auto ids = a->send(f);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
    EXPECT_TRUE(eventually([&] { return info(1).stats.drop_no_dest == 1; }));
    EXPECT_EQ(info(2).stats.rx_packets, 0u);
}

// ---- validation rules (Linux xenvif_tx_build_gops and helpers) -----------------

class NetbackRules : public NetbackDatapath {
protected:
    raw_frontend *a = nullptr, *b = nullptr, *c = nullptr;
    void SetUp() override {
        NetbackDatapath::SetUp();
        start();
        a = guest(1);
        b = guest(2);
        c = guest(3);
        ASSERT_TRUE(a && b && c);
    }
    netif_tx_request req(uint32_t page, uint16_t off, uint16_t size, uint16_t flags) {
        netif_tx_request r{};
        r.gref = a->txbuf.refs[page];
        r.offset = off;
        r.size = size;
        r.flags = flags;
        r.id = uint16_t(a->tx.req_prod_pvt & (ring_size - 1));
        return r;
    }
    // A packet of `nslots` slots of `each` bytes: first has the total.
    void put_chain(uint32_t nslots, uint16_t each) {
        auto f = make_frame(b->mac, a->mac, nslots * each, 9);
        for (uint32_t i = 0; i < nslots; ++i) {
            std::memcpy(a->tx_page(i), f.data() + i * each, each);
            a->put_tx(req(i, 0, i == 0 ? uint16_t(nslots * each) : each,
                          i + 1 < nslots ? NETTXF_more_data : 0));
        }
    }
    void expect_dropped_with_error(size_t nresponses) {
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(a->wait_tx(nresponses, tr));
        EXPECT_EQ(tr.size(), nresponses);
        for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_ERROR);
        EXPECT_EQ(info(1).stats.drop_malformed, 1u);
        EXPECT_FALSE(info(1).disabled);
        EXPECT_EQ(info(2).stats.rx_packets, 0u);
        // Not fatal: the same vif still sends.
        expect_delivery(*a, *b);
    }
};

// xenvif_tx_build_gops: "Impossible number of requests".
TEST_F(NetbackRules, TxRequestsOutstandingBeyondRingSizeIsFatal) {
    // A raw write of the shared index: what a hostile frontend does.
    __atomic_store_n(&a->tx.sring()->req_prod, ring_size + 1, __ATOMIC_RELEASE);
    a->kick_tx();
    expect_fatal(*a, *b, *c, "impossible number of requests");
}

// xenvif_count_requests: more than XEN_NETBK_LEGACY_SLOTS_MAX (18) frags
// after the first slot: the packet is dropped, every slot answered ERROR.
TEST_F(NetbackRules, TxMoreThan18SlotsIsDroppedWithErrorResponses) {
    put_chain(1 + 19, 100);
    a->push_tx();
    expect_dropped_with_error(20);
}

// Boundary: the first slot plus 18 frags is accepted (and packed into RX
// slots a netfront accepts).
TEST_F(NetbackRules, TxFirstSlotPlus18FragsIsAccepted) {
    put_chain(1 + 18, 100);
    a->push_tx();
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(19, tr));
    for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, make_frame(b->mac, a->mac, 1900, 9));
    EXPECT_LE(rx[0].data_slots, 18u);
}

// xenvif_count_requests: fatal_skb_slots (20) frags is malicious.
TEST_F(NetbackRules, TxMoreThanFatalSkbSlotsIsFatal) {
    put_chain(1 + 21, 100);
    a->push_tx();
    expect_fatal(*a, *b, *c, "malicious frontend");
}

// xenvif_count_requests: "Asked for %d slots but exceeds this limit".
TEST_F(NetbackRules, TxMoreDataBeyondProducedRequestsIsFatal) {
    a->put_tx(req(0, 0, 200, NETTXF_more_data));
    a->push_tx();
    expect_fatal(*a, *b, *c, "only 0 requests");
}

// xenvif_count_requests: "Cross page boundary".
TEST_F(NetbackRules, TxFragCrossingItsPageIsFatal) {
    a->put_tx(req(0, 0, 300, NETTXF_more_data));
    a->put_tx(req(1, 4000, 200, 0));
    a->push_tx();
    expect_fatal(*a, *b, *c, "slot crosses its page");
}

// xenvif_tx_build_gops: the first slot must not cross its page either.
TEST_F(NetbackRules, TxFirstSlotCrossingItsPageIsFatal) {
    a->put_tx(req(0, 4000, 200, 0));
    a->push_tx();
    expect_fatal(*a, *b, *c, "first slot crosses its page");
}

// xenvif_count_requests: a slot larger than what remains of the first
// request's size (a >= 64 KiB frame overflowing size) is dropped, not fatal.
TEST_F(NetbackRules, TxSlotLargerThanRemainingSizeIsDropped) {
    a->put_tx(req(0, 0, 100, NETTXF_more_data));
    a->put_tx(req(1, 0, 200, 0));
    a->push_tx();
    expect_dropped_with_error(2);
}

// xenvif_get_extras: "Missing extra info".
TEST_F(NetbackRules, TxMissingExtraInfoIsFatal) {
    a->put_tx(req(0, 0, 100, NETTXF_extra_info));
    a->push_tx();
    expect_fatal(*a, *b, *c, "missing extra info");
}

// xenvif_get_extras: "Invalid extra type".
TEST_F(NetbackRules, TxUnknownExtraTypeIsFatal) {
    a->put_tx(req(0, 0, 100, NETTXF_extra_info));
    netif_extra_info e{};
    e.type = XEN_NETIF_EXTRA_TYPE_MAX;
    a->put_extra(e);
    a->push_tx();
    expect_fatal(*a, *b, *c, "invalid extra type");
}

// xenvif_set_skb_gso: "GSO size must not be zero".
TEST_F(NetbackRules, TxGsoSizeZeroIsFatal) {
    a->put_tx(req(0, 0, 100, NETTXF_extra_info));
    netif_extra_info e{};
    e.type = XEN_NETIF_EXTRA_TYPE_GSO;
    e.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV4;
    e.u.gso.size = 0;
    a->put_extra(e);
    a->push_tx();
    expect_fatal(*a, *b, *c, "GSO size must not be zero");
}

// xenvif_set_skb_gso: "Bad GSO type".
TEST_F(NetbackRules, TxUnknownGsoTypeIsFatal) {
    a->put_tx(req(0, 0, 100, NETTXF_extra_info));
    netif_extra_info e{};
    e.type = XEN_NETIF_EXTRA_TYPE_GSO;
    e.u.gso.type = 3;
    e.u.gso.size = 1448;
    a->put_extra(e);
    a->push_tx();
    expect_fatal(*a, *b, *c, "bad GSO type");
}

// xenvif_tx_build_gops: "Bad packet size" (< ETH_HLEN): error, not fatal.
TEST_F(NetbackRules, TxShorterThanEthernetHeaderIsDroppedWithError) {
    a->put_tx(req(0, 0, 10, 0));
    a->push_tx();
    expect_dropped_with_error(1);
}

// XSA-155 (RING_COPY_REQUEST): the frontend rewrites its request while the
// backend works on it (here: during the header grant copy). The backend
// must act on the copy it took, never re-read the ring.
struct rewrite_ctx {
    netif_tx_sring* s;
    RING_IDX idx;
    std::atomic<int> fired{0};
};
void rewrite_request(void* arg) noexcept {
    auto* c = static_cast<rewrite_ctx*>(arg);
    if (c->fired.fetch_add(1) != 0) return;
    netif_tx_request evil{};
    evil.gref = 1;
    evil.offset = 4000;
    evil.size = 0xffff;
    evil.flags = NETTXF_more_data | NETTXF_extra_info;
    evil.id = 0x7777;
    std::memcpy(&c->s->ring[c->idx & (ring_size - 1)].req, &evil, sizeof evil);
}

TEST_F(NetbackRules, Xsa155RequestRewrittenAfterReadDoesNotMatter) {
    auto f = make_frame(b->mac, a->mac, 700, 5);
    rewrite_ctx ctx{a->tx.sring(), a->tx.req_prod_pvt};
    hv::emu::test_hooks::set_copy_hook(rewrite_request, &ctx);
    auto ids = a->send(f);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(1, tr));
    hv::emu::test_hooks::set_copy_hook(nullptr, nullptr);
    EXPECT_GE(ctx.fired.load(), 1) << "the hook must have rewritten the request mid-flight";
    EXPECT_EQ(tr[0].id, ids[0]);
    EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, f);
    EXPECT_FALSE(info(1).disabled);
    EXPECT_EQ(info(1).stats.drop_malformed, 0u);
}

// ---- no RX buffers: queue, fallback, drain timeout, XSA-392 ---------------------

TEST_F(NetbackDatapath, NoRxBuffersQueuedThenBouncedThenDelivered) {
    netback::datapath_options o;
    o.hold_ms = 20;
    start(o);
    auto a = guest(1), b = guest(2, false, true, /*post=*/0);
    ASSERT_TRUE(a && b);
    std::vector<std::vector<uint8_t>> sent;
    size_t slots = 0;
    for (uint32_t i = 0; i < 8; ++i) {
        auto f = make_frame(b->mac, a->mac, 100 + i * 1500, i);
        slots += a->send(f).size();
        sent.push_back(std::move(f));
    }
    // The source gets its slots back although B posted nothing: the frames
    // were copied into bounce buffers.
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    EXPECT_EQ(info(2).stats.queued, 8u);
    EXPECT_EQ(info(1).stats.fallback_copies, 8u);
    EXPECT_GT(dp->bounce_in_use(), 0u);
    EXPECT_EQ(info(2).stats.rx_packets, 0u);
    // Buffers appear: delivered in order, intact, from the bounce buffers.
    b->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(8, rx));
    for (size_t i = 0; i < 8; ++i) EXPECT_EQ(rx[i].data, sent[i]) << i;
    EXPECT_EQ(info(1).stats.vm_to_vm_segments, 0u);
    EXPECT_EQ(info(2).stats.drop_rx_full, 0u);
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
    // And the direct path is back.
    expect_delivery(*a, *b, 1000, 99);
    EXPECT_GT(info(1).stats.vm_to_vm_segments, 0u);
}

TEST_F(NetbackDatapath, NoRxBuffersDroppedAfterDrainTimeoutAndCounted) {
    netback::datapath_options o;
    o.hold_ms = 5;
    o.drain_timeout_ms = 200;
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    size_t slots = 0;
    for (uint32_t i = 0; i < 4; ++i) slots += a->send(make_frame(b->mac, a->mac, 500, i)).size();
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    ASSERT_TRUE(eventually([&] { return info(2).stats.drop_rx_full == 4; }));
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
    // Nothing stale is delivered later: the next frame is the first B sees.
    b->post_rx(rx_pages);
    expect_delivery(*a, *b, 333, 42);
    EXPECT_EQ(info(2).stats.rx_packets, 1u);
}

// XSA-392: a frontend that keeps one RX slot free while the frame at the head
// needs more must not hold the backend (or the sender) forever: the queue is
// found stalled (xenvif_rx_queue_stalled compares with the slots needed),
// further frames are dropped at once, and everything else carries on.
TEST_F(NetbackDatapath, Xsa392RxStallWithOneFreeSlotIsDetected) {
    netback::datapath_options o;
    o.hold_ms = 5;
    o.stall_timeout_ms = 100;
    o.drain_timeout_ms = 60000; // only the stall logic can help here
    start(o);
    auto a = guest(1), b = guest(2, false, true, /*post=*/1), c = guest(3);
    ASSERT_TRUE(a && b && c);
    // Needs two RX slots (two TX slots, SG).
    auto f = make_frame(b->mac, a->mac, 6000, 1);
    size_t slots = a->send(f).size();
    ASSERT_EQ(slots, 2u);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr)) << "the sender must get its slots back";
    ASSERT_TRUE(eventually([&] { return info(2).rx_stalled; })) << "stall not detected";
    EXPECT_EQ(info(2).stats.rx_stalls, 1u);
    // While stalled, frames for B are dropped at once (carrier off).
    tr.clear();
    slots = a->send(make_frame(b->mac, a->mac, 6000, 2)).size();
    ASSERT_TRUE(a->wait_tx(slots, tr));
    EXPECT_TRUE(eventually([&] { return info(2).stats.drop_disabled >= 1; }));
    // The backend is not wedged: other vifs talk.
    expect_delivery(*a, *c);
    expect_delivery(*c, *a);
    // B posts enough: the waiting head frame goes out, the queue is ready again.
    b->post_rx(8);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, f);
    EXPECT_TRUE(eventually([&] { return !info(2).rx_stalled; }));
    expect_delivery(*a, *b, 5000, 3);
}

// ---- hold policy: zero-copy frames wait, bounce only when the source runs short --

// 15 frames of 64 KiB (16 slots each): the source has fewer than
// XEN_NETIF_NR_SLOTS_MIN + 1 TX slots left, a netfront would stop.
constexpr uint32_t short_frames = 15;

std::vector<std::vector<uint8_t>> send_big(raw_frontend& from, raw_frontend& to, uint32_t n, size_t& slots) {
    std::vector<std::vector<uint8_t>> sent;
    for (uint32_t i = 0; i < n; ++i) {
        sent.push_back(make_frame(to.mac, from.mac, 65535, 100 + i));
        slots += from.send(sent.back()).size();
    }
    return sent;
}

// A receiver that keeps taking frames paces a source that ran short: no
// frame is copied twice, however long the source waits in total.
TEST_F(NetbackDatapath, ShortSourceIsPacedNotBouncedWhileTheReceiverTakesFrames) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.pressure_hold_us = 300000; // the receiver below publishes every ~20 ms
    o.idle_ms = 300;             // and so takes frames (held_tx_slots does not apply)
    start(o);
    auto a = guest(1), b = guest(2, false, true, /*post=*/0);
    ASSERT_TRUE(a && b);
    size_t slots = 0;
    auto sent = send_big(*a, *b, short_frames, slots);
    ASSERT_EQ(slots, short_frames * 16);
    std::vector<rx_packet> rx;
    for (uint32_t i = 0; i < short_frames; ++i) {
        b->post_rx(16); // one frame's worth: every RX page is filled
        ASSERT_TRUE(b->wait_rx(i + 1, rx, 5000, /*repost=*/false)) << i;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (uint32_t i = 0; i < short_frames; ++i) EXPECT_TRUE(rx[i].data == sent[i]) << i;
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
    EXPECT_EQ(info(2).stats.rx_slots, short_frames * 16);
    EXPECT_EQ(dp->bounce_in_use(), 0u);
}

// A receiver that takes nothing while the source ran short: held frames
// move to bounce buffers after pressure_hold_us, long before hold_ms, until
// the source can send its largest packet again (no more than that).
TEST_F(NetbackDatapath, ShortSourceGetsItsSlotsBackWhenTheReceiverIdles) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.pressure_hold_us = 20000;
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    size_t slots = 0;
    auto sent = send_big(*a, *b, short_frames, slots);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(16, tr)) << "the short source must get slots back";
    for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    const uint64_t fb = info(1).stats.fallback_copies;
    EXPECT_GE(fb, 1u);
    EXPECT_LT(fb, short_frames) << "only what the source needs is copied twice";
    b->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(short_frames, rx));
    for (uint32_t i = 0; i < short_frames; ++i) EXPECT_TRUE(rx[i].data == sent[i]) << i;
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
}

// A source with slots to spare keeps its frames zero-copy until hold_ms.
TEST_F(NetbackDatapath, SourceWithSlotsLeftKeepsItsFramesZeroCopy) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.pressure_hold_us = 20000;
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    size_t slots = 0;
    auto sent = send_big(*a, *b, 4, slots);
    ASSERT_TRUE(eventually([&] { return info(2).stats.queued == 4; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // 10x pressure_hold_us
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
    EXPECT_EQ(a->tx_pending_responses(), 0u) << "held frames keep the source's slots";
    b->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(4, rx));
    for (uint32_t i = 0; i < 4; ++i) EXPECT_TRUE(rx[i].data == sent[i]) << i;
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
    EXPECT_EQ(info(1).stats.vm_to_vm_segments, 4u * 16);
}

// A short source whose destination already holds more than half of
// rx_queue_bytes keeps waiting: slots given back would only bring frames to
// drop. (Here the destination may hold every TX slot of the source: the
// held_tx_slots bound, which gives a source slots back for its other
// destinations, is tested in netback_bounce_test.cpp.)
TEST_F(NetbackDatapath, ShortSourceIsNotBouncedIntoAFullDestination) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.pressure_hold_us = 20000;
    o.held_tx_slots = ring_size;
    o.rx_queue_bytes = 400 * 1024; // 240 frames of 1500 bytes: more than half
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    constexpr uint32_t n = 240; // one slot each: the source runs short
    std::vector<std::vector<uint8_t>> sent;
    for (uint32_t i = 0; i < n; ++i) {
        sent.push_back(make_frame(b->mac, a->mac, 1500, 500 + i));
        a->send(sent.back());
    }
    ASSERT_TRUE(eventually([&] { return info(2).stats.queued == n; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // 10x pressure_hold_us
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
    EXPECT_EQ(a->tx_pending_responses(), 0u);
    EXPECT_EQ(info(2).stats.drop_rx_full, 0u);
    b->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(n, rx));
    for (uint32_t i = 0; i < n; ++i) EXPECT_TRUE(rx[i].data == sent[i]) << i;
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(n, tr));
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
}

// The frames waiting for one queue are bounded in bytes (Linux
// xenvif_rx_queue_tail's rx_queue_max), not in frames.
TEST_F(NetbackDatapath, WaitingFramesAreBoundedInBytes) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.rx_queue_bytes = 2 * 65535 + 100;
    o.pressure_hold_us = 20000; // the source does not run short here
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    size_t slots = 0;
    auto sent = send_big(*a, *b, 4, slots);
    ASSERT_TRUE(eventually([&] { return info(2).stats.drop_rx_full == 2; }));
    EXPECT_EQ(info(2).stats.queued, 2u);
    b->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(2, rx));
    EXPECT_TRUE(rx[0].data == sent[0]);
    EXPECT_TRUE(rx[1].data == sent[1]);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    EXPECT_EQ(info(2).stats.rx_packets, 2u);
}

// Linux xenvif_rx_next_chunk fills every RX page: a TX chain of a 14-byte
// first slot and 1-byte slots arrives in as few RX slots as its length
// needs, its headers never split across slots.
TEST_F(NetbackDatapath, RxFillsEveryPageWhateverTheTxLayout) {
    start();
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    struct layout {
        uint32_t len;
        std::vector<uint16_t> sizes;
    };
    std::vector<layout> cases;
    {
        std::vector<uint16_t> s{14};
        for (int i = 0; i < 17; ++i) s.push_back(1);
        s.push_back(60 - 14 - 17);
        cases.push_back({60, s});
        std::vector<uint16_t> t{14};
        for (int i = 0; i < 15; ++i) t.push_back(1);
        t.push_back(4096);
        t.push_back(4096);
        t.push_back(uint16_t(9000 - 14 - 15 - 2 * 4096));
        cases.push_back({9000, t});
    }
    uint32_t seed = 1;
    for (auto& c : cases) {
        ASSERT_EQ(c.sizes.size(), 19u); // the first slot and 18 frags
        auto f = make_frame(b->mac, a->mac, c.len, seed++);
        auto ids = a->send(f, c.sizes);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(a->wait_tx(ids.size(), tr));
        for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
        std::vector<rx_packet> rx;
        ASSERT_TRUE(b->wait_rx(1, rx));
        EXPECT_TRUE(rx[0].data == f) << c.len;
        EXPECT_EQ(rx[0].data_slots, (c.len + 4095) / 4096) << c.len;
    }
    EXPECT_EQ(info(1).stats.fallback_copies, 0u);
}

TEST_F(NetbackDatapath, ForceBounceCopiesTwiceAndCountsIt) {
    netback::datapath_options o;
    o.force_bounce = true;
    start(o);
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    for (uint32_t len : {60u, 1514u, 9000u, 65535u}) expect_delivery(*a, *b, len, len);
    EXPECT_EQ(info(1).stats.fallback_copies, 4u);
    EXPECT_EQ(info(1).stats.vm_to_vm_segments, 0u);
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
}

// ---- teardown -------------------------------------------------------------------

TEST_F(NetbackDatapath, RemoveVifWithFramesInFlightLeaksNothing) {
    netback::datapath_options o;
    o.hold_ms = 60000; // frames keep the sender's slots (zero copy) while they wait
    start(o);
    auto a = guest(1), b = guest(2, false, true, 0), c = guest(3, false, true, 0);
    ASSERT_TRUE(a && b && c);
    // Four frames wait in B's queue holding A's TX slots.
    size_t slots = 0;
    for (uint32_t i = 0; i < 4; ++i) slots += a->send(make_frame(b->mac, a->mac, 5000, i)).size();
    ASSERT_TRUE(eventually([&] { return info(2).stats.queued == 4; }));
    EXPECT_EQ(a->tx_pending_responses(), 0u) << "held: no response before the copy";
    // Remove B: its waiting frames are dropped (counted) and A gets its slots back.
    ASSERT_EQ(dp->remove_vif(2, 0), 0);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(slots, tr));
    for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    EXPECT_EQ(dp->remove_vif(2, 0), -ENOENT);
    // Frames from A wait in C's queue; then A goes away (its domain too).
    for (uint32_t i = 0; i < 3; ++i) a->send(make_frame(c->mac, a->mac, 3000, 10 + i));
    ASSERT_TRUE(eventually([&] { return info(3).stats.queued == 3; }));
    ASSERT_EQ(dp->remove_vif(1, 0), 0);
    kill(a); // the frontend is dead now
    // C posts buffers: nothing of the dead sender's frames is delivered.
    c->post_rx(rx_pages);
    auto d = guest(4);
    ASSERT_TRUE(d);
    expect_delivery(*d, *c, 800, 77);
    EXPECT_EQ(info(3).stats.rx_packets, 1u);
    ASSERT_EQ(dp->remove_vif(3, 0), 0);
    ASSERT_EQ(dp->remove_vif(4, 0), 0);
    EXPECT_TRUE(dp->vifs().empty());
    expect_balanced();
}

// The frontend dies while frames flow to it, then the control plane removes it.
TEST_F(NetbackDatapath, DeadFrontendWithTrafficInFlightThenRemoved) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto a = guest(1), b = guest(2), c = guest(3);
    ASSERT_TRUE(a && b && c);
    expect_delivery(*a, *b);
    for (uint32_t i = 0; i < 6; ++i) a->send(make_frame(b->mac, a->mac, 9000, i));
    kill(b); // domain 2 destroyed with its rings still mapped by dom0
    std::vector<netif_tx_response> tr;
    EXPECT_TRUE(a->wait_tx(6 * 3, tr));
    ASSERT_EQ(dp->remove_vif(2, 0), 0);
    expect_delivery(*a, *c);
    expect_delivery(*c, *a);
    ASSERT_EQ(dp->remove_vif(1, 0), 0);
    ASSERT_EQ(dp->remove_vif(3, 0), 0);
    expect_balanced();
}

TEST_F(NetbackDatapath, AddVifRejectsBadParams) {
    start();
    auto a = guest(1);
    ASSERT_TRUE(a);
    std::string why;
    EXPECT_EQ(dp->add_vif(a->params(), &why), -EEXIST);
    auto p = a->params(1);
    p.queues.clear();
    EXPECT_EQ(dp->add_vif(p, &why), -EINVAL);
    p = a->params(2);
    p.queues[0].tx_ring_ref = 4000; // not granted
    EXPECT_EQ(dp->add_vif(p, &why), -EFAULT) << why;
    p = a->params(3);
    p.queues[0].tx_evtchn = 999;
    EXPECT_EQ(dp->add_vif(p, &why), -ENOENT) << why;
    ASSERT_EQ(dp->remove_vif(1, 0), 0);
    expect_balanced();
}

// ---- Hardening: accounting, offload checks, per-vif log limits ------------------

// The destination is removed while the grant copy into its RX buffers runs
// (between reservation and publish): the frame is lost and counted on the
// destination, whose counters end up in retired_stats().
struct remove_ctx {
    std::atomic<int> calls{0};
    std::atomic<bool> at_payload{false}, removed{false};
};
void remove_during_payload_copy(void* arg) noexcept {
    auto* c = static_cast<remove_ctx*>(arg);
    // Copy 1 is the header copy (tx.cpp), copy 2 the payload into the RX slot.
    if (c->calls.fetch_add(1) != 1) return;
    c->at_payload = true;
    for (int i = 0; i < 2000 && !c->removed; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST_F(NetbackDatapath, Item8_DeliveryToVifRemovedBeforePublishIsCounted) {
    start();
    auto* a = guest(1);
    auto* b = guest(2);
    ASSERT_TRUE(a && b);
    remove_ctx ctx;
    hv::emu::test_hooks::set_copy_hook(remove_during_payload_copy, &ctx);
    auto f = make_frame(b->mac, a->mac, 300, 3);
    auto ids = a->send(f);
    ASSERT_TRUE(eventually([&] { return ctx.at_payload.load(); }));
    EXPECT_EQ(dp->remove_vif(2, 0), 0);
    ctx.removed = true;
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    hv::emu::test_hooks::set_copy_hook(nullptr, nullptr);
    EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
    EXPECT_TRUE(eventually([&] { return dp->retired_stats().drop_disabled == 1; }))
        << "drop_disabled " << dp->retired_stats().drop_disabled;
    EXPECT_EQ(dp->retired_stats().rx_packets, 0u);
    EXPECT_EQ(info(1).stats.tx_packets, 1u);
}

// The receiver posts an RX request with a grant reference that is not
// granted: the copy fails on its grant, so the loss is its own (Linux: every
// RX copy failure is the receiver's), never the sender's drop_copy_error.
TEST_F(NetbackDatapath, Item8_ReceiverBadRxGrantIsChargedToReceiver) {
    start();
    auto* a = guest(1);
    auto* b = guest(2, false, true, 0);
    ASSERT_TRUE(a && b);
    netif_rx_request r{};
    r.id = 5;
    r.gref = 4000; // not a grant of b's
    b->rx.write_request(b->rx.req_prod_pvt++, r);
    if (b->rx.push_requests_and_check_notify()) b->ev->notify(b->port_rx);
    auto f = make_frame(b->mac, a->mac, 200, 4);
    auto ids = a->send(f);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx, 5000, false));
    EXPECT_LT(rx[0].error, 0) << "the RX response must carry the copy's error";
    EXPECT_TRUE(eventually([&] { return info(2).stats.drop_rx_grant == 1; }));
    EXPECT_EQ(info(1).stats.drop_copy_error, 0u) << "the sender was charged for the receiver's bad grant";
    // A sender whose own grant fails still pays for it: b gets a good buffer.
    b->post_rx(4);
    expect_delivery(*a, *b);
}

// is_skb_forwardable: a non-GSO frame over the receiver's mtu + 18 is not
// forwarded; a GSO frame is.
TEST_F(NetbackDatapath, Item7_FrameOverReceiverMtuIsDroppedAndCounted) {
    start();
    auto* a = guest(1);
    auto* b = guest(2, false, true, rx_pages, [](netback::vif_params& p) { p.mtu = 1500; });
    ASSERT_TRUE(a && b);
    auto big = make_frame(b->mac, a->mac, 1519, 8);
    auto ids = a->send(big);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    EXPECT_TRUE(eventually([&] { return info(1).stats.drop_mtu == 1; }));
    expect_delivery(*a, *b, 1518, 9);
    auto gso = make_frame(b->mac, a->mac, 9000, 10);
    stamp_tcp_headers(gso, false);
    ids = a->send(gso, {}, 0, XEN_NETIF_GSO_TYPE_TCPV4, 1448, NETTXF_csum_blank | NETTXF_data_validated);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(b->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, gso);
    EXPECT_EQ(info(1).stats.drop_mtu, 1u);
}

// checksum_setup / xenvif_set_skb_gso: checksum and GSO requests that do not
// match the frame's headers are dropped and counted (the TX response is
// OKAY: the requests themselves were well-formed), valid ones go through.
TEST_F(NetbackDatapath, Item7_GsoAndChecksumMetadataAreValidated) {
    start();
    auto* a = guest(1);
    auto* b = guest(2);
    ASSERT_TRUE(a && b);
    struct bad_case {
        const char* what;
        uint32_t len;
        bool v6;
        uint8_t gso_type;
        std::function<void(std::vector<uint8_t>&)> edit;
    };
    const uint16_t blank = NETTXF_csum_blank | NETTXF_data_validated;
    const bad_case cases[] = {
        {"not IP", 300, false, 0, [](auto& f) { f[12] = 0x88, f[13] = 0xb5; }},
        {"IPv4 fragment", 300, false, 0, [](auto& f) { f[20] = 0x20; }},
        {"not TCP/UDP", 300, false, 0, [](auto& f) { f[23] = 1; }},
        {"IPv4 header length < 20", 300, false, 0, [](auto& f) { f[14] = 0x44; }},
        {"TCPv4 GSO over IPv6", 3000, true, XEN_NETIF_GSO_TYPE_TCPV4, [](auto&) {}},
        {"TCPv6 GSO over IPv4", 3000, false, XEN_NETIF_GSO_TYPE_TCPV6, [](auto&) {}},
        {"GSO over UDP", 3000, false, XEN_NETIF_GSO_TYPE_TCPV4, [](auto& f) { f[23] = 17; }},
        {"TCP data offset < 20", 3000, false, XEN_NETIF_GSO_TYPE_TCPV4, [](auto& f) { f[34 + 12] = 0x40; }},
        {"IPv6 fragment header", 300, true, 0, [](auto& f) { f[20] = 44; }},
        {"checksum field past the end", 60, false, 0, [](auto& f) { f[14] = 0x4f; }},
    };
    uint64_t n = 0;
    for (const auto& c : cases) {
        auto f = make_frame(b->mac, a->mac, c.len, 11);
        stamp_tcp_headers(f, c.v6);
        c.edit(f);
        auto ids = a->send(f, {}, 0, c.gso_type, c.gso_type ? 1448 : 0, blank);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(a->wait_tx(ids.size(), tr)) << c.what;
        EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY) << c.what;
        ++n;
        EXPECT_TRUE(eventually([&] { return info(1).stats.drop_bad_offload == n; })) << c.what;
    }
    EXPECT_EQ(info(2).stats.rx_packets, 0u);
    EXPECT_FALSE(info(1).disabled);
    for (bool v6 : {false, true}) {
        auto f = make_frame(b->mac, a->mac, 5000, 12);
        stamp_tcp_headers(f, v6);
        a->send(f, {}, 0, v6 ? XEN_NETIF_GSO_TYPE_TCPV6 : XEN_NETIF_GSO_TYPE_TCPV4, 1448, blank);
        std::vector<rx_packet> rx;
        ASSERT_TRUE(b->wait_rx(1, rx));
        EXPECT_EQ(rx[0].data, f);
    }
    EXPECT_EQ(info(1).stats.drop_bad_offload, n);
}

TEST(NetbackOffload, Item7_ChecksumFieldMustBeInsideTheFrame) {
    std::vector<uint8_t> f(14 + 20 + 20, 0);
    stamp_tcp_headers(f, false);
    netback::offload_info oi;
    using netback::offload_verdict;
    EXPECT_EQ(netback::check_offload(f.data(), uint32_t(f.size()), uint32_t(f.size()), NETTXF_csum_blank, 0, 0, &oi),
              offload_verdict::ok);
    EXPECT_TRUE(oi.needs_csum);
    EXPECT_EQ(oi.ip_version, 4);
    // TCP's checksum field ends 18 bytes into its header.
    EXPECT_EQ(netback::check_offload(f.data(), 14 + 20 + 17, 14 + 20 + 17, NETTXF_csum_blank, 0, 0, &oi),
              offload_verdict::bad_metadata);
    // Checksum done: nothing to validate, whatever the bytes.
    EXPECT_EQ(netback::check_offload(f.data(), 20, 20, NETTXF_data_validated, 0, 0, &oi), offload_verdict::ok);
    netback::vif_params dst;
    dst.mtu = 1500;
    oi.needs_csum = false;
    EXPECT_EQ(netback::check_destination(oi, 1518, 0, dst), offload_verdict::ok);
    EXPECT_EQ(netback::check_destination(oi, 1519, 0, dst), offload_verdict::over_mtu);
    EXPECT_EQ(netback::check_destination(oi, 1519, XEN_NETIF_GSO_TYPE_TCPV4, dst), offload_verdict::ok);
}

// One guest sending a stream of bad frames: the lines about it are limited,
// and a bad frame from another guest is still logged.
TEST_F(NetbackDatapath, Item9_DataPathLogLimitersArePerVif) {
    start();
    auto* a = guest(1);
    auto* b = guest(2);
    ASSERT_TRUE(a && b);
    std::string out = test::capture_stderr([&] {
        for (int i = 0; i < 50; ++i) {
            a->send(std::vector<uint8_t>(10, 0)); // < ETH_HLEN: "bad packet size"
            std::vector<netif_tx_response> tr;
            ASSERT_TRUE(a->wait_tx(1, tr));
        }
        b->send(std::vector<uint8_t>(10, 0));
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(b->wait_tx(1, tr));
    });
    EXPECT_EQ(info(1).stats.drop_malformed, 50u);
    EXPECT_LT(test::count_of(out, "vif1.0: bad packet size"), 50u);
    EXPECT_EQ(test::count_of(out, "vif2.0: bad packet size"), 1u) << "guest 1 silenced the line about guest 2";
}

// One guest notifies its event channel in a tight loop with nothing on its
// rings (XSA-332) while two others on the same worker exchange frames: its
// events are counted as spurious and its port stays masked for a growing,
// bounded delay (Linux lateeoi); the others' frames all arrive, and once the
// storm ends the stormer's own frames flow again.
TEST_F(NetbackDatapath, Item5_EventStormFromOneGuestDoesNotStarveOthers) {
    netback::datapath_options o;
    o.workers = 1; // everyone shares the stormer's worker
    start(o);
    auto* a = guest(1);
    auto* b = guest(2);
    auto* c = guest(3);
    ASSERT_TRUE(a && b && c);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> storm{0};
    std::thread stormer([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            a->kick_tx(); // a hostile frontend ignores req_event and posts nothing
            storm.fetch_add(1, std::memory_order_relaxed);
            std::this_thread::yield();
        }
    });
    struct joiner {
        std::atomic<bool>& stop;
        std::thread& t;
        ~joiner() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } join{stop, stormer};
    // The back-off has set in before the traffic starts.
    ASSERT_TRUE(eventually([&] { return info(1).stats.eoi_delays >= 3; }))
        << "spurious events: " << info(1).stats.spurious_events;
    constexpr uint32_t rounds = 100;
    for (uint32_t i = 0; i < rounds; ++i) {
        expect_delivery(*b, *c, 60 + i * 13, 2 * i);
        ASSERT_FALSE(HasFatalFailure()) << "round " << i;
        expect_delivery(*c, *b, 1514 - i * 7, 2 * i + 1);
        ASSERT_FALSE(HasFatalFailure()) << "round " << i;
    }
    stop = true;
    stormer.join(); // `a` is the test's again
    const auto s1 = info(1).stats;
    EXPECT_GT(s1.spurious_events, 0u);
    EXPECT_GT(s1.eoi_delays, 0u);
    EXPECT_EQ(s1.tx_packets, 0u);
    EXPECT_EQ(info(2).stats.rx_packets, rounds);
    EXPECT_EQ(info(3).stats.rx_packets, rounds);
    // The port is held back for at most a second: the stormer's frame goes.
    expect_delivery(*a, *b);
    std::printf("storm: %llu notifications, %llu events received, %llu spurious, %llu delayed unmasks\n",
                (unsigned long long)storm.load(), (unsigned long long)s1.events_received,
                (unsigned long long)s1.spurious_events, (unsigned long long)s1.eoi_delays);
}

} // namespace

// ---- guest source checks and rate (netback/source_check.hpp) ---------------------

TEST_F(NetbackDatapath, SourceChecksDropForeignMacAndIpAndCountThem) {
    start();
    const uint8_t own[4] = {10, 0, 0, 1}, other[4] = {10, 0, 0, 9};
    auto a = guest(1, false, true, rx_pages, [&](netback::vif_params& p) {
        uint32_t v;
        std::memcpy(&v, own, 4);
        p.ipv4 = {v};
    });
    auto b = guest(2);
    ASSERT_TRUE(a && b);
    auto ipv4_from = [&](const mac_addr& src, const uint8_t* ip, uint32_t seed) {
        auto f = make_frame(b->mac, src, 100, seed);
        f[14] = 0x45;
        std::memcpy(f.data() + 26, ip, 4);
        return f;
    };
    auto arp_from = [&](const uint8_t* ip, uint32_t seed) {
        auto f = make_frame(bcast, a->mac, 60, seed);
        f[12] = 0x08;
        f[13] = 0x06;
        std::memcpy(f.data() + 28, ip, 4);
        return f;
    };
    const mac_addr foreign = {0x02, 0xee, 0, 0, 0, 0x01};
    const std::vector<std::vector<uint8_t>> bad = {ipv4_from(foreign, own, 1), ipv4_from(a->mac, other, 2),
                                                   arp_from(other, 3)};
    for (auto& f : bad) {
        auto ids = a->send(f);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(a->wait_tx(ids.size(), tr));
        EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY) << "dropped as the vif scripts' ebtables would: after TX";
    }
    // The good ones arrive, and only they.
    auto good_ip = ipv4_from(a->mac, own, 4), good_arp = arp_from(own, 5);
    a->send(good_ip);
    a->send(good_arp);
    std::vector<rx_packet> rb;
    ASSERT_TRUE(b->wait_rx(2, rb));
    ASSERT_EQ(rb.size(), 2u);
    EXPECT_EQ(rb[0].data, good_ip);
    EXPECT_EQ(rb[1].data, good_arp);
    const auto s = info(1).stats;
    EXPECT_EQ(s.drop_spoofed_mac, 1u);
    EXPECT_EQ(s.drop_spoofed_ip, 2u);
    EXPECT_EQ(info(2).stats.rx_packets, 2u);
}

TEST_F(NetbackDatapath, RateKeyHoldsTheVifToItsRate) {
    start();
    // xl's rate=4Mb/s@10ms: 5000 bytes per 10 ms window (the `rate` key "5000,10000").
    constexpr uint64_t credit_bytes = 5000, credit_usec = 10000;
    constexpr double rate = double(credit_bytes) * 1e6 / double(credit_usec); // bytes per second
    auto a = guest(1, false, true, rx_pages, [&](netback::vif_params& p) {
        p.credit_bytes = credit_bytes;
        p.credit_usec = credit_usec;
    });
    auto b = guest(2);
    ASSERT_TRUE(a && b);
    // Two chunks in flight keep the ring non-empty (idle time would lose
    // credit: it never accumulates beyond one window) and stay within the
    // frontend's 96 TX pages.
    // Two slots a frame (the credit is charged the whole packet, not its
    // first slot): 2 chunks x 20 frames x 2 pages in flight.
    constexpr uint32_t len = 1000, chunk = 20, chunks = 18;
    std::vector<rx_packet> got;
    auto send_chunk = [&](uint32_t c) {
        size_t n = 0;
        for (uint32_t i = 0; i < chunk; ++i)
            n += a->send(make_frame(b->mac, a->mac, len, c * chunk + i), {100, len - 100}).size();
        return n;
    };
    const auto t0 = std::chrono::steady_clock::now();
    size_t sent = send_chunk(0);
    std::vector<netif_tx_response> tr; // every response so far (wait_tx takes what is there)
    for (uint32_t c = 1; c <= chunks; ++c) {
        const size_t before = sent;
        if (c < chunks) sent += send_chunk(c);
        ASSERT_TRUE(a->wait_tx(before, tr, 10000));
        b->wait_rx(0, got, 0);
    }
    ASSERT_TRUE(a->wait_tx(sent, tr, 10000));
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(b->wait_rx(chunk * chunks, got));
    // The first window's credit goes at once (Linux starts with a full credit).
    const double expect = double(uint64_t(len) * chunk * chunks - credit_bytes) / rate;
    EXPECT_GT(secs, expect * 0.9) << "faster than the rate";
    // Slower than the rate is what a limiter that holds too long does, but
    // also what a loaded 2-core machine does to this test's own feeding of
    // the ring (1.4x seen with nine other jobs running): only a gross
    // over-hold fails here. The 10% both ways is checked on the wire by
    // uplink_e2e, where zc-perf keeps the ring full.
    EXPECT_LT(secs, expect * 1.5) << "held far longer than the rate needs";
    EXPECT_GT(info(1).stats.rate_limited, 0u);
    EXPECT_EQ(info(2).stats.rx_packets, uint64_t(chunk) * chunks);
}

// ---- an uplink (netback/uplink.cpp) on a veth pair in the test's own namespace ----

TEST_F(NetbackDatapath, UplinkSegmentsGsoCompletesChecksumsAndDeliversFromTheWire) {
    std::string why;
    if (!test::veth_netns("zcdpa", "zcdpb", &why)) GTEST_SKIP() << why;
    start();
    auto a = guest(1);
    ASSERT_TRUE(a);
    netback::uplink_options uo;
    uo.ifname = "zcdpa";
    uo.frames = 256;
    uo.ring = 64;
    ASSERT_EQ(dp->add_uplink(uo, &why), 0) << why;
    test::raw_sock far("zcdpb");
    ASSERT_GE(far.fd, 0);
    const uint8_t peer[6] = {0x02, 0xaa, 0, 0, 0, 0x01}; // behind the uplink, not learned yet: flooded there
    for (const bool v6 : {false, true}) {
        // The MSS that fits a 1500-byte MTU (IPv6's header is 20 bytes longer).
        constexpr uint32_t payload = 5000;
        const uint32_t mss = v6 ? 1440 : 1460;
        auto f = test::l4_frame(peer, a->mac.b.data(), v6, 6, payload);
        const uint32_t hlen = 14 + (v6 ? 40 : 20) + 20;
        auto ids = a->send(f, {}, 0, v6 ? XEN_NETIF_GSO_TYPE_TCPV6 : XEN_NETIF_GSO_TYPE_TCPV4, uint16_t(mss),
                           NETTXF_csum_blank);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(a->wait_tx(ids.size(), tr));
        std::vector<uint8_t> joined;
        for (uint32_t k = 0; k < (payload + mss - 1) / mss; ++k) {
            auto seg = far.recv(3000, [&](const std::vector<uint8_t>& b) {
                return std::memcmp(b.data() + 6, a->mac.b.data(), 6) == 0;
            });
            ASSERT_FALSE(seg.empty()) << "segment " << k << (v6 ? " (v6)" : " (v4)");
            const uint32_t want = std::min(mss, payload - k * mss);
            ASSERT_EQ(seg.size(), hlen + want);
            EXPECT_TRUE(test::l4_checksum_ok(seg)) << "segment " << k;
            const uint8_t* tcp = seg.data() + hlen - 20;
            const uint32_t seq = uint32_t(tcp[4]) << 24 | uint32_t(tcp[5]) << 16 | uint32_t(tcp[6]) << 8 | tcp[7];
            EXPECT_EQ(seq, 0u + k * mss) << "sequence numbers advance by the MSS";
            if (!v6) {
                EXPECT_TRUE(proto::csum_verify(seg.data() + 14, 20)) << "IPv4 header checksum";
                EXPECT_EQ(uint32_t(seg[16] << 8 | seg[17]), seg.size() - 14);
            } else {
                EXPECT_EQ(uint32_t(seg[18] << 8 | seg[19]), seg.size() - 14 - 40);
            }
            joined.insert(joined.end(), seg.begin() + hlen, seg.end());
        }
        EXPECT_TRUE(std::equal(joined.begin(), joined.end(), f.begin() + hlen, f.end())) << "payload intact";
    }
    // A plain frame over the MTU is dropped and counted.
    auto big = make_frame(mac_addr{0x02, 0xaa, 0, 0, 0, 0x01}, a->mac, 2000, 9);
    auto ids = a->send(big);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(ids.size(), tr));
    // Wire -> guest: one frame to the guest's MAC.
    auto in = make_frame(a->mac, mac_addr{0x02, 0xaa, 0, 0, 0, 0x01}, 700, 10);
    far.send(in);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(a->wait_rx(1, rx));
    EXPECT_EQ(rx[0].data, in);
    auto ups = dp->uplinks();
    ASSERT_EQ(ups.size(), 1u);
    EXPECT_EQ(ups[0].stats.gso_frames, 2u);
    EXPECT_EQ(ups[0].stats.gso_segments, 8u);
    EXPECT_EQ(ups[0].stats.drop_oversize, 1u);
    EXPECT_GE(ups[0].stats.to_vif_frames, 1u);
    EXPECT_EQ(ups[0].stats.drop_copy_error, 0u);
}

TEST_F(NetbackDatapath, UplinkDestinationOverItsUmemQuotaFallsBackToBounceBuffers) {
    std::string why;
    if (!test::veth_netns("zcdpa", "zcdpb", &why)) GTEST_SKIP() << why;
    start();
    auto a = guest(1, false, true, 0); // posts no RX buffers yet: frames wait, holding UMEM
    ASSERT_TRUE(a);
    netback::uplink_options uo;
    uo.ifname = "zcdpa";
    uo.frames = 256;
    uo.ring = 64;
    uo.dest_quota = 2;
    ASSERT_EQ(dp->add_uplink(uo, &why), 0) << why;
    test::raw_sock far("zcdpb");
    std::vector<std::vector<uint8_t>> sent;
    for (uint32_t i = 0; i < 5; ++i) {
        sent.push_back(make_frame(a->mac, mac_addr{0x02, 0xaa, 0, 0, 0, 0x01}, 200 + i, 20 + i));
        far.send(sent.back());
    }
    ASSERT_TRUE(eventually([&] { return dp->uplinks()[0].stats.to_vif_frames >= 5; }));
    EXPECT_EQ(dp->uplinks()[0].stats.quota_fallbacks, 3u) << "two wait in UMEM, three in bounce buffers";
    a->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(a->wait_rx(5, rx));
    for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(rx[i].data, sent[i]) << i;
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
}
