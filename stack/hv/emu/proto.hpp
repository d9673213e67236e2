// SPDX-License-Identifier: MIT
// Wire format between a domain (client) and the broker: fixed-size messages
// on a SOCK_SEQPACKET socket, file descriptors in SCM_RIGHTS. Private to
// stack/hv/emu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/fdpass.hpp"

namespace zc::hv::emu::proto {

inline constexpr uint32_t magic = 0x7a63656d; // "zcem"
inline constexpr uint32_t version = 4;
inline constexpr size_t token_bytes = 32; // a secret: the admin token or one domain's token

// A token's text form (admin.token, $ZCNET_EMU_TOKEN): 2 * token_bytes
// lower-case hex digits.
inline std::string token_hex(const uint8_t* t) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < token_bytes; i++) {
        s += digits[t[i] >> 4];
        s += digits[t[i] & 15];
    }
    return s;
}
// False unless `hex` is exactly 2 * token_bytes hex digits (either case).
inline bool parse_token_hex(const std::string& hex, uint8_t* out) noexcept {
    if (hex.size() != 2 * token_bytes) return false;
    auto nib = [](char ch) -> int {
        if (ch >= '0' && ch <= '9') return ch - '0';
        if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
        return -1;
    };
    for (size_t i = 0; i < token_bytes; i++) {
        const int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = uint8_t(hi << 4 | lo);
    }
    return true;
}
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
    region_new,           // a = pages (own domain) -> rc = region index, b = gen, fd[0] = its memfd
    region_free,          // a = region index (own domain)
    region_get,           // a = domid, b = region index (own, or privileged caller)
                          //   -> a = gen, b = pages, fd[0] = its memfd
    // An unprivileged domain's map or copy of another domain's grant
    // (foreign.hpp): the broker validates and pins it.
    grant_pin,            // a = granter, b = gref, c = pin_flags -> rc = 0 or -errno; a = the GNTST_*
                          //   code (int16_t); when GNTST_okay: b = the page's index in fd[0],
                          //   c = the granter's generation, fd[0] = the region memfd (read-only
                          //   unless the pin is writable)
    grant_unpin,          // a = granter, b = gref, c = pin_flags, d = the generation grant_pin gave
};

enum pin_flags : uint32_t {
    pin_readonly = 1, // a read-only pin (GNTMAP_readonly; a copy's source)
    pin_map = 2,      // GNTTABOP_map_grant_ref rather than GNTTABOP_copy (GTF_sub_page refused)
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

inline request req(op code, uint32_t a, uint32_t b, uint32_t c, uint32_t d) noexcept {
    request r{};
    r.magic = magic;
    r.code = code;
    r.a = a;
    r.b = b;
    r.c = c;
    r.d = d;
    return r;
}

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
