// SPDX-License-Identifier: MIT
// zc-netback's control plane served from a thread of the test process (dom0),
// as the daemon's main loop serves it: wait on its fd, process(). The data
// path's own worker threads run inside the backend.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <poll.h>
#include <string>
#include <thread>

#include "netback/backend.hpp"

namespace zc::test {

class served_backend {
public:
    served_backend() = default;
    served_backend(const served_backend&) = delete;
    served_backend& operator=(const served_backend&) = delete;
    ~served_backend() { stop(); }

    // Creates the backend for `dom0` and starts serving it; false (and a
    // test failure saying why) when it cannot be created.
    bool start(hv::port& dom0, const netback::backend_options& o = {}) {
        std::string why;
        auto b = netback::backend::create(dom0, o, &why);
        EXPECT_TRUE(b) << why;
        if (!b) return false;
        _be = std::move(*b);
        _loop = std::thread([this] {
            while (!_stop) {
                pollfd p{_be->fd(), POLLIN, 0};
                ::poll(&p, 1, 20);
                _be->process();
            }
        });
        return true;
    }
    // Stops serving and destroys the backend (its vifs are torn down).
    void stop() {
        _stop = true;
        if (_loop.joinable()) _loop.join();
        _be.reset();
    }

    explicit operator bool() const { return _be != nullptr; }
    netback::backend* operator->() const { return _be.get(); }
    netback::backend& operator*() const { return *_be; }

private:
    std::unique_ptr<netback::backend> _be;
    std::thread _loop;
    std::atomic<bool> _stop{false};
};

} // namespace zc::test
