// SPDX-License-Identifier: MIT
// The AF_XDP link (stack/link/xsk) on a veth pair in a network namespace of
// the test's own (unshare(CLONE_NEWNET): it disappears with the process on
// every exit path). The far end is driven with an AF_PACKET socket. Skips
// when namespaces or BPF are not available (not root).
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "link/xsk.hpp"
#include "netns_veth.hpp"

using namespace zc;
using namespace zc::link;

namespace {

constexpr const char* near_if = "zcxa";
constexpr const char* far_if = "zcxb";

#define NEED_NETNS()                                          \
    do {                                                      \
        std::string why_;                                     \
        if (!test::veth_netns(near_if, far_if, &why_)) GTEST_SKIP() << why_; \
    } while (0)

bool is_test_frame(const std::vector<uint8_t>& b) { return b[12] == 0x88 && b[13] == 0xb5; }
using test::raw_sock;

std::vector<uint8_t> test_frame(const uint8_t* dst, uint8_t fill, size_t len = 200) {
    std::vector<uint8_t> f(len, fill);
    std::memcpy(f.data(), dst, 6);
    const uint8_t src[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x99};
    std::memcpy(f.data() + 6, src, 6);
    f[12] = 0x88; // IEEE local experimental ethertype 0x88b5
    f[13] = 0xb5;
    for (size_t i = 14; i < len; ++i) f[i] = uint8_t(fill + i);
    return f;
}

// Frames the link received within `timeout_ms`, as byte vectors (released).
std::vector<std::vector<uint8_t>> drain(xsk_link& l, int timeout_ms) {
    std::vector<std::vector<uint8_t>> got;
    pool::frame fs[64];
    for (int round = 0; round < 20; ++round) {
        l.wait(-1, timeout_ms / 20);
        const uint32_t n = l.receive(fs, 64);
        for (uint32_t i = 0; i < n; ++i) {
            const uint8_t* p = l.umem().data(fs[i]);
            if (fs[i].len >= 14 && p[12] == 0x88 && p[13] == 0xb5) got.emplace_back(p, p + fs[i].len);
            EXPECT_EQ(l.umem().release(fs[i]), 0);
        }
        if (!got.empty()) break;
    }
    return got;
}

xsk_options opts(xdp_mode m) {
    xsk_options o;
    o.ifname = near_if;
    o.mode = m;
    o.frames = 256;
    o.ring = 64;
    o.batch = 16;
    return o;
}

uint32_t attached_prog(const char* ifname) {
    uint32_t id = 0;
    (void)bpf_xdp_query_id(int(::if_nametoindex(ifname)), 0, &id);
    return id;
}

} // namespace

TEST(XskLink, ZeroCopyOnVethFailsWithAClearMessage) {
    NEED_NETNS();
    std::string why;
    auto l = xsk_link::open(opts(xdp_mode::zc), &why);
    ASSERT_FALSE(l);
    EXPECT_NE(why.find("zero-copy"), std::string::npos) << why;
    EXPECT_EQ(attached_prog(near_if), 0u) << "a failed open leaves no program behind";
}

TEST(XskLink, BadSizesAreRefused) {
    xsk_options o = opts(xdp_mode::any);
    o.frames = 100;
    std::string why;
    auto l = xsk_link::open(o, &why);
    ASSERT_FALSE(l);
    EXPECT_EQ(l.error(), -EINVAL);
}

TEST(XskLink, DefaultModeReceivesSendsAndDetaches) {
    NEED_NETNS();
    std::string why;
    auto l = xsk_link::open(opts(xdp_mode::any), &why);
    ASSERT_TRUE(l) << why;
    // veth has driver XDP but no zero-copy: the fallback lands on copy.
    EXPECT_EQ((*l)->mode(), xdp_mode::copy);
    EXPECT_NE(attached_prog(near_if), 0u);
    raw_sock far(far_if);
    ASSERT_GE(far.fd, 0);

    // Wire -> link: a unicast frame to a MAC that is not the host's.
    const uint8_t guest[6] = {0x02, 0x16, 0x3e, 0x00, 0x00, 0x01};
    auto f = test_frame(guest, 7);
    far.send(f);
    auto got = drain(**l, 2000);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], f);
    // Broadcast goes to the socket as well.
    const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    auto b = test_frame(bcast, 9, 60);
    far.send(b);
    got = drain(**l, 2000);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], b);
    // The host's own MAC goes to the kernel, not the socket.
    ASSERT_EQ((*l)->prog().add_pass_mac((*l)->if_mac()), 0);
    far.send(test_frame((*l)->if_mac(), 3));
    EXPECT_TRUE(drain(**l, 300).empty());
    const auto pc = (*l)->prog().counters();
    EXPECT_GE(pc.redirected, 2u);
    EXPECT_GE(pc.passed_host, 1u);

    // Link -> wire.
    pool::frame tx;
    ASSERT_EQ((*l)->alloc_tx(tx), 0);
    auto out = test_frame(guest, 42, 300);
    std::memcpy((*l)->umem().data(tx), out.data(), out.size());
    tx.len = uint16_t(out.size());
    ASSERT_EQ((*l)->send(&tx, 1), 1u);
    EXPECT_EQ(far.recv(2000, is_test_frame), out);
    const auto c = (*l)->counters();
    EXPECT_GE(c.rx_frames, 2u);
    EXPECT_EQ(c.tx_frames, 1u);

    l->reset();
    EXPECT_EQ(attached_prog(near_if), 0u) << "the program is detached on close";
}

TEST(XskLink, SkbModeWhenRequired) {
    NEED_NETNS();
    std::string why;
    auto l = xsk_link::open(opts(xdp_mode::skb), &why);
    ASSERT_TRUE(l) << why;
    EXPECT_EQ((*l)->mode(), xdp_mode::skb);
    raw_sock far(far_if);
    const uint8_t guest[6] = {0x02, 0x16, 0x3e, 0x00, 0x00, 0x02};
    auto f = test_frame(guest, 5);
    far.send(f);
    auto got = drain(**l, 2000);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], f);
}

TEST(XskLink, StaleProgramFromACrashedRunIsReplaced) {
    NEED_NETNS();
    // A child attaches the program and dies without detaching (a crash).
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::string w;
        auto p = xdp_prog::attach(int(::if_nametoindex(near_if)), false, &w);
        if (p) p->release(); // leaked on purpose: the program stays attached
        ::_exit(p ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    const uint32_t stale = attached_prog(near_if);
    ASSERT_NE(stale, 0u);
    std::string why;
    auto l = xsk_link::open(opts(xdp_mode::copy), &why);
    ASSERT_TRUE(l) << why;
    EXPECT_NE(attached_prog(near_if), stale);
    l->reset();
    EXPECT_EQ(attached_prog(near_if), 0u);
}
