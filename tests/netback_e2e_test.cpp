// SPDX-License-Identifier: MIT
// End to end on the emulated host: zc-netback (control plane and data path)
// in dom0, guests speaking the netif protocol through the userspace
// netfront, which behaves like Linux xen-netfront. The vifs are created as
// the toolstack does (netback::vif_create).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include <arpa/inet.h>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

#include "netback_host.hpp"
#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "netback/backend.hpp"
#include "netback/metrics.hpp"
#include "netback/toolstack.hpp"

using namespace zc;

namespace {

constexpr int wait_ms = 10000;

// zc-netback serving in a thread of its own, as the daemon's main loop does.
struct rig {
    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    test::served_backend be;
    std::vector<std::unique_ptr<hv::port>> guests;

    explicit rig(netback::backend_options o = {}) {
        dom0 = host.domain(0);
        if (!dom0) return;
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return;
        xs0 = std::move(*x);
        if (!be.start(*dom0, o)) return;
    }
    ~rig() {
        be.stop();
    }
    bool ok() const { return bool(be); }

    // A guest domain with a vif (xl network-attach), connected.
    std::unique_ptr<link::netfront> guest(hv::domid_t d, link::netfront_options o = {}) {
        auto p = host.domain(d);
        if (!p) return nullptr;
        netback::vif_spec s;
        s.frontend = d;
        s.mtu = 65535; // the guests exchange non-GSO frames up to 64 KiB (xl: mtu=65535)
        std::string why;
        EXPECT_EQ(netback::vif_create(*xs0, s, &why), 0) << why;
        auto nf = link::netfront::connect(*p, o, &why);
        EXPECT_TRUE(nf) << why;
        guests.push_back(std::move(p));
        return nf ? std::move(*nf) : nullptr;
    }

