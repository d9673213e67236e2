// SPDX-License-Identifier: MIT
// The kernel path baseline (bench/kernel_path): behaviour only — data
// arrives, integrity holds, counters add up and no namespace outlives a run,
// also one interrupted by SIGTERM. Never a speed.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "bench/kernel_path.hpp"

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
