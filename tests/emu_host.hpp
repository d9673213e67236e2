// SPDX-License-Identifier: MIT
// Test helpers: an emulated host (hv/emu/host.hpp: a broker in a thread of
// the test process, in a unique temporary directory) that reports failures
// to GoogleTest, and child processes acting as domains.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "hv/emu/emu_port.hpp"
#include "hv/emu/host.hpp"

namespace zc::test {

class emu_host {
public:
    emu_host() {
        std::string why;
        auto h = hv::emu::host::create("test", &why);
        if (!h) {
            ADD_FAILURE() << "emulated host: " << why;
            return;
        }
        _h = std::move(*h);
    }
    bool ok() const { return _h != nullptr; }
    std::string sock() const { return _h->sock(); }
    const std::string& dir() const { return _h->dir(); }
    const std::string& admin_token() const { return _h->admin_token(); }
    hv::emu::host& host() { return *_h; }

    // A domain in this process. `privileged`: a driver domain, which may map
    // and copy other domains' grants (dom0 always may; hv/emu/broker.hpp).
    std::unique_ptr<hv::port> domain(hv::domid_t d, uint32_t mem_pages = 0, bool privileged = false) {
        std::string why;
        auto p = _h->domain(d, mem_pages, &why, false, privileged);
        if (!p) {
            ADD_FAILURE() << "domain " << d << ": " << why;
            return nullptr;
        }
        return std::move(*p);
    }

private:
    std::unique_ptr<hv::emu::host> _h;
};

// A pipe for passing small values between a test and its child domains.
struct chan {
    int fd[2] = {-1, -1};
    chan() { EXPECT_EQ(::pipe(fd), 0); }
    ~chan() {
        if (fd[0] >= 0) ::close(fd[0]);
        if (fd[1] >= 0) ::close(fd[1]);
    }
    template <class T> bool put(const T& v) { return ::write(fd[1], &v, sizeof v) == ssize_t(sizeof v); }
    // Bounded wait so that a broken child fails the test instead of hanging it.
    template <class T> bool get(T& v, int timeout_ms = 10000) {
        pollfd p{fd[0], POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) return false;
        return ::read(fd[0], &v, sizeof v) == ssize_t(sizeof v);
    }
};

// Run `body` in a forked child; its return value is the exit code.
inline pid_t spawn(const std::function<int()>& body) {
    pid_t pid = ::fork();
    if (pid == 0) {
        int rc = body();
        std::_Exit(rc);
    }
    return pid;
}

// Exit code of the child, or -1 (signalled, or still running after the timeout).
inline int reap(pid_t pid, int timeout_ms = 20000) {
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        int st = 0;
        pid_t r = ::waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0) return -1;
        ::usleep(10000);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return -1;
}

// Wait until `fd` is readable.
inline bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

} // namespace zc::test
