// SPDX-License-Identifier: MIT
// The emulated hypervisor. One broker per emulated host: it owns the domain
// registry, every domain's memory and table files, event-channel bindings and
// xenstore (xenstored.hpp), and hands file descriptors to domain processes
// over a SOCK_SEQPACKET Unix socket (SCM_RIGHTS). It never touches the data
// path: grant copy and notify run in the calling domain's process, as a
// hypercall runs on the calling vCPU.
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

    struct impl;
private:
    explicit broker(std::unique_ptr<impl> p) noexcept;
    std::unique_ptr<impl> _p;
};

} // namespace zc::hv::emu
