// SPDX-License-Identifier: MIT
// The kernel path baseline (bench/kernel_path): behaviour only — data
// arrives, integrity holds, counters add up and no namespace outlives a run,
// also one interrupted by SIGTERM. Never a speed.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bench/kernel_path.hpp"
#include "proto/ether.hpp"
#include "proto/ipv4.hpp"
#include "proto/udp.hpp"

using namespace zc::bench;

namespace {

// Namespaces listed by `ip netns list` whose names start with `prefix`.
int count_netns(const std::string& prefix) {
    FILE* f = popen("ip netns list 2>/dev/null", "r");
    if (!f) return -1;
    int n = 0;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (std::string(line).rfind(prefix, 0) == 0) ++n;
    pclose(f);
    return n;
}

#define SKIP_UNLESS_AVAILABLE()                                                \
    do {                                                                       \
        std::string why_;                                                      \
        if (!kernel_path_available(&why_)) GTEST_SKIP() << why_;               \
    } while (0)

} // namespace

TEST(KernelPath, PayloadForFrame) {
    bool capped = true;
    EXPECT_EQ(udp_payload_for_frame(64, &capped), 22u);
    EXPECT_FALSE(capped);
    EXPECT_EQ(udp_payload_for_frame(1500), 1458u);
    EXPECT_EQ(udp_payload_for_frame(65536, &capped), 65494u);
    EXPECT_FALSE(capped);
    EXPECT_EQ(udp_payload_for_frame(70000, &capped), max_udp_payload);
    EXPECT_TRUE(capped);
    EXPECT_EQ(udp_payload_for_frame(53), 0u); // too small for seq + tag
    EXPECT_EQ(udp_payload_for_frame(54), 12u);
}

TEST(KernelPath, UdpDeliversVerifiedFramesAndCleansUp) {
    SKIP_UNLESS_AVAILABLE();
    std::string why;
    int progress_calls = 0;
    auto rows = run_kernel_udp({64, 9000}, 0.2, &why, [&](const kernel_result&) { ++progress_calls; });
    ASSERT_TRUE(rows.ok()) << why;
    ASSERT_EQ(rows->size(), 2u);
    EXPECT_EQ(progress_calls, 2);
    for (const auto& r : *rows) {
        SCOPED_TRACE("frame " + std::to_string(r.frame));
        EXPECT_TRUE(r.error.empty()) << r.error;
        EXPECT_EQ(r.proto, "udp");
        EXPECT_GT(r.frames_received, 0u);
        EXPECT_TRUE(r.integrity_ok);
        EXPECT_EQ(r.bad_frames, 0u);
        EXPECT_LE(r.frames_received, r.frames_sent);
        EXPECT_EQ(r.frames_lost, r.frames_sent - r.frames_received);
        EXPECT_EQ(r.bytes_received, r.frames_received * r.payload);
        EXPECT_EQ(r.wire_frame, r.frame);
        EXPECT_GT(r.gbps, 0);
        EXPECT_GT(r.cpu_seconds, 0);
    }
    EXPECT_EQ(count_netns(kernel_netns_prefix()), 0);
}

TEST(KernelPath, TooSmallFrameIsARowErrorNotAFailure) {
    SKIP_UNLESS_AVAILABLE();
    std::string why;
    auto rows = run_kernel_udp({20, 64}, 0.1, &why);
    ASSERT_TRUE(rows.ok()) << why;
    ASSERT_EQ(rows->size(), 2u);
    EXPECT_FALSE((*rows)[0].error.empty());
    EXPECT_EQ((*rows)[0].frames_sent, 0u);
    EXPECT_TRUE((*rows)[1].error.empty()) << (*rows)[1].error;
    EXPECT_TRUE((*rows)[1].integrity_ok);
    EXPECT_EQ(count_netns(kernel_netns_prefix()), 0);
}

TEST(KernelPath, TcpBulkDeliversVerifiedStream) {
    SKIP_UNLESS_AVAILABLE();
    std::string why;
    auto r = run_kernel_tcp(64 * 1024, 0.2, &why);
    ASSERT_TRUE(r.ok()) << why;
    EXPECT_TRUE(r->error.empty()) << r->error;
    EXPECT_EQ(r->proto, "tcp");
    EXPECT_GT(r->bytes_received, 0u);
    // TCP is reliable: every byte written arrives, in order.
    EXPECT_EQ(r->bytes_received, r->bytes_sent);
    EXPECT_TRUE(r->integrity_ok);
    EXPECT_EQ(count_netns(kernel_netns_prefix()), 0);
}

TEST(KernelPath, SigtermMidRunLeavesNoNamespace) {
    SKIP_UNLESS_AVAILABLE();
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::string why;
        auto rows = run_kernel_udp({1500}, 30.0, &why);
        _exit(rows.ok() ? 0 : 1);
    }
    const std::string prefix = "zcb-" + std::to_string(pid) + "-";
    // Wait until the child's namespaces exist, i.e. it is mid-measurement.
    bool seen = false;
    for (int i = 0; i < 200 && !seen; ++i) {
        seen = count_netns(prefix) == 2;
        if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(pid, SIGTERM);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(seen) << "the child never created its namespaces";
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << "status " << status;
    EXPECT_EQ(count_netns(prefix), 0);
}

