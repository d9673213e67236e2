// SPDX-License-Identifier: MIT
// zc-netback's own XDP program on an uplink interface (bpf/zc_uplink.bpf.c,
// compiled with clang -target bpf at build time and embedded in the binary),
// loaded and attached with libbpf. docs/ARCHITECTURE.md, "Uplinks".
//
// attach() replaces a stale zc_uplink program a crashed run left on the
// interface; it refuses to replace anybody else's program. The destructor
// detaches (only if our program is still the one attached).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.hpp"

namespace zc::link {

struct xdp_prog_counters {
    uint64_t redirected = 0;   // to the AF_XDP socket
    uint64_t passed_host = 0;  // to the kernel: the host's own MAC
    uint64_t passed_group = 0; // to the kernel: broadcast/multicast (group_pass)
    uint64_t runts = 0;        // shorter than an Ethernet header, dropped
};

class xdp_prog {
public:
    // skb: generic XDP (XDP_FLAGS_SKB_MODE), else driver XDP
    // (XDP_FLAGS_DRV_MODE). Errors: -errno of the failing step; `why` says which.
    static result<std::unique_ptr<xdp_prog>> attach(int ifindex, bool skb, std::string* why) noexcept;
    ~xdp_prog();
    xdp_prog(const xdp_prog&) = delete;
    xdp_prog& operator=(const xdp_prog&) = delete;

    int xsks_map_fd() const noexcept;
    // Frames to `mac` (6 bytes) go to the kernel (XDP_PASS).
    int add_pass_mac(const uint8_t* mac) noexcept;
    // Broadcast/multicast to the kernel instead of the socket.
    int set_group_pass(bool pass) noexcept;
    xdp_prog_counters counters() const noexcept;

    static constexpr const char* prog_name = "zc_uplink";

private:
    struct state;
    explicit xdp_prog(std::unique_ptr<state> s) noexcept;
    std::unique_ptr<state> _s;
};

// Mount bpffs on /sys/fs/bpf if nothing is mounted there (libxdp and
// bpftool expect it). Returns 0, or -errno.
int ensure_bpffs() noexcept;

} // namespace zc::link
