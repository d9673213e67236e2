// SPDX-License-Identifier: MIT
// The pure parts of the uplink and TX intake: switch aging for uplink
// ports, checksum completion before the wire, the `ip` and `rate` keys and
// the credit scheduler (on a simulated clock: no timing here).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "netback/source_check.hpp"
#include "netback/switch.hpp"
#include "netback/uplink.hpp"
#include "l4_frames.hpp"
#include "proto/checksum.hpp"

using namespace zc;
using namespace zc::netback;

namespace {
struct port {
    int id;
};
const uint8_t guest_mac[6] = {0x02, 0, 0, 0, 0, 1};
const uint8_t host_mac[6] = {0x02, 0, 0, 0, 0, 0x64};

} // namespace

TEST(UplinkSwitch, MacsLearnedBehindAnUplinkAgeOut) {
    l2_switch<port> sw;
    auto up = std::make_shared<port>(port{1});
    auto vif = std::make_shared<port>(port{2});
    sw.add(vif, mac_addr{}, {});
    l2_switch<port>::port_opts o;
    o.max_learned = 4096;
    o.aging = std::chrono::milliseconds(50);
    sw.add(up, mac_addr{}, o);
    std::vector<std::shared_ptr<port>> out;
    sw.learn(host_mac, up);
    EXPECT_FALSE(sw.lookup(host_mac, vif.get(), out));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], up);
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    EXPECT_TRUE(sw.lookup(host_mac, vif.get(), out)) << "an aged entry floods";
    // Learned again (anywhere): known again.
    sw.learn(host_mac, vif);
    EXPECT_FALSE(sw.lookup(host_mac, up.get(), out));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0], vif);
    // The vif port does not age.
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    EXPECT_FALSE(sw.lookup(host_mac, up.get(), out));
}

TEST(UplinkSwitch, AnUplinkLearnsMoreThanAVif) {
    l2_switch<port> sw;
    auto up = std::make_shared<port>(port{1});
    auto vif = std::make_shared<port>(port{2});
    sw.add(vif, mac_addr{}, {});
    sw.add(up, mac_addr{}, {.max_learned = 1000, .aging = std::chrono::seconds(300)});
    std::vector<std::shared_ptr<port>> out;
    uint8_t m[6] = {0x02, 0x10, 0, 0, 0, 0};
    for (int i = 0; i < 200; ++i) {
        m[4] = uint8_t(i >> 8);
        m[5] = uint8_t(i);
        sw.learn(m, up);
    }
    m[4] = 0;
    m[5] = 150;
    EXPECT_FALSE(sw.lookup(m, vif.get(), out)) << "entry 150 of 200 is known behind the uplink";
}

TEST(UplinkChecksum, CompletesUdpAndTcpOverIpv4AndIpv6) {
    for (bool v6 : {false, true})
        for (uint8_t proto : {uint8_t(17), uint8_t(6)})
            for (uint32_t payload : {0u, 1u, 333u, 1400u}) {
                auto f = test::l4_frame(host_mac, guest_mac, v6, proto, payload);
                EXPECT_FALSE(test::l4_checksum_ok(f));
                ASSERT_TRUE(complete_checksum(f.data(), uint32_t(f.size()))) << v6 << int(proto) << payload;
                EXPECT_TRUE(test::l4_checksum_ok(f)) << "v6 " << v6 << " proto " << int(proto) << " payload " << payload;
            }
}

TEST(UplinkChecksum, RefusesWhatItCannotParse) {
    auto f = test::l4_frame(host_mac, guest_mac, false, 17, 100);
    EXPECT_FALSE(complete_checksum(f.data(), 30)) << "truncated IPv4 header";
    auto g = test::l4_frame(host_mac, guest_mac, false, 1, 100); // ICMP: no L4 checksum offload
    EXPECT_FALSE(complete_checksum(g.data(), uint32_t(g.size())));
    auto h = test::l4_frame(host_mac, guest_mac, false, 17, 100);
    h[16] = 0xff; // total length beyond the frame
    EXPECT_FALSE(complete_checksum(h.data(), uint32_t(h.size())));
    std::vector<uint8_t> runt(10, 0);
    EXPECT_FALSE(complete_checksum(runt.data(), uint32_t(runt.size())));
}

