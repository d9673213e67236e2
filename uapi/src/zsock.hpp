// SPDX-License-Identifier: MIT
// libzcnet's private view of one socket, shared by its source files
// (zc.cpp: sockets, the pool, sending; zc_recv.cpp: completions and
// datagrams). Nothing here is exported (libzcnet.map: local: *).
#pragma once

#include <cstdint>
#include <vector>

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include "uapi/busy_poll.hpp"
#include "uapi/shm.hpp"

namespace zc::uapi::lib {

enum : uint8_t { b_free = 0, b_app = 1, b_stack = 2, b_copy = 3 /* library-owned, in flight */ };

struct zsock {
    int ctl = -1, notify = -1, kick = -1;
    uint32_t flags = 0;
    uint32_t rx_max = rx_capacity; // zc_socket_opts.rx_max: longer datagrams are cut (ZC_RXD_F_TRUNC)
    void* shm = nullptr;
    size_t shm_size = 0;
    uint8_t* pool = nullptr;
    size_t pool_size = 0;
    shm_layout* lay = nullptr;
    uint32_t tx_bufs = 0, rx_bufs = 0, entries = 0;
    ring<tx_desc> tx;
    ring<cq_desc> cq;
    ring<rx_desc> rx;
    ring<fr_desc> fr;
    uint32_t tx_prod = 0, cq_cons = 0, rx_cons = 0, fr_prod = 0; // private copies
    std::vector<uint8_t> state;   // per TX buffer
    std::vector<uint32_t> free_list;
    // Per RX buffer: rx_never (not handed out since the socket opened),
    // rx_app (handed to the app by zc_recv; rx_off is its payload offset),
    // rx_returned (released by the app, or sent and completed), rx_sending
    // (sent by the app: the stack's, its completion pending). Lets
    // zc_rx_release tell a pointer that was never received (-EINVAL) from
    // a double release (-EALREADY).
    enum : uint8_t { rx_never = 0, rx_app = 1, rx_returned = 2, rx_sending = 3 };
    std::vector<uint8_t> rx_held;
    std::vector<uint16_t> rx_off;
    bool connected = false;
    sockaddr_in peer{};
    sockaddr_in local{}; // from the bind/connect answers (zc_getsockname)
    pid_t owner = 0;     // the process that opened it (see g_pid)
    bool dead = false;
    busy_poll bp;        // ZC_SOCK_BUSY_POLL: zc_recv_wait spins first (budget 0: never)
    // Local counters (the stack service keeps rx ones in shared memory).
    uint64_t zc_sends = 0, copied_sends = 0, completions = 0, send_errors = 0, tx_bytes = 0, strict_refused = 0;
    uint64_t rx_truncated = 0; // datagrams handed out with ZC_RXD_F_TRUNC

    ~zsock() {
        if (pool) ::munmap(pool, pool_size);
        if (shm) ::munmap(shm, shm_size);
        for (int fd : {ctl, notify, kick})
            if (fd >= 0) ::close(fd);
    }
};

// The socket `s` of this process, or nullptr (unknown, closed, or inherited
// across fork()).
zsock* find(int s) noexcept;
// Ring the kick eventfd (app -> zc-stackd doorbell).
void kick(zsock& k) noexcept;
// Clear the notify eventfd if neither the RX nor the completion ring holds
// entries (zc.cpp explains the protocol).
void settle_notify(zsock& k) noexcept;
// zc-stackd stopped serving the socket or went away.
bool service_gone(zsock& k) noexcept;

} // namespace zc::uapi::lib
