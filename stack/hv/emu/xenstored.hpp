// SPDX-License-Identifier: MIT
// A xenstore daemon for the emulated hypervisor, speaking xenstored's own
// wire protocol (xen/io/xs_wire.h) on one Unix socket per domain, so that the
// real libxenstore is the client on emu exactly as on Xen. A connection's
// domain is the domain of the socket it arrived on; permissions are checked
// against it as xenstored does (dom0 is privileged).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.hpp"

namespace zc::hv::emu {

class xenstored {
public:
    xenstored();
    ~xenstored();
    xenstored(const xenstored&) = delete;
    xenstored& operator=(const xenstored&) = delete;

    // Start serving in an own thread (epoll). Returns 0 or -errno.
    int start() noexcept;
    // Stop the thread and close every socket. Idempotent.
    void stop() noexcept;

    // Introduce domain `dom`: listen on `sock_path` (connections there act as
    // `dom`), create /local/domain/<dom> owned by `dom` with "domid" and
    // "name" as a toolstack would, and fire @introduceDomain.
    int add_domain(uint16_t dom, const std::string& sock_path, const std::string& name) noexcept;
    // The domain died: close its listener and connections, drop its watches
    // and transactions, remove /local/domain/<dom>, fire @releaseDomain.
    void remove_domain(uint16_t dom) noexcept;

    // Toolstack access with dom0 privilege (the broker creating device
    // directories, tests). Thread-safe. Return 0 or -errno.
    int write(const std::string& path, const std::string& value) noexcept;
    result<std::string> read(const std::string& path) noexcept;
    int rm(const std::string& path) noexcept;

    struct impl;
private:
    std::unique_ptr<impl> _p;
};

} // namespace zc::hv::emu
