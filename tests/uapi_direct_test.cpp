// SPDX-License-Identifier: MIT
// The direct path through zc-stackd and the zc API (docs/ARCHITECTURE.md,
// "Direct path (guest to guest)"): two guests' zc-stackd behind zc-netback
// on the emulated host, applications using libzcnet. A connected socket's
// datagrams go as descriptors of its pool (zc-netback copies headers only),
// the receiver maps the sender's pages and copies the payload; fallback when
// the peer is not on the extension; either side going away mid-stream.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

void fill(uint8_t* p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = uint8_t((seed * 131 + i * 7) ^ (i >> 5));
}

bool eventually(const std::function<bool()>& f, int ms = 5000) {
    for (int i = 0; i < ms / 10; i++) {
        if (f()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return f();
}

netback::vif_info vif(uapi_rig& r, hv::domid_t d) {
    for (auto& v : r.be->dp().vifs())
        if (v.frontend == d) return v;
    return {};
}

// Direct path on guest `ip`'s zc-stackd or not.
std::function<void(stackd::options&)> direct_on(bool g1, bool g2) {
    return [g1, g2](stackd::options& o) { o.zc_direct = o.ip == guest_ip(1) ? g1 : g2; };
}

// Sends `count` datagrams of `len` bytes (payload seeded by their index)
// from p.tx, reaping completions as it goes; returns how many completed
// with res == len. `received` collects what p.rx got, checked in order.
struct stream {
    uapi_rig& r;
    pair& p;
    uint32_t sent = 0, completed = 0, ok = 0, received = 0, bad = 0, next_seed = 0;

    void reap_some() {
        zc_completion c[64];
        int k = zc_completions(p.tx, c, 64);
        for (int i = 0; i < k; i++) {
            completed++;
            ok += c[i].res > 0;
            (void)zc_buf_free(p.tx, reinterpret_cast<void*>(c[i].user_data));
        }
    }
    void recv_some_now(size_t len) {
        zc_rxd d[64];
        int k = zc_recv(p.rx, d, 64);
        for (int i = 0; i < k; i++) {
            std::vector<uint8_t> want(len);
            fill(want.data(), len, next_seed++);
            if (d[i].len != len || std::memcmp(d[i].data, want.data(), len) != 0) bad++;
            received++;
            (void)zc_rx_release(p.rx, d[i].data);
        }
    }
    // Returns false when a buffer could not be had in time.
    bool send(uint32_t count, size_t len, bool recv = true) {
        for (uint32_t i = 0; i < count; i++) {
            void* b = nullptr;
            for (int w = 0; zc_buf_alloc(p.tx, &b) != 0; w++) {
                if (w > 5000) return false;
                reap_some();
                if (recv) recv_some_now(len);
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
            fill(static_cast<uint8_t*>(b), len, sent);
            if (zc_send(p.tx, b, len, nullptr, 0, reinterpret_cast<uint64_t>(b)) < 0) return false;
            sent++;
            if (recv) recv_some_now(len);
        }
        return true;
    }
    bool drain(size_t len, bool recv = true, int ms = 8000) {
        return eventually(
            [&] {
                reap_some();
                if (recv) recv_some_now(len);
                return completed == sent && (!recv || received == sent);
            },
            ms);
    }
};

// What the two stacks counted, for failure messages.
std::string counts(uapi_rig& r) {
    std::string o;
    for (int d = 1; d <= 2; d++) {
        if (!r.g[d].svc) continue;
        const auto c = r.g[d].svc->stats();
        o += "g" + std::to_string(d) + ": tx_zc " + std::to_string(c.tx_zc) + " tx_direct " +
             std::to_string(c.tx_direct) + " fallback " + std::to_string(c.tx_direct_fallback) + " refused " +
             std::to_string(c.tx_direct_refused) + " rx_frames " + std::to_string(c.rx_frames) + " rx_udp " +
             std::to_string(c.rx_udp) + " rx_direct " + std::to_string(c.rx_direct) + " bad " +
             std::to_string(c.rx_direct_bad) + " maps " + std::to_string(c.direct_maps) + " unmaps " +
             std::to_string(c.direct_unmaps) + " rx_drops " + std::to_string(c.rx_drops) + "; ";
    }
    return o;
}

} // namespace

// App to app between two guests: every datagram on the direct path, payload
// intact and in order, and zc-netback copied the headers of each (twice:
// reading them, into the receiver's RX page) and no payload byte.
TEST(UapiDirect, AppToAppPayloadTakenByTheReceiverNotZcNetback) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    pair p(r, 7101);
    stream s{r, p};
    ASSERT_TRUE(s.send(1, 1000)); // ARP resolved, pool granted, first page mapped
    ASSERT_TRUE(s.drain(1000)) << counts(r);
    const uint64_t bytes0 = r.be->dp().hv_counters().copy_bytes;
    const auto a0 = r.g[1].svc->stats(), b0 = r.g[2].svc->stats();
    // In windows of 32: below the direct-path quota (64 outstanding per
    // destination), beyond which datagrams take the ordinary path.
    const uint32_t n = 320;
    for (uint32_t w = 0; w < n / 32; w++) {
        ASSERT_TRUE(s.send(32, 1000));
        ASSERT_TRUE(s.drain(1000)) << counts(r);
    }
    EXPECT_EQ(s.bad, 0u);
    EXPECT_EQ(s.ok, s.sent);
    const auto a = r.g[1].svc->stats(), b = r.g[2].svc->stats();
    EXPECT_EQ(a.tx_direct - a0.tx_direct, n);
    EXPECT_EQ(a.tx_direct_fallback, 0u);
    EXPECT_EQ(b.rx_direct - b0.rx_direct, n);
    EXPECT_EQ(b.rx_direct_bad, 0u);
    EXPECT_GE(b.direct_maps, 1u);
    EXPECT_LE(b.direct_maps, 128u); // once per page of the sender's pool, not per datagram
    EXPECT_GE(vif(r, 1).stats.direct_frames, n);
    // Headers only: 2 x 42 bytes per datagram (slack for an ARP exchange).
    const uint64_t copied = r.be->dp().hv_counters().copy_bytes - bytes0;
    EXPECT_GE(copied, uint64_t{n} * 2 * 42);
    EXPECT_LE(copied, uint64_t{n} * 2 * 42 + 512);
}

// The same traffic with the direct path off in both guests: the ordinary
// path (zc-netback copies every payload), which the test above tells apart.
TEST(UapiDirect, OffMeansZcNetbackCopiesThePayload) {
    uapi_rig r(true, direct_on(false, false));
    ASSERT_TRUE(r.ok());
    pair p(r, 7102);
    stream s{r, p};
    ASSERT_TRUE(s.send(1, 1000));
    ASSERT_TRUE(s.drain(1000));
    const uint64_t bytes0 = r.be->dp().hv_counters().copy_bytes;
    ASSERT_TRUE(s.send(50, 1000));
    ASSERT_TRUE(s.drain(1000));
    EXPECT_EQ(s.bad, 0u);
    EXPECT_EQ(r.g[1].svc->stats().tx_direct, 0u);
    EXPECT_GE(r.be->dp().hv_counters().copy_bytes - bytes0, 50u * 1000);
}

// The receiver's zc-stackd is not on the extension: it is not in the
// sender's zc-direct-peers, every datagram takes the ordinary path.
TEST(UapiDirect, PeerNotOnTheExtensionTakesTheOrdinaryPath) {
    uapi_rig r(true, direct_on(true, false));
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r.g[1].svc->link().zc_direct());
    EXPECT_FALSE(r.g[2].svc->link().zc_direct());
    pair p(r, 7103);
    stream s{r, p};
    ASSERT_TRUE(s.send(100, 700));
    ASSERT_TRUE(s.drain(700));
    EXPECT_EQ(s.bad, 0u);
    EXPECT_EQ(s.ok, 100u);
    EXPECT_EQ(r.g[1].svc->stats().tx_direct, 0u);
    EXPECT_EQ(r.g[2].svc->stats().rx_direct, 0u);
}

