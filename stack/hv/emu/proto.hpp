// SPDX-License-Identifier: MIT
// Wire format between a domain (client) and the broker: fixed-size messages
// on a SOCK_SEQPACKET socket, file descriptors in SCM_RIGHTS. Private to
// stack/hv/emu.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/fdpass.hpp"

namespace zc::hv::emu::proto {

inline constexpr uint32_t magic = 0x7a63656d; // "zcem"
inline constexpr uint32_t version = 1;
inline constexpr int max_fds = fdpass::max_fds; // messages go through common/fdpass

enum class op : uint32_t {
    hello = 1,            // a = domid, b = mem_pages (0 = default), c = attach, d = version
    get_domain,           // a = domid
    evtchn_open,          // fd[0] = the handle's eventfd -> rc = handle id
    evtchn_close,         // a = handle
    evtchn_alloc_unbound, // a = handle, b = remote domid -> rc = port
    evtchn_bind,          // a = handle, b = remote domid, c = remote port -> rc = port
    evtchn_unbind,        // a = port
    evtchn_handle_fd,     // a = domid, b = handle -> fd[0]
    list_domains,         // -> payload: uint16_t domids[n], n = a
    shutdown,
};

struct request {
    uint32_t magic;
    op code;
    uint32_t a, b, c, d;
};
static_assert(sizeof(request) == 24);

// Replies carrying a domain: fds in this order.
enum domain_fd : int { fd_mem = 0, fd_gnttab, fd_active, fd_bindings, fd_bitmaps, fd_registry, n_domain_fds };

struct reply_header {
    int32_t rc;          // >= 0 or -errno
    uint32_t a, b, c, d; // per op (hello/get_domain: a = generation, b = mem_pages, c = nr_grefs)
    uint32_t text_len;   // bytes of text following the header (hello: xenstore path)
};
static_assert(sizeof(reply_header) == 24);

inline constexpr size_t max_reply = 4096;

} // namespace zc::hv::emu::proto