    netback::vif_info vif(hv::domid_t fe) {
        for (auto& v : be->dp().vifs())
            if (v.frontend == fe) return v;
        ADD_FAILURE() << "no vif for d" << fe;
        return {};
    }
};

std::vector<uint8_t> frame(const link::mac_addr& dst, const link::mac_addr& src, size_t len, uint32_t seed) {
    std::vector<uint8_t> f(len);
    uint32_t x = seed * 2654435761u + 7;
    for (auto& b : f) {
        x = x * 1103515245u + 12345u;
        b = uint8_t(x >> 16);
    }
    std::memcpy(f.data(), dst.data(), 6);
    std::memcpy(f.data() + 6, src.data(), 6);
    f[12] = 0x88; // local experimental ethertype
    f[13] = 0xb5;
    return f;
}

// An Ethernet + IPv4 + TCP frame, as a TSO send from a Linux guest looks
// (checksum left for offload).
std::vector<uint8_t> tcp_frame(const link::mac_addr& dst, const link::mac_addr& src, size_t len, uint32_t seed) {
    auto f = frame(dst, src, len, seed);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t* ip = f.data() + 14;
    std::memset(ip, 0, 20);
    ip[0] = 0x45;
    uint16_t tot = htons(uint16_t(len - 14));
    std::memcpy(ip + 2, &tot, 2);
    ip[8] = 64;
    ip[9] = 6; // TCP
    ip[12] = 10, ip[13] = 0, ip[14] = 0, ip[15] = 1;
    ip[16] = 10, ip[17] = 0, ip[18] = 0, ip[19] = 2;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += uint32_t(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    uint16_t cs = htons(uint16_t(~sum));
    std::memcpy(ip + 10, &cs, 2);
    uint8_t* tcp = ip + 20;
    std::memset(tcp, 0, 20);
    tcp[0] = 0x30, tcp[1] = 0x39; // 12345
    tcp[2] = 0x00, tcp[3] = 0x50; // 80
    tcp[12] = 0x50;               // data offset 5
    tcp[13] = 0x18;               // PSH ACK
    tcp[14] = 0xFF, tcp[15] = 0xFF;
    return f;
}

// Receive one frame from any queue, waiting on events (bounded).
std::vector<uint8_t> recv_any(link::netfront& nf, link::rx_info* info = nullptr, uint32_t* queue = nullptr) {
    std::vector<uint8_t> buf(80000);
    for (int round = 0; round < 200; round++) {
        for (uint32_t q = 0; q < nf.queues(); q++) {
            auto r = nf.recv(buf.data(), buf.size(), q, info);
            if (r) {
                buf.resize(*r);
                if (queue) *queue = q;
                return buf;
            }
            EXPECT_EQ(r.error(), -EAGAIN);
        }
        if (nf.wait(wait_ms / 100) < 0) break;
    }
    return {};
}

int send_retry(link::netfront& nf, const std::vector<uint8_t>& f, uint32_t q = 0, const link::tx_offload* off = nullptr) {
    for (int i = 0; i < 500; i++) {
        int rc = nf.send(f.data(), f.size(), q, off);
        if (rc != -EAGAIN) return rc;
        nf.wait(20);
    }
    return -EAGAIN;
}

TEST(NetbackE2E, TwoGuestsExchangeFramesFrom60BytesTo64KiB) {
    rig r;
    ASSERT_TRUE(r.ok());
    auto a = r.guest(1);
    auto b = r.guest(2);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->mac(), netback::default_mac(1, 0));
    uint64_t slots = 0;
    for (size_t len : {size_t{60}, size_t{1514}, size_t{4096}, size_t{4097}, size_t{9000}, size_t{32768},
                       size_t{65535}}) {
        SCOPED_TRACE(len);
        auto f = frame(b->mac(), a->mac(), len, uint32_t(len));
        ASSERT_EQ(send_retry(*a, f), 0);
        auto got = recv_any(*b);
        ASSERT_EQ(got.size(), len);
        EXPECT_TRUE(got == f) << "payload intact";
        // And back.
        auto g = frame(a->mac(), b->mac(), len, uint32_t(len) + 1);
        ASSERT_EQ(send_retry(*b, g), 0);
        auto back = recv_any(*a);
        ASSERT_EQ(back.size(), len);
        EXPECT_TRUE(back == g);
        slots += 2 * ((len + 4095) / 4096);
    }
    // Let the last TX responses arrive.
    for (int i = 0; i < 5; i++) {
        a->wait(10);
        b->wait(10);
    }
    auto va = r.vif(1), vb = r.vif(2);
    EXPECT_EQ(va.stats.tx_packets, 7u);
    EXPECT_EQ(vb.stats.tx_packets, 7u);
    EXPECT_EQ(va.stats.rx_packets, 7u);
    EXPECT_EQ(va.stats.fallback_copies + vb.stats.fallback_copies, 0u) << "no copy through the backend's memory";
    // One grant copy per slot; the 60-byte frames from the header copy that read them whole.
    EXPECT_EQ(va.stats.vm_to_vm_segments + vb.stats.vm_to_vm_segments, slots - 2) << "one grant copy per slot";
    EXPECT_EQ(va.stats.hdr_payload_segments + vb.stats.hdr_payload_segments, 2u);
    auto sa = a->stats(), sb = b->stats();
    EXPECT_EQ(sa.rx_errors + sb.rx_errors, 0u);
    EXPECT_EQ(sa.tx_errors + sb.tx_errors, 0u);
    EXPECT_FALSE(a->broken() || b->broken());
}

TEST(NetbackE2E, MultiQueueSplitChannels) {
    netback::backend_options o;
    o.max_queues = 4;
    o.split_event_channels = true;
    rig r(o);
    ASSERT_TRUE(r.ok());
    link::netfront_options no;
    no.max_queues = 4;
    auto a = r.guest(1, no);
    auto b = r.guest(2, no);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->queues(), 4u);
    EXPECT_TRUE(a->split_event_channels());
    EXPECT_EQ(r.vif(1).queues, 4u);
    // Learn b's MAC first so that nothing is flooded.
    ASSERT_EQ(send_retry(*b, frame(a->mac(), b->mac(), 60, 0)), 0);
    ASSERT_EQ(recv_any(*a).size(), 60u);
    std::vector<std::vector<uint8_t>> sent;
    for (uint32_t q = 0; q < 4; q++)
        for (size_t len : {size_t{100}, size_t{20000}}) {
            sent.push_back(frame(b->mac(), a->mac(), len + q, q * 100 + uint32_t(len)));
            ASSERT_EQ(send_retry(*a, sent.back(), q), 0);
        }
    std::vector<std::vector<uint8_t>> got;
    for (size_t i = 0; i < sent.size(); i++) {
        auto f = recv_any(*b);
        ASSERT_FALSE(f.empty()) << "frame " << i << " lost";
        got.push_back(std::move(f));
    }
    std::sort(sent.begin(), sent.end());
    std::sort(got.begin(), got.end());
    EXPECT_TRUE(got == sent) << "every frame arrived intact, whichever queue carried it";
    uint64_t tx = 0;
    for (uint32_t q = 0; q < 4; q++) {
        EXPECT_EQ(a->stats(q).tx_packets, 2u) << q;
        tx += a->stats(q).tx_packets;
    }
    EXPECT_EQ(tx, 8u);
}

