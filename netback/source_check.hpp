// SPDX-License-Identifier: MIT
// What a guest may send (TX intake), as the vif scripts of a hosting setup
// enforce it with ebtables/iptables around Linux netback: only from the
// vif's configured MAC and, when the vif has an `ip` key in xenstore (xl's
// `ip=`), only from those IPv4 addresses (ARP's sender address included).
// And the `rate` key's credit scheduler (Linux xen-netback xenbus.c
// xen_net_read_rate, netback.c tx_credit_exceeded / tx_add_credit).
// docs/ARCHITECTURE.md, "Guest source checks and rate".
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

#include "common/mac.hpp"

namespace zc::netback {

enum class source_verdict : uint8_t { ok, bad_mac, bad_ip };

// `hdr`: the first `len` bytes of the frame (at least the Ethernet header).
// `mac` all zero: no MAC check. `ipv4` (network byte order) empty: no IP
// check. One 802.1Q tag is looked through. 0.0.0.0 is allowed as an IPv4
// source only for DHCP (UDP to port 67) and as an ARP probe's sender
// (RFC 5227), as the antispoof rules of the vif scripts allow them.
source_verdict check_source(const mac_addr& mac, const std::vector<uint32_t>& ipv4, const uint8_t* hdr,
                            uint32_t len) noexcept;

// xl's `ip` key: IPv4 addresses separated by spaces (or commas). False on
// anything else (the caller then refuses the vif rather than run it open).
bool parse_ipv4_list(std::string_view s, std::vector<uint32_t>& out) noexcept;

// The `rate` key as libxl writes it: "BYTES,USECS" (credit_bytes per
// credit_usec). False when malformed (Linux then runs unlimited, with a
// warning).
bool parse_rate(std::string_view s, uint64_t& bytes, uint64_t& usec) noexcept;

// A queue's TX credit (Linux struct xenvif_queue's remaining_credit,
// credit_window_start, credit_timeout). Owned by the queue's worker.
struct tx_credit {
    using clock = std::chrono::steady_clock;
    using time_point = clock::time_point;
    uint64_t remaining = 0;
    time_point window_start{};
    time_point timeout = time_point::max(); // a pending credit timer
    bool started = false;

    // Linux tx_add_credit: credit accumulates up to a burst of 128 KiB (or
    // one window's credit if larger), so that a jumbo or GSO packet larger
    // than one window's credit still goes.
    void add(uint64_t credit_bytes) noexcept {
        const uint64_t max_burst = std::max<uint64_t>(131072, credit_bytes);
        uint64_t max_credit = remaining + credit_bytes;
        if (max_credit < remaining) max_credit = ~uint64_t{0}; // wrapped
        remaining = std::min(max_credit, max_burst);
    }
    // True when a packet of `size` bytes must wait (Linux
    // tx_credit_exceeded); `timeout` then says until when. Otherwise the
    // packet's size is taken from the credit. credit_usec == 0: unlimited.
    bool exceeded(uint64_t credit_bytes, uint64_t credit_usec, uint32_t size, time_point now) noexcept {
        if (credit_usec == 0) return false;
        if (!started) { // xenvif_connect_data: a full window to start with
            started = true;
            remaining = credit_bytes;
            window_start = now;
        }
        if (timeout != time_point::max()) {
            if (now < timeout) return true; // timer_pending()
            timeout = time_point::max();    // tx_credit_callback
            add(credit_bytes);
        }
        if (remaining < size) {
            const time_point next = window_start + std::chrono::microseconds(credit_usec);
            if (now >= next) {
                window_start = now;
                add(credit_bytes);
            }
            if (size > remaining) {
                timeout = next;
                window_start = next;
                return true;
            }
        }
        remaining -= size;
        return false;
    }
};

} // namespace zc::netback
