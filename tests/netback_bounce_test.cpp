// SPDX-License-Identifier: MIT
// zc-netback's bounce pool against hostile and slow guests: the per-vif
// quotas of the shared bounce pool (by bytes, as sender and as receiver),
// the bound on the TX slots a destination that takes nothing may hold, and
// the drops they cause, counted (drop_bounce_quota). Linux netback is the
// floor: a frame beyond a vif's rx_queue_max is dropped and counted
// (xenvif_rx_queue_tail), and nothing waits past rx_drain_timeout_msecs
// (xenvif_rx_queue_drop_expired).
//
// Every test here fails with the quotas and the bound off: run them with
// ZCNET_TEST_BOUNCE_QUOTAS_OFF=1 to see it.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <thread>
#include <vector>

#include "netback_datapath_fixture.hpp"

using namespace zc;
using namespace zc::test::netback_dp;

namespace {

// A 19-slot frame of 32 bytes: a 14-byte first slot and 18 one-byte slots
// (Linux's limit is XEN_NETBK_LEGACY_SLOTS_MAX frags after the first).
const std::vector<uint16_t> tiny_layout = [] {
    std::vector<uint16_t> s{14};
    s.resize(19, 1);
    return s;
}();
constexpr uint32_t tiny_len = 14 + 18;

class NetbackBounce : public NetbackDatapath {
public:
    // The quotas and the held-slot bound under test, or none of them.
    static void limits(netback::datapath_options& o, uint64_t src_quota, uint64_t dst_quota) {
        o.bounce_src_quota = src_quota;
        o.bounce_dst_quota = dst_quota;
        if (const char* e = std::getenv("ZCNET_TEST_BOUNCE_QUOTAS_OFF"); e && *e == '1') {
            o.bounce_src_quota = o.bounce_dst_quota = netback::bounce_quota_off;
            o.held_tx_slots = 1u << 20;
        }
    }

    // Reads the TX responses there are; true when `slots` more requests fit.
    // (raw_frontend reuses TX pages in ring order, so a sender whose frames
    // complete out of order, some waiting and others dropped or bounced,
    // sends in rounds: a full ring, then every response back.)
    static bool room(raw_frontend& g, uint32_t slots) {
        std::vector<netif_tx_response> r;
        g.wait_tx(0, r, 0);
        return g.tx.req_prod_pvt - g.tx.rsp_cons + slots <= ring_size;
    }

    static uint64_t drops(const netback::vif_stats& s) {
        uint64_t n = 0;
        for (size_t k = 0; k < netback::vif_stats::schema_size; ++k)
            if (netback::vif_stats::schema[k].drop) n += s.field(k);
        return n;
    }