TEST(SourceCheck, IpKeyParsing) {
    std::vector<uint32_t> v;
    ASSERT_TRUE(parse_ipv4_list("10.0.0.1 192.168.1.2", v));
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0], inet_addr("10.0.0.1"));
    EXPECT_TRUE(parse_ipv4_list("10.0.0.1,10.0.0.2", v));
    EXPECT_FALSE(parse_ipv4_list("10.0.0.256", v));
    EXPECT_FALSE(parse_ipv4_list("", v));
    EXPECT_FALSE(parse_ipv4_list("10.0.0.1 fe80::1", v));
}

TEST(SourceCheck, RateKeyParsing) {
    uint64_t b = 0, u = 0;
    ASSERT_TRUE(parse_rate("62500,50000", b, u));
    EXPECT_EQ(b, 62500u);
    EXPECT_EQ(u, 50000u);
    EXPECT_FALSE(parse_rate("62500", b, u));
    EXPECT_FALSE(parse_rate("62500,", b, u));
    EXPECT_FALSE(parse_rate(",5", b, u));
    EXPECT_FALSE(parse_rate("1,2,3", b, u));
    EXPECT_FALSE(parse_rate("-1,5", b, u));
}

TEST(SourceCheck, DhcpAndArpProbesFromZeroAreAllowed) {
    const mac_addr m = {0x02, 0, 0, 0, 0, 1};
    const std::vector<uint32_t> ips = {inet_addr("10.0.0.1")};
    std::vector<uint8_t> f(64, 0);
    std::memcpy(f.data() + 6, m.b.data(), 6);
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 17;   // UDP
    f[36] = 0;
    f[37] = 67;   // to the DHCP server port
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::ok);
    f[37] = 68;
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::bad_ip);
    f[13] = 0x06; // ARP, sender 0.0.0.0 (a probe)
    f[12] = 0x08;
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::ok);
    f[28] = 10;
    f[31] = 2;
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::bad_ip);
    f[31] = 1;
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::ok);
    f[11] = 9; // another source MAC
    EXPECT_EQ(check_source(m, ips, f.data(), uint32_t(f.size())), source_verdict::bad_mac);
}

TEST(TxCredit, HoldsTheRateOnASimulatedClock) {
    using tp = tx_credit::time_point;
    tx_credit c;
    const uint64_t bytes = 12500, usec = 10000; // 10 Mbit/s in 10 ms windows
    tp now{};
    uint64_t sent = 0;
    // A sender that always has a 1500-byte packet ready, for 2 s of simulated time.
    const tp end = now + std::chrono::seconds(2);
    while (now < end) {
        if (!c.exceeded(bytes, usec, 1500, now)) {
            sent += 1500;
            continue;
        }
        ASSERT_NE(c.timeout, tp::max());
        ASSERT_GT(c.timeout, now);
        now = c.timeout; // the worker wakes at the credit timer
    }
    const double rate = double(sent) / 2.0;
    EXPECT_NEAR(rate, 1.25e6, 1.25e6 * 0.02);
}

TEST(TxCredit, UnlimitedWithoutAnInterval) {
    tx_credit c;
    for (int i = 0; i < 1000; ++i) EXPECT_FALSE(c.exceeded(~uint64_t{0}, 0, 65535, tx_credit::time_point{}));
}

TEST(TxCredit, APacketLargerThanTheWindowStillGoes) {
    tx_credit c;
    tx_credit::time_point now{};
    // 1000 bytes per ms, a 64 KiB packet: it waits, then goes (bursts to 128 KiB).
    int waits = 0;
    while (c.exceeded(1000, 1000, 65536, now)) {
        now = c.timeout;
        ASSERT_LT(++waits, 200);
    }
    EXPECT_GT(waits, 0);
}
