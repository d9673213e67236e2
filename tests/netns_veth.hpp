// SPDX-License-Identifier: MIT
// A veth pair in a network namespace of the test process's own
// (unshare(CLONE_NEWNET)): it disappears with the process on every exit
// path, so nothing needs cleaning up. ctest runs each test in its own
// process. The far end is driven with an AF_PACKET socket.
#pragma once

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace zc::test {

// True once this process is in its own namespace with veth pair
// near <-> far up; `why` says why not (not root, no namespaces).
inline bool veth_netns(const char* near_if, const char* far_if, std::string* why) {
    static int state = 0; // 0 unknown, 1 ready, -1 unavailable
    static std::string reason;
    if (state == 0) {
        state = -1;
        // IPv6 off in the namespace before the links come up: the kernel's
        // own DAD, MLD reports and router solicitations on the far end would
        // reach the uplink as multicast frames, flood to the guests and
        // change what the tests count.
        const std::string cmd =
            std::string("{ sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
                        ">/dev/null 2>&1 || true; } && ip link set lo up && ip link add ") +
            near_if + " type veth peer name " + far_if + " && ip link set " + near_if + " up && ip link set " + far_if +
            " up";
        if (::geteuid() != 0) reason = "needs root (network namespaces, BPF)";
        else if (::unshare(CLONE_NEWNET) < 0) reason = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
        else if (std::system(cmd.c_str()) != 0) reason = "cannot create a veth pair";
        else state = 1;
    }
    *why = reason;
    return state == 1;
}

struct raw_sock {
    int fd = -1;
    int ifindex = 0;
    explicit raw_sock(const char* ifname) {
        fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
        ifindex = int(::if_nametoindex(ifname));
        sockaddr_ll sa{};
        sa.sll_family = AF_PACKET;
        sa.sll_protocol = htons(ETH_P_ALL);
        sa.sll_ifindex = ifindex;
        if (fd >= 0) ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    }
    ~raw_sock() {
        if (fd >= 0) ::close(fd);
    }
    raw_sock(const raw_sock&) = delete;
    raw_sock& operator=(const raw_sock&) = delete;

    void send(const std::vector<uint8_t>& f) const {
        sockaddr_ll sa{};
        sa.sll_family = AF_PACKET;
        sa.sll_ifindex = ifindex;
        sa.sll_halen = 6;
        ASSERT_EQ(::sendto(fd, f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&sa), sizeof sa),
                  ssize_t(f.size()));
    }
    // The next frame `want` accepts within `timeout_ms` (the kernel sends
    // frames of its own too); empty on timeout.
    std::vector<uint8_t> recv(int timeout_ms, const std::function<bool(const std::vector<uint8_t>&)>& want) const {
        for (;;) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, timeout_ms) <= 0) return {};
            std::vector<uint8_t> b(65536);
            ssize_t n = ::recv(fd, b.data(), b.size(), 0);
            if (n < 14) continue;
            b.resize(size_t(n));
            if (want(b)) return b;
        }
    }
};

} // namespace zc::test