// A receiver that stops releasing (its application takes nothing): the
// sender's outstanding direct datagrams stop at the quota and the rest go
// the ordinary path, counted; nothing is lost or reordered once it reads.
TEST(UapiDirect, SlowReceiverMakesTheSenderFallBackInOrder) {
    uapi_rig r(true, [](stackd::options& o) { o.direct_quota = 8; });
    ASSERT_TRUE(r.ok());
    pair p(r, 7104);
    stream s{r, p};
    ASSERT_TRUE(s.send(1, 200));
    ASSERT_TRUE(s.drain(200));
    // The receiver's stack keeps taking descriptors (and releasing them
    // once copied), so hold its loop: nothing is released meanwhile.
    r.g[2].halt();
    ASSERT_TRUE(s.send(40, 200, false));
    EXPECT_TRUE(eventually([&] { return r.g[1].svc->stats().tx_direct_fallback >= 1; }));
    const auto a = r.g[1].svc->stats();
    EXPECT_LE(a.tx_direct, 1u + 8u);
    // Resume it: everything arrives, in order, intact.
    r.g[2].stop = false;
    r.g[2].loop = std::thread([&G = r.g[2]] { (void)G.svc->run(G.stop); });
    ASSERT_TRUE(s.drain(200));
    EXPECT_EQ(s.bad, 0u);
    EXPECT_EQ(s.received, s.sent);
}

