// SPDX-License-Identifier: MIT
// zc-vmbench's guest role: this same binary, started as `zc-vmbench guest`
// in an emulated domain, speaks the netif protocol through the userspace
// netfront and answers the runner's commands on stdin/stdout.
#pragma once

#include <cstdint>
#include <string>

#include "link/netfront.hpp"

namespace zc::vmbench {

// Commands on stdin, one per line; answers on stdout.
//   connect               -> "connected <mac>" | "error <why>"
//   run <phase> <size> <seconds> <dst-mac>   (sender)
//   run <phase> <size> <seconds>             (receiver) -> "ready" first
//   rr <phase> <size> <seconds> [<dst-mac>]  (request/response)
//   udp <size> <seconds> <dst-mac> <src-ip> <dst-ip> <port>  (uplink sender:
//                         UDP to a kernel socket behind an uplink)
//   quit
struct guest_opts {
    std::string role;
    uint32_t rx_buffers = link::netif_rx_ring_size;
    uint32_t queues = 1;
};

int run_guest(const guest_opts& o);

} // namespace zc::vmbench
