// SPDX-License-Identifier: MIT
// zc-netback's workers and where queues live (netback/placement.cpp): with
// two workers, the two ends of each VM-to-VM flow end up on one worker
// while traffic runs, every frame arrives intact and in order across the
// moves, a pair talking both ways settles instead of moving back and forth,
// and removing vifs while their queues move is safe. Also run under TSan
// (.ci/run).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "netback_datapath_fixture.hpp"

using namespace zc;
using namespace zc::test::netback_dp;

namespace {

using clock_type = std::chrono::steady_clock;

class NetbackWorkers : public NetbackDatapath {
public:
    uint32_t worker_of(hv::domid_t d) {
        auto i = info(d);
        return i.queue_state.empty() ? ~0u : i.queue_state[0].worker;
    }
    uint64_t moves(std::initializer_list<hv::domid_t> ds) {
        uint64_t n = 0;
        for (auto d : ds) n += info(d).stats.queue_moves;
        return n;
    }
};

uint32_t len_of(uint32_t i) { return 60 + (i * 977u) % 1455u; }

// `from` sends a burst of 32 frames to `to`, numbered from `i` on (each
// payload seeded with its number), and waits for their TX responses.
bool burst(raw_frontend& from, const raw_frontend& to, uint32_t& i, int timeout_ms = 10000) {
    std::vector<uint16_t> ids;
    for (int k = 0; k < 32; ++k, ++i) {
        auto f = make_frame(to.mac, from.mac, len_of(i), i);
        auto one = from.send(f);
        ids.insert(ids.end(), one.begin(), one.end());
    }
    std::vector<netif_tx_response> tr;
    if (!from.wait_tx(ids.size(), tr, timeout_ms)) return false;
    for (auto& r : tr)
        if (r.status != NETIF_RSP_OKAY) return false;
    return true;
}

// `from` streams bursts to `to` until `stop`, then says how many it sent.
void stream(raw_frontend& from, const raw_frontend& to, const std::atomic<bool>& stop, uint32_t& sent,
            std::atomic<bool>& failed, int timeout_ms = 10000) {
    uint32_t i = 0;
    while (!stop.load())
        if (!burst(from, to, i, timeout_ms)) {
            failed = true;
            break;
        }
    sent = i;
}

// `me` receives until `total` (set once the sender stopped) frames came or
// nothing arrives for 5 s; returns the frames in order, checked.
struct receiver_result {
    uint32_t got = 0, bad = 0;
    // Frames just taken from the RX ring: in order and intact, frame number
    // `got` must be the next one.
    void check(const raw_frontend& me, const raw_frontend& peer, const std::vector<rx_packet>& pk) {
        for (auto& p : pk) {
            if (p.error || p.data != make_frame(me.mac, peer.mac, len_of(got), got)) ++bad;
            ++got;
        }
    }
};
void receive(raw_frontend& me, const raw_frontend& peer, const std::atomic<int64_t>& total, receiver_result& res) {
    std::vector<rx_packet> pk;
    auto last = clock_type::now();
    for (;;) {
        const int64_t want = total.load();
        if (want >= 0 && res.got >= uint64_t(want)) return;
        pk.clear();
        me.wait_rx(1, pk, 50);
        if (!pk.empty()) last = clock_type::now();
        res.check(me, peer, pk);
        if (clock_type::now() - last > std::chrono::seconds(5)) return;
    }
}

// Two pairs, two workers: a new queue goes to the least-loaded worker, so
// both senders start on one worker and both receivers on the other (every
// frame crosses workers). While the pairs stream, each pair is put on one
// worker, the two pairs on different workers, with nothing lost, corrupted
// or reordered around the moves.
TEST_F(NetbackWorkers, TwoPairsSettleOnePerWorkerWithNothingLostOrReordered) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    raw_frontend* g[4];
    for (int k = 0; k < 4; ++k) ASSERT_TRUE(g[k] = guest(hv::domid_t(k + 1), k >= 2));
    ASSERT_EQ(worker_of(1), worker_of(3)) << "both senders start on one worker";
    ASSERT_NE(worker_of(1), worker_of(2));
    std::atomic<bool> stop{false}, failed{false};
    std::atomic<int64_t> total[2] = {-1, -1};
    uint32_t sent[2] = {0, 0};
    receiver_result res[2];
    std::vector<std::thread> th;
    for (int p = 0; p < 2; ++p) {
        th.emplace_back([&, p] { stream(*g[2 * p], *g[2 * p + 1], stop, sent[p], failed); });
        th.emplace_back([&, p] { receive(*g[2 * p + 1], *g[2 * p], total[p], res[p]); });
    }
    const bool settled = eventually(
        [&] {
            return worker_of(1) == worker_of(2) && worker_of(3) == worker_of(4) && worker_of(1) != worker_of(3);
        },
        20000);
    // Keep streaming a while after the moves: the frames around them count.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
    th[0].join();
    th[2].join();
    total[0] = sent[0];
    total[1] = sent[1];
    th[1].join();
    th[3].join();
    EXPECT_TRUE(settled) << "workers: " << worker_of(1) << worker_of(2) << worker_of(3) << worker_of(4);
    EXPECT_FALSE(failed.load());
    for (int p = 0; p < 2; ++p) {
        EXPECT_GT(sent[p], 0u);
        EXPECT_EQ(res[p].got, sent[p]) << "pair " << p;
        EXPECT_EQ(res[p].bad, 0u) << "pair " << p;
    }
    EXPECT_GE(moves({1, 2, 3, 4}), 2u);
    EXPECT_LE(moves({1, 2, 3, 4}), 4u) << "no move back and forth";
    for (hv::domid_t d = 1; d <= 4; ++d) {
        auto s = info(d).stats;
        EXPECT_EQ(s.drop_rx_full + s.drop_disabled + s.drop_copy_error + s.drop_no_dest, 0u) << "d" << d;
    }
}

