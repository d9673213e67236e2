// SPDX-License-Identifier: MIT
// An uplink of zc-netback's switch (docs/ARCHITECTURE.md, "Uplinks"): an
// AF_XDP socket (stack/link/xsk) on a network interface, its switch port,
// its receive thread and counters. Private to the data path (uplink.cpp).
#pragma once

#include <atomic>
#include <cerrno>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "link/xsk.hpp"
#include "netback/datapath.hpp"
#include "netback/offload.hpp" // complete_checksum

namespace zc::netback {

struct vif;

struct uplink {
    uplink_options opt;
    std::unique_ptr<link::xsk_link> link;
    // An in-process uplink (datapath::add_uplink_inproc) has no link: its
    // frames are a local pool of UMEM-sized buffers and what it sends goes
    // to `sink`. The data path reaches either through the members below.
    std::unique_ptr<pool::pool> own;
    wire_sink sink;
    std::shared_ptr<vif> port; // its switch port (vif::up points back here)
    uint32_t max_len = 0;      // largest frame to the wire: MTU + Ethernet header + one VLAN tag
    uint32_t dest_quota = 0;   // UMEM frames one destination may hold waiting (uplink_options::dest_quota)
    int stop_fd = -1;
    std::thread th;
#define ZC_NETBACK_UPLINK_ATOMIC_(name, unit, drop, help) std::atomic<uint64_t> name{0};
    ZC_NETBACK_UPLINK_COUNTERS(ZC_NETBACK_UPLINK_ATOMIC_)
#undef ZC_NETBACK_UPLINK_ATOMIC_

    pool::pool& frames() noexcept { return link ? link->umem() : *own; }
    int alloc(pool::frame& f) noexcept {
        if (link) return link->alloc_tx(f);
        return own->alloc_frame(f, 0) < 0 ? -ENOBUFS : 0;
    }
    uint32_t max_frame() const noexcept { return link ? link->max_frame() : own->buf_size(); }
    // link::xsk_link::send's contract: takes every frame, returns how many went out.
    uint32_t send(pool::frame* fs, uint32_t n) noexcept;

    uplink_stats snapshot() const noexcept {
        uplink_stats s;
#define ZC_NETBACK_UPLINK_READ_(name, unit, drop, help) s.name = name.load(std::memory_order_relaxed);
        ZC_NETBACK_UPLINK_COUNTERS(ZC_NETBACK_UPLINK_READ_)
#undef ZC_NETBACK_UPLINK_READ_
        return s;
    }
    ~uplink();
};

struct uplink_tx;
// The headers of one segment of a software-segmented TCP GSO frame, once
// its payload is in place (Linux tcp_gso_segment / inet_gso_segment /
// ipv6_gso_segment): IP lengths, the IPv4 id and header checksum, the TCP
// sequence number and flags. The TCP checksum is completed afterwards.
void fix_gso_headers(uint8_t* frame, const uplink_tx& t) noexcept;

} // namespace zc::netback
