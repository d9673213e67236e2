// SPDX-License-Identifier: MIT
// The emulated hypervisor. One broker per emulated host: it owns the domain
// registry, every domain's memory and table files, event-channel bindings and
// xenstore (xenstored.hpp), and hands file descriptors to domain processes
// over a SOCK_SEQPACKET Unix socket (SCM_RIGHTS). It never touches the data
// path: grant copy and notify run in the calling domain's process, as a
// hypercall runs on the calling vCPU.
//
// Authentication (docs/ARCHITECTURE.md, "Trust boundaries"):
//   - A connection whose peer (SO_PEERCRED) is neither the broker's uid nor
//     root is closed at accept.
//   - The broker makes a random admin token (proto::token_bytes) at start and
//     writes it, hex, to <dir>/admin.token (mode 0600). The toolstack holds it:
//     hv::emu::host in its process, `zc-emu` through the file. Creating a
//     domain, creating it privileged, list_domains and shutdown need it.
//   - Each domain gets its own random token when it is created (returned by
//     hello). Attaching to a live domain needs that token (or the admin
//     token); `zc-emu run` hands it to the program as $ZCNET_EMU_TOKEN and
//     never passes the admin token on.
//   - Every other op needs a hello on the same connection: the connection
//     then *is* that domain. get_domain without a hello is -ENOTCONN.
//   Every domain process runs as the broker's user; one that reads
//   admin.token from the runtime directory or ptraces another process is
//   outside what the broker can see (docs/ARCHITECTURE.md, "The emulated
//   hypervisor's authentication").
// Who gets what (Xen: only the hypervisor touches a domain's tables; a
// domain reaches foreign memory only through grant operations):
//   - a domain, of itself: its memory, grant table, event-channel tables,
//     read-write except the bindings; never an active-grant table (a
//     domain's pins on its own grants live in a table private to its process)
//   - a privileged domain (dom0, or one created with hello_privileged, a
//     driver domain) of another domain: memory, grant table and active table,
//     to perform grant map and copy in its own process as on its vCPU
//   - an unprivileged domain of another domain: -EPERM for get_domain; its
//     event-channel tables only (get_evtchn), to notify; and, for a grant
//     that domain made to it, the grant validated and pinned by the broker
//     and the memory region holding it if every page of the region is
//     granted to it, read-only unless all are writable (grant_pin,
//     foreign.hpp)
//   - every memfd is sealed against shrink and grow (F_SEAL_SHRINK,
//     F_SEAL_GROW, F_SEAL_SEAL), so nobody can truncate memory another
//     process has mapped (SIGBUS) or reseal it
#pragma once

#include <memory>
#include <string>

#include "common/result.hpp"

namespace zc::hv::emu {

struct broker_options {
    std::string dir;   // runtime directory: broker.sock and xs/dom<N>.sock live here
    bool quiet = false;
};

class broker {
public:
    // Create the runtime directory and sockets. Does not serve yet.
    static result<std::unique_ptr<broker>> create(const broker_options& o, std::string* why) noexcept;
    ~broker();

    // Serve in the calling thread until shutdown (a client's shutdown request
    // or request_stop()). Returns 0.
    int run() noexcept;
    // Serve in a background thread (tests).
    int start_thread() noexcept;
    // Thread-safe, async-signal-safe: ask run() to return.
    void request_stop() noexcept;
    // Stop the background thread, destroy all domains, remove the sockets.
    void stop() noexcept;

    const std::string& socket_path() const noexcept;
    const std::string& dir() const noexcept;
    // The admin token, hex (also in <dir>/admin.token). For the toolstack only.
    const std::string& admin_token() const noexcept;

    struct impl;
private:
    explicit broker(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};

} // namespace zc::hv::emu