TEST(KernelPath, StaleNamespacesOfDeadProcessesAreRemoved) {
    SKIP_UNLESS_AVAILABLE();
    // A child that dies by SIGKILL mid-run cannot clean up; the next run does.
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::string why;
        auto rows = run_kernel_udp({1500}, 30.0, &why);
        _exit(rows.ok() ? 0 : 1);
    }
    const std::string prefix = "zcb-" + std::to_string(pid) + "-";
    bool seen = false;
    for (int i = 0; i < 200 && !seen; ++i) {
        seen = count_netns(prefix) == 2;
        if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(seen);
    EXPECT_EQ(count_netns(prefix), 2) << "SIGKILL cannot be caught: the namespaces stay until the next run";
    // Its measurement children die with it (PR_SET_PDEATHSIG).
    EXPECT_GE(kernel_path_remove_stale(), 2);
    EXPECT_EQ(count_netns(prefix), 0);
}

// uplink_veth: a sender outside the kernel path (here raw frames from an
// AF_PACKET socket on the near end, standing in for an AF_XDP uplink) in
// write_udp_payload's format; the far end's socket checks every byte.
TEST(KernelPath, UplinkVethChecksAnOutsideSendersDatagrams) {
    SKIP_UNLESS_AVAILABLE();
    std::string why;
    auto created = uplink_veth::create(1500, &why);
    ASSERT_TRUE(created.ok()) << why;
    std::unique_ptr<uplink_veth> v = std::move(*created);
    ASSERT_EQ(v->near_netns().rfind(kernel_netns_prefix(), 0), 0u);
    EXPECT_EQ(count_netns(kernel_netns_prefix()), 2);

    const size_t frame = 200, payload = udp_payload_for_frame(frame);
    zc::proto::ipv4_addr src, dst;
    ASSERT_TRUE(zc::proto::parse_ipv4_addr(v->guest_ip(0), src));
    ASSERT_TRUE(zc::proto::parse_ipv4_addr(v->far_ip(), dst));
    zc::mac_addr far_mac{}, our_mac{};
    ASSERT_TRUE(zc::parse_mac(uplink_veth::far_mac(), far_mac, 0));
    our_mac[0] = 0x02;
    our_mac[5] = 0x01;
    auto build = [&](uint64_t seq, bool end) {
        std::vector<uint8_t> f(frame);
        std::span<uint8_t> out(f);
        zc::proto::write_eth(out, far_mac, our_mac, zc::proto::ethertype::ipv4);
        zc::proto::ipv4_params ip;
        ip.src = src;
        ip.dst = dst;
        ip.proto = zc::proto::ip_proto::udp;
        ip.payload_len = uint16_t(frame - 34);
        zc::proto::write_ipv4(out.subspan(14), ip);
        zc::proto::udp_params u;
        u.src = src;
        u.dst = dst;
        u.src_port = u.dst_port = uplink_veth::port();
        u.payload_len = uint16_t(payload);
        zc::proto::write_udp(out.subspan(34), u, 0, zc::proto::tx_csum::none);
        write_udp_payload(f.data() + eth_ip_udp_overhead, payload, seq, end);
        return f;
    };
    constexpr uint64_t n = 100, corrupt = 50;
    std::vector<std::vector<uint8_t>> frames;
    for (uint64_t seq = 0; seq < n; ++seq) frames.push_back(build(seq, false));
    frames[corrupt].back() ^= 0xff;
    frames.push_back(build(n, true));
    const std::string ns_path = "/run/netns/" + v->near_netns();

    kernel_result r = v->receive_udp(frame, 1.0, [&](uint64_t* sent, std::string* err) {
        pid_t p = fork();
        if (p == 0) {
            int ns = open(ns_path.c_str(), O_RDONLY | O_CLOEXEC);
            if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) _exit(2);
            int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
            sockaddr_ll sa{};
            sa.sll_family = AF_PACKET;
            sa.sll_ifindex = int(if_nametoindex(uplink_veth::ifname()));
            sa.sll_halen = 6;
            if (s < 0 || sa.sll_ifindex == 0) _exit(3);
            for (auto& f : frames)
                if (sendto(s, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != ssize_t(f.size()))
                    _exit(4);
            _exit(0);
        }
        int st = 0;
        waitpid(p, &st, 0);
        *sent = n;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return true;
        *err = "raw sender failed: " + std::to_string(st);
        return false;
    });
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.frames_sent, n);
    EXPECT_EQ(r.frames_received, n - 1); // every byte checked: the corrupted one is not counted
    EXPECT_EQ(r.bad_frames, 1u);
    EXPECT_EQ(r.frames_lost, 1u);
    EXPECT_FALSE(r.integrity_ok);
    EXPECT_EQ(r.bytes_received, (n - 1) * payload);
    EXPECT_GT(r.gbps, 0);
    v.reset();
    EXPECT_EQ(count_netns(kernel_netns_prefix()), 0);
}

