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
inline constexpr uint32_t version = 2;
inline constexpr size_t token_bytes = 32; // a secret: the admin token or one domain's token
inline constexpr int max_fds = fdpass::max_fds; // messages go through common/fdpass

enum class op : uint32_t {
    hello = 1,            // a = domid, b = mem_pages (0 = default), c = hello_flags, d = version,
                          // token = the admin token (create, attach) or the domain's token (attach)
    get_domain,           // a = domid: its memory and tables (own domain, or privileged caller)
    evtchn_open,          // fd[0] = the handle's eventfd -> rc = handle id
    evtchn_close,         // a = handle
    evtchn_alloc_unbound, // a = handle, b = remote domid -> rc = port
    evtchn_bind,          // a = handle, b = remote domid, c = remote port -> rc = port
    evtchn_unbind,        // a = port
    evtchn_handle_fd,     // a = domid, b = handle -> fd[0]
    list_domains,         // -> payload: uint16_t domids[n], n = a
    shutdown,             // token = the admin token
    get_evtchn,           // a = domid: its event-channel tables only (any domain, for notify)
};

enum hello_flags : uint32_t {
    hello_attach = 1,     // join the live domain (another process of it)
    hello_privileged = 2, // create the domain privileged (a driver domain); admin token only
};

struct request {
    uint32_t magic;
    op code;
    uint32_t a, b, c, d;
    uint8_t token[token_bytes]; // hello, list_domains, shutdown; zero otherwise
};
static_assert(sizeof(request) == 56);

// Replies carrying a domain: the fds whose bit is set in reply_header::d
// (1 << domain_fd), packed in this order. Which ones a connection gets is
// decided by the broker (broker.hpp, "Who gets what").
enum domain_fd : int { fd_mem = 0, fd_gnttab, fd_active, fd_bindings, fd_bitmaps, fd_registry, n_domain_fds };

struct reply_header {
    int32_t rc;          // >= 0 or -errno
    uint32_t a, b, c, d; // per op (hello/get_domain/get_evtchn: a = generation, b = mem_pages,
                         // c = nr_grefs, d = mask of domain_fd sent)
    uint32_t text_len;   // bytes of text following the header (hello: the domain's token,
                         // token_bytes, then the xenstore path)
};
static_assert(sizeof(reply_header) == 24);

inline constexpr size_t max_reply = 4096;

} // namespace zc::hv::emu::proto