// The receiver goes away mid-stream (its vif removed, as the toolstack does
// when the domain dies): every send completes, none hangs.
TEST(UapiDirect, ReceiverGoneMidStreamSendsComplete) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    pair p(r, 7105);
    stream s{r, p};
    ASSERT_TRUE(s.send(1, 500));
    ASSERT_TRUE(s.drain(500));
    r.g[2].halt(); // holding descriptors, releasing none
    ASSERT_TRUE(s.send(20, 500, false));
    EXPECT_TRUE(eventually([&] { return vif(r, 2).direct_outstanding > 0; }));
    ASSERT_EQ(netback::vif_destroy(*r.xs0, 0, 2, 0), 0);
    EXPECT_TRUE(s.drain(500, false)) << s.completed << " of " << s.sent << " completed";
}

// The sender goes away (its vif removed): it leaves the receiver's
// zc-direct-peers and the receiver unmaps every page of it.
TEST(UapiDirect, SenderGoneReceiverUnmaps) {
    uapi_rig r(true, [](stackd::options& o) { o.direct_map_idle_ms = 600000; });
    ASSERT_TRUE(r.ok());
    pair p(r, 7106);
    stream s{r, p};
    ASSERT_TRUE(s.send(50, 1400));
    ASSERT_TRUE(s.drain(1400));
    const auto b = r.g[2].svc->stats();
    ASSERT_GE(b.direct_maps, 1u);
    EXPECT_EQ(b.direct_unmaps, 0u); // kept: not idle, the sender is there
    r.g[1].halt();
    ASSERT_EQ(netback::vif_destroy(*r.xs0, 0, 1, 0), 0);
    EXPECT_TRUE(eventually([&] {
        const auto x = r.g[2].svc->stats();
        return x.direct_unmaps == x.direct_maps;
    }));
}

// Idle mappings go: the sender can then end the grants of a closed
// socket's pool (here: a new socket on the same slot opens and works).
TEST(UapiDirect, IdleMappingsAreUnmapped) {
    uapi_rig r(true, [](stackd::options& o) { o.direct_map_idle_ms = 200; });
    ASSERT_TRUE(r.ok());
    {
        pair p(r, 7107);
        stream s{r, p};
        ASSERT_TRUE(s.send(20, 300));
        ASSERT_TRUE(s.drain(300));
    }
    EXPECT_TRUE(eventually([&] {
        const auto x = r.g[2].svc->stats();
        return x.direct_maps > 0 && x.direct_unmaps == x.direct_maps;
    }));
}

// Streaming past the quota: every datagram is delivered or counted as a
// drop at the receiving socket (no free receive buffer), none vanishes on
// the way between the two paths.
TEST(UapiDirect, StreamPastTheQuotaAccountsForEveryDatagram) {
    uapi_rig r(true, [](stackd::options& o) { o.direct_quota = 16; });
    ASSERT_TRUE(r.ok());
    pair p(r, 7108);
    stream s{r, p};
    ASSERT_TRUE(s.send(2000, 1200));
    EXPECT_TRUE(eventually([&] {
        s.reap_some();
        s.recv_some_now(1200);
        return s.completed == s.sent && s.received + r.g[2].svc->stats().rx_drops >= s.sent;
    })) << counts(r) << " received " << s.received << " of " << s.sent;
    EXPECT_EQ(s.ok, s.sent);
    EXPECT_GT(r.g[1].svc->stats().tx_direct, 0u);
    EXPECT_GT(r.g[1].svc->stats().tx_direct_fallback, 0u);
    EXPECT_EQ(r.g[1].svc->stats().tx_direct + r.g[1].svc->stats().tx_direct_fallback, s.sent);
    // In order, unless some were dropped (then the seeds no longer line up).
    if (r.g[2].svc->stats().rx_drops == 0) {
        EXPECT_EQ(s.bad, 0u) << counts(r);
    }
}

// --direct-at-quota wait: at the quota the socket waits for the receiver's
// releases instead of falling back; every datagram goes direct.
TEST(UapiDirect, WaitAtTheQuotaKeepsEveryDatagramDirect) {
    uapi_rig r(true, [](stackd::options& o) {
        o.direct_quota = 8;
        o.direct_wait = true;
    });
    ASSERT_TRUE(r.ok());
    pair p(r, 7109);
    stream s{r, p};
    ASSERT_TRUE(s.send(1, 200));
    ASSERT_TRUE(s.drain(200));
    r.g[2].halt();
    ASSERT_TRUE(s.send(40, 200, false));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_LE(r.g[1].svc->stats().tx_direct, 1u + 8u);
    r.g[2].stop = false;
    r.g[2].loop = std::thread([&G = r.g[2]] { (void)G.svc->run(G.stop); });
    ASSERT_TRUE(s.drain(200)) << counts(r);
    EXPECT_EQ(s.bad, 0u);
    EXPECT_EQ(r.g[1].svc->stats().tx_direct, s.sent);
    EXPECT_EQ(r.g[1].svc->stats().tx_direct_fallback, 0u);
}