TEST(NetbackE2E, GsoAndChecksumOffloadAreCarriedThrough) {
    rig r;
    ASSERT_TRUE(r.ok());
    auto a = r.guest(1);
    auto b = r.guest(2);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->backend_gso_tcpv4());
    auto f = tcp_frame(b->mac(), a->mac(), 30000, 9);
    link::tx_offload off;
    off.csum_blank = true;
    off.gso_size = 1448;
    off.gso_type = XEN_NETIF_GSO_TYPE_TCPV4;
    ASSERT_EQ(send_retry(*a, f, 0, &off), 0);
    link::rx_info info;
    auto got = recv_any(*b, &info);
    ASSERT_EQ(got.size(), f.size());
    EXPECT_TRUE(got == f);
    EXPECT_EQ(info.gso_size, 1448u);
    EXPECT_EQ(info.gso_type, XEN_NETIF_GSO_TYPE_TCPV4);
    EXPECT_EQ(info.extras, 1u);
    EXPECT_TRUE(info.flags & NETRXF_csum_blank);
    EXPECT_EQ(b->stats().rx_errors, 0u);
}

// The close as xennet_remove does it: netback follows, unmaps first, and
// every grant of the guest ends; the other guest carries on.
TEST(NetbackE2E, DisconnectEndsEveryGrantAndOthersCarryOn) {
    rig r;
    ASSERT_TRUE(r.ok());
    auto a = r.guest(1);
    auto b = r.guest(2);
    auto c = r.guest(3);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(c->disconnect(), 0) << "netback unmapped before it went Closing";
    auto k = c->grant_counters();
    EXPECT_EQ(k.unshares, k.shares);
    auto st = r.xs0->read(netback::backend_dir(0, 3, 0) + "/state");
    ASSERT_TRUE(st);
    EXPECT_EQ(*st, std::to_string(XenbusStateClosed));
    auto f = frame(b->mac(), a->mac(), 5000, 3);
    ASSERT_EQ(send_retry(*a, f), 0);
    EXPECT_TRUE(recv_any(*b) == f);
}

// The Prometheus exposition of a live backend follows its counters: frames
// sent one way show as tx on the sender and rx on the receiver, and the
// xenbus states are the ones in xenstore.
TEST(NetbackE2E, PrometheusMetricsFollowTheCounters) {
    rig r;
    ASSERT_TRUE(r.ok());
    auto a = r.guest(1);
    auto b = r.guest(2);
    ASSERT_TRUE(a && b);
    for (uint32_t i = 0; i < 5; i++) {
        auto f = frame(b->mac(), a->mac(), 1000 + i, i);
        ASSERT_EQ(send_retry(*a, f), 0);
        ASSERT_EQ(recv_any(*b).size(), f.size());
    }
    for (int i = 0; i < 5; i++) a->wait(10);
    auto text = netback::prometheus_text(r.be->dp().vifs(), r.be->devices());
    auto value = [&](const std::string& series) -> long long {
        auto p = text.find("\n" + series + " ");
        if (p == std::string::npos) return -1;
        return std::atoll(text.c_str() + p + series.size() + 2);
    };
    const std::string l1 = "{vif=\"dom1/0\",frontend=\"1\",devid=\"0\"}";
    const std::string l2 = "{vif=\"dom2/0\",frontend=\"2\",devid=\"0\"}";
    EXPECT_EQ(value("zcnet_netback_vifs"), 2);
    EXPECT_EQ(value("zcnet_netback_tx_packets_total" + l1), 5);
    EXPECT_EQ(value("zcnet_netback_rx_packets_total" + l2), 5);
    EXPECT_EQ(value("zcnet_netback_tx_bytes_total" + l1), 5 * 1000 + 0 + 1 + 2 + 3 + 4);
    EXPECT_EQ(value("zcnet_netback_rx_packets_total" + l1), 0);
    EXPECT_EQ(value("zcnet_netback_device_backend_state" + l1), XenbusStateConnected);
    EXPECT_EQ(value("zcnet_netback_device_frontend_state" + l2), XenbusStateConnected);
    // Per queue: b's netfront keeps its RX ring full of buffers, a has read
    // back every TX response (nothing in flight, nothing held).
    auto vb = r.vif(2);
    ASSERT_EQ(vb.queue_state.size(), vb.queues);
    EXPECT_GT(vb.queue_state[0].rx_posted, 0u);
    EXPECT_EQ(r.vif(1).queue_state[0].tx_in_flight, 0u);
    EXPECT_EQ(vb.queue_state[0].held_frames, 0u);
    const std::string q2 = "{vif=\"dom2/0\",frontend=\"2\",devid=\"0\",queue=\"0\",worker=\"" +
                           std::to_string(vb.queue_state[0].worker) + "\"}";
    EXPECT_GT(value("zcnet_netback_queue_rx_posted" + q2), 0);
}

} // namespace