    // Every frame the senders sent is delivered to one of the receivers or
    // counted as a drop on one of the vifs involved; the receivers take
    // what waits for them.
    bool all_accounted(const std::vector<raw_frontend*>& from, const std::vector<raw_frontend*>& to,
                       std::vector<std::vector<rx_packet>>& got) {
        got.resize(to.size());
        return eventually([&] {
            for (size_t i = 0; i < to.size(); ++i) to[i]->wait_rx(1u << 20, got[i], 10);
            uint64_t sent = 0, delivered = 0, dropped = 0;
            for (raw_frontend* f : from) {
                const auto s = info(f->dom).stats;
                sent += s.tx_packets;
                dropped += drops(s);
            }
            for (raw_frontend* t : to) {
                const auto s = info(t->dom).stats;
                delivered += s.rx_packets;
                dropped += drops(s);
            }
            return delivered + dropped == sent;
        });
    }
};

// One guest floods two destinations that never post RX buffers with 19-slot
// frames of a few bytes (each slot a whole bounce buffer before the pool was
// allocated by bytes: the pool emptied in ~54 frames), while two other
// guests exchange traffic at full rate and one of them also sends to a slow
// but honest third, whose frames need bounce buffers (it posts its buffers
// after hold_ms). Their traffic carries on; the flood takes no more of the
// pool than its quotas, and its drops are counted.
TEST_F(NetbackBounce, Item3_HostileSourceToDeadDestinationsDoesNotStarveOthers) {
    constexpr uint64_t src_quota = 256 * 1024, dst_quota = 192 * 1024;
    netback::datapath_options o;
    o.workers = 2;
    o.bounce_buffers = 512;     // 2 MiB: the two dead destinations' queues (512 frames each) would fill it
    o.drain_timeout_ms = 60000; // the dead destinations keep what they hold for the whole test
    limits(o, src_quota, dst_quota);
    start(o);
    auto h = guest(1), d1 = guest(2, false, true, 0), d2 = guest(3, false, true, 0), a = guest(4), b = guest(5),
         c = guest(6, false, true, 0);
    ASSERT_TRUE(h && d1 && d2 && a && b && c);

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> flood_sent{0};
    std::thread hostile([&] {
        uint32_t seed = 0;
        while (!stop.load()) {
            while (room(*h, uint32_t(tiny_layout.size()))) {
                raw_frontend& to = seed % 2 ? *d2 : *d1;
                h->send(make_frame(to.mac, h->mac, tiny_len, seed++), tiny_layout);
                flood_sent.fetch_add(1);
            }
            while (!stop.load() && !room(*h, ring_size)) h->wait_event(2);
        }
    });
    // A failed assertion returns early: the flood stops then too.
    struct joiner {
        std::atomic<bool>& stop;
        std::thread& t;
        ~joiner() {
            stop = true;
            if (t.joinable()) t.join();
        }
    } join_hostile{stop, hostile};

    // The flood has had time to take what it can.
    ASSERT_TRUE(eventually([&] { return info(1).stats.tx_packets > 1200; }, 20000));

    // The innocent pair: rounds of 16 frames each way, every frame delivered
    // intact. Bounce use of the flood is sampled meanwhile.
    uint64_t max_src = 0, max_dst = 0, exchanged = 0, slow = 0;
    constexpr uint32_t rounds = 150, per_round = 16;
    for (uint32_t r = 0; r < rounds && !HasFatalFailure(); ++r) {
        for (int dir = 0; dir < 2; ++dir) {
            raw_frontend& from = dir ? *b : *a;
            raw_frontend& to = dir ? *a : *b;
            std::vector<std::vector<uint8_t>> sent;
            size_t slots = 0;
            for (uint32_t i = 0; i < per_round; ++i) {
                sent.push_back(make_frame(to.mac, from.mac, 1500, r * 100 + i + uint32_t(dir) * 50));
                slots += from.send(sent.back()).size();
            }
            std::vector<netif_tx_response> tr;
            ASSERT_TRUE(from.wait_tx(slots, tr)) << "round " << r;
            std::vector<rx_packet> rx;
            ASSERT_TRUE(to.wait_rx(per_round, rx)) << "round " << r << ": innocent traffic stopped";
            for (uint32_t i = 0; i < per_round; ++i) ASSERT_TRUE(rx[i].data == sent[i]) << r << "/" << i;
            exchanged += per_round;
        }
        if (r % 10 == 0) {
            max_src = std::max(max_src, info(1).bounce_src_bytes);
            max_dst = std::max({max_dst, info(2).bounce_dst_bytes, info(3).bounce_dst_bytes});
        }
        if (r % 10 == 5) {
            // The slow receiver: A's frames wait past hold_ms, move to bounce
            // buffers (A gets its slots back), and arrive once C posts.
            std::vector<std::vector<uint8_t>> sent;
            size_t slots = 0;
            for (uint32_t i = 0; i < 4; ++i) {
                sent.push_back(make_frame(c->mac, a->mac, 1500, 7000 + r * 10 + i));
                slots += a->send(sent.back()).size();
            }
            std::vector<netif_tx_response> tr;
            ASSERT_TRUE(a->wait_tx(slots, tr)) << "round " << r;
            c->post_rx(4);
            std::vector<rx_packet> rx;
            ASSERT_TRUE(c->wait_rx(4, rx, 5000, /*repost=*/false)) << "round " << r << ": the slow receiver's frames";
            for (uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(rx[i].data == sent[i]) << r << "/" << i;
            slow += 4;
        }
    }
    // Let the flood go on until the quotas are certainly used up.
    stop = true;
    hostile.join();
    EXPECT_EQ(exchanged, 2u * rounds * per_round);
    EXPECT_EQ(slow, 4u * rounds / 10);
    EXPECT_GE(info(4).stats.fallback_copies, slow) << "the slow receiver's frames went through bounce buffers";
    EXPECT_EQ(drops(info(4).stats) + drops(info(5).stats) + drops(info(6).stats), 0u);

    // The flood held no more than its quotas, all along and now.
    const auto ih = info(1), i1 = info(2), i2 = info(3);
    max_src = std::max(max_src, ih.bounce_src_bytes);
    max_dst = std::max({max_dst, i1.bounce_dst_bytes, i2.bounce_dst_bytes});
    EXPECT_LE(max_src, src_quota);
    EXPECT_LE(max_dst, dst_quota);
    EXPECT_LE(i1.bounce_dst_bytes + i2.bounce_dst_bytes, src_quota);
    EXPECT_LE(uint64_t(dp->bounce_in_use()) * hv::page_size, src_quota) << "the pool beyond the sender's quota";
    EXPECT_GT(ih.bounce_src_bytes, 0u);
    // And the rest was dropped, counted on the vif whose quota it was.
    EXPECT_GT(ih.stats.drop_bounce_quota + i1.stats.drop_bounce_quota + i2.stats.drop_bounce_quota, 0u);
    EXPECT_TRUE(eventually([&] { return info(1).stats.tx_packets == flood_sent.load(); }));

    // Nothing is lost uncounted: once the dead destinations post buffers,
    // every frame of the flood was delivered or counted as a drop.
    d1->post_rx(rx_pages);
    d2->post_rx(rx_pages);
    std::vector<std::vector<rx_packet>> got;
    EXPECT_TRUE(all_accounted({h}, {d1, d2}, got));
    for (size_t i = 0; i < got.size(); ++i)
        for (auto& p : got[i]) {
            ASSERT_EQ(p.data.size(), tiny_len) << "a bounced frame arrived corrupt";
            EXPECT_EQ(mac_addr::load(p.data.data()), i ? d2->mac : d1->mac);
        }
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
    EXPECT_EQ(info(1).bounce_src_bytes, 0u);
}

// Two senders fill a destination that never posts RX buffers: what waits
// for it in bounce buffers stays within its quota, the rest is dropped and
// counted on it, and the bounced frames (packed: a 19-slot frame takes one
// buffer, a 9000-byte frame three) arrive intact once it posts buffers.
TEST_F(NetbackBounce, Item3_DestinationWithoutRxBuffersHoldsNoMoreThanItsQuota) {
    constexpr uint64_t dst_quota = 128 * 1024;
    netback::datapath_options o;
    o.hold_ms = 5;
    o.drain_timeout_ms = 60000;
    limits(o, 0, dst_quota);
    start(o);
    auto s1 = guest(1), s2 = guest(2), d = guest(3, false, true, 0);
    ASSERT_TRUE(s1 && s2 && d);
    std::map<std::vector<uint8_t>, int> sent; // frame -> copies sent
    constexpr uint32_t n = 120;
    uint32_t seed = 0;
    for (uint32_t i = 0; i < n;) {
        for (; i < n && room(*s1, 19) && room(*s2, 3); ++i) {
            auto f = make_frame(d->mac, s1->mac, tiny_len, seed++);
            s1->send(f, tiny_layout);
            ++sent[f];
            auto g = make_frame(d->mac, s2->mac, 9000, seed++);
            s2->send(g);
            ++sent[g];
        }
        ASSERT_TRUE(eventually([&] { return room(*s1, ring_size) && room(*s2, ring_size); }));
    }
    // The senders get every slot back: their frames were bounced or dropped.
    ASSERT_TRUE(eventually([&] { return room(*s1, ring_size) && room(*s2, ring_size); }));
    const auto id = info(3);
    EXPECT_GT(id.bounce_dst_bytes, 0u);
    EXPECT_LE(id.bounce_dst_bytes, dst_quota);
    EXPECT_LE(uint64_t(dp->bounce_in_use()) * hv::page_size, dst_quota);
    EXPECT_GT(id.stats.drop_bounce_quota, 0u);
    EXPECT_EQ(info(1).stats.drop_bounce_quota + info(2).stats.drop_bounce_quota, 0u) << "charged to the receiver";

    d->post_rx(rx_pages);
    std::vector<std::vector<rx_packet>> got;
    EXPECT_TRUE(all_accounted({s1, s2}, {d}, got));
    EXPECT_EQ(info(1).stats.tx_packets + info(2).stats.tx_packets, 2u * n);
    EXPECT_GT(got[0].size(), 0u);
    for (auto& p : got[0]) {
        auto it = sent.find(p.data);
        ASSERT_TRUE(it != sent.end() && it->second > 0) << "a frame arrived that was not sent (" << p.data.size()
                                                        << " bytes)";
        --it->second;
    }
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
    EXPECT_EQ(info(3).bounce_dst_bytes, 0u);
}

// A source whose frames wait at a destination that takes nothing (and whose
// queue is too full for the source-short pressure rule) keeps TX slots for
// its other destinations: the destination holds at most held_tx_slots of
// them, the rest move to bounce buffers, and the source's traffic to a
// third vif flows. Without the bound the source would wait hold_ms (here a
// minute) with every slot pinned.
TEST_F(NetbackBounce, Item3_HeldTxSlotsAreBoundedPerDestination) {
    netback::datapath_options o;
    o.hold_ms = 60000;
    o.drain_timeout_ms = 60000;
    o.rx_queue_bytes = 400 * 1024; // 200 frames of 1500 bytes: no room for the pressure rule
    o.held_tx_slots = 128;
    limits(o, 0, 0);
    start(o);
    auto s = guest(1), d = guest(2, false, true, 0), e = guest(3);
    ASSERT_TRUE(s && d && e);
    // Frames to D take TX pages 0-199, those to E the pages after them
    // (raw_frontend reuses pages in ring order; which of D's frames stay
    // zero-copy depends on when D counts as idle).
    constexpr uint32_t n = 200;
    std::vector<std::vector<uint8_t>> to_d;
    for (uint32_t i = 0; i < n; ++i) {
        to_d.push_back(make_frame(d->mac, s->mac, 1500, i));
        s->send(to_d.back());
    }
    // The source gets slots back (the destination holds at most 128)...
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(s->wait_tx(n - 128, tr)) << "the source's slots stay pinned by a destination that takes nothing";
    EXPECT_TRUE(eventually([&] { return info(1).queue_state[0].tx_in_flight <= 128; }));
    EXPECT_GE(info(1).stats.fallback_copies, n - 128);
    // ...and its other destination gets its frames.
    for (uint32_t i = 0; i < 16; ++i) expect_delivery(*s, *e, 1000 + i, 900 + i);
    // The waiting frames arrive in order once the destination posts.
    d->post_rx(rx_pages);
    std::vector<rx_packet> rx;
    ASSERT_TRUE(d->wait_rx(n, rx));
    for (uint32_t i = 0; i < n; ++i) EXPECT_TRUE(rx[i].data == to_d[i]) << i;
    EXPECT_EQ(drops(info(1).stats) + drops(info(2).stats), 0u);
    EXPECT_TRUE(eventually([&] { return dp->bounce_in_use() == 0; }));
}

// A destination that takes nothing: its waiting frames beyond the bounce
// quota are dropped (drop_bounce_quota) and stay in its queue as empty
// placeholders; when the vif is then removed, each waiting frame is counted
// once more as drop_disabled, except those placeholders, whose loss was
// counted already (docs/ARCHITECTURE.md, "Counters": every frame has
// exactly one outcome). Before, the removal counted them twice.
TEST_F(NetbackBounce, Item8_RemovedDestinationCountsEachFrameOnce) {
    netback::datapath_options o;
    o.workers = 1;
    o.bounce_buffers = 64;
    o.drain_timeout_ms = 60000; // nothing expires: only the removal ends the wait
    limits(o, 64 * 1024, 64 * 1024);
    start(o);
    auto s = guest(1), d = guest(2, false, true, 0);
    ASSERT_TRUE(s && d);
    uint64_t sent = 0;
    for (uint32_t round = 0; round < 20 && info(2).stats.drop_bounce_quota + info(1).stats.drop_bounce_quota < 4;
         ++round) {
        while (room(*s, 1) && sent < 64u * (round + 1)) s->send(make_frame(d->mac, s->mac, 1500, uint32_t(sent++)));
        ::usleep(20000);
    }
    ASSERT_GT(info(2).stats.drop_bounce_quota + info(1).stats.drop_bounce_quota, 0u) << "no placeholder to count";
    ASSERT_TRUE(eventually([&] { return info(1).stats.tx_packets == sent; }));
    ASSERT_EQ(dp->remove_vif(2, 0), 0);
    // The sender's frames: delivered to the removed vif or dropped, once.
    uint64_t out = 0;
    EXPECT_TRUE(eventually([&] {
        const auto r = dp->retired_stats();
        out = r.rx_packets + drops(r) + drops(info(1).stats);
        return out == sent && r.tx_packets == 0 && info(1).stats.tx_packets == sent;
    })) << "sent " << sent << ", delivered or dropped " << out;
}

} // namespace