// One frontend sending to `peer` and receiving from it, from one thread
// (a raw_frontend is not shared between threads): bursts until `stop`, the
// RX ring drained after each, then the rest of what `peer` sent.
void talk(raw_frontend& me, const raw_frontend& peer, const std::atomic<bool>& stop, std::atomic<int64_t>& my_total,
          const std::atomic<int64_t>& peer_total, receiver_result& res, std::atomic<bool>& failed) {
    std::vector<rx_packet> pk;
    uint32_t i = 0;
    while (!stop.load()) {
        if (!burst(me, peer, i)) {
            failed = true;
            break;
        }
        pk.clear();
        me.wait_rx(0, pk, 0);
        res.check(me, peer, pk);
    }
    my_total = i;
    receive(me, peer, peer_total, res);
}

// One pair sending both ways: each end's frames go to the other, so both
// owners see a peer on another worker. They end up together and stay: a
// move or two, not one every cooldown.
TEST_F(NetbackWorkers, PairTalkingBothWaysSettlesWithoutPingPong) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto a = guest(1), b = guest(2);
    ASSERT_TRUE(a && b);
    ASSERT_NE(worker_of(1), worker_of(2));
    std::atomic<bool> stop{false}, failed{false};
    std::atomic<int64_t> total[2] = {-1, -1};
    receiver_result res[2]; // res[0]: what a received
    std::thread ta([&] { talk(*a, *b, stop, total[0], total[1], res[0], failed); });
    std::thread tb([&] { talk(*b, *a, stop, total[1], total[0], res[1], failed); });
    const bool together = eventually([&] { return worker_of(1) == worker_of(2); }, 20000);
    // Long enough for several cooldowns (placement.cpp: 250 ms).
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    const bool still = worker_of(1) == worker_of(2);
    stop = true;
    ta.join();
    tb.join();
    EXPECT_TRUE(together);
    EXPECT_TRUE(still);
    EXPECT_FALSE(failed.load());
    EXPECT_GT(total[0].load(), 0);
    EXPECT_EQ(int64_t(res[1].got), total[0].load());
    EXPECT_EQ(int64_t(res[0].got), total[1].load());
    EXPECT_EQ(res[0].bad + res[1].bad, 0u);
    EXPECT_GE(moves({1, 2}), 1u);
    EXPECT_LE(moves({1, 2}), 2u);
}

// Vifs removed while their queues are being moved: each round starts a
// pair streaming across the two workers and removes both ends at once, at
// a different moment of the placement (before, during, after the first
// move). Nothing crashes or hangs, the removed vifs leave no mapping or
// bounce buffer behind, and a pair that stays still delivers.
TEST_F(NetbackWorkers, VifRemovalWhileQueuesMoveIsSafe) {
    netback::datapath_options o;
    o.workers = 2;
    start(o);
    auto x = guest(50), y = guest(51);
    ASSERT_TRUE(x && y);
    for (int round = 0; round < 8; ++round) {
        const hv::domid_t da = hv::domid_t(1 + 2 * round), db = hv::domid_t(2 + 2 * round);
        auto a = guest(da), b = guest(db);
        ASSERT_TRUE(a && b);
        std::atomic<bool> stop{false}, failed{false};
        uint32_t sent = 0;
        std::thread ta([&] { stream(*a, *b, stop, sent, failed, 300); });
        std::thread rb([&] {
            std::vector<rx_packet> pk;
            while (!stop.load()) b->wait_rx(1, pk, 20);
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(5 + 15 * round));
        // The sender first (the queue that moves here: placement.cpp moves
        // it to its receiver's worker), then the receiver.
        EXPECT_EQ(dp->remove_vif(da, 0), 0);
        EXPECT_EQ(dp->remove_vif(db, 0), 0);
        // The frontend's TX ring is no longer served: its sender stops on
        // its own timeout, which is not what this round checks.
        stop = true;
        ta.join();
        rb.join();
        EXPECT_EQ(dp->bounce_in_use(), 0u);
    }
    {
        std::lock_guard g(lock);
        EXPECT_TRUE(fatals.empty());
    }
    // Some rounds removed the pair after its first move (the later ones).
    EXPECT_GE(dp->retired_stats().queue_moves, 1u);
    // A batch of the sender being switched while its receiver went away
    // floods its frames (now unknown unicast) to x and y, as a learning
    // switch does: off their rings before they talk.
    std::vector<rx_packet> flooded;
    x->wait_rx(1u << 20, flooded, 300);
    y->wait_rx(1u << 20, flooded, 300);
    expect_delivery(*x, *y);
    expect_delivery(*y, *x);
    EXPECT_EQ(info(50).stats.drop_copy_error + info(51).stats.drop_copy_error, 0u);
    ASSERT_EQ(dp->remove_vif(50, 0), 0);
    ASSERT_EQ(dp->remove_vif(51, 0), 0);
    expect_balanced();
}

} // namespace
