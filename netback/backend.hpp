// SPDX-License-Identifier: MIT
// zc-netback's control plane: the xenstore side of every vif, following
// Linux xen-netback's xenbus.c (netback_probe, frontend_changed,
// set_backend_state, connect, read_xenbus_vif_flags). It watches
// backend/vif under our domain, offers the features, walks the XenbusState
// machine with the frontend, reads the frontend's ring references and event
// channels and hands connected vifs to the data path.
//
// Single-threaded: call process() from one thread when fd() is readable
// (or periodically). Fatal errors reported by the data path's workers are
// queued and handled there too.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "hv/hv.hpp"
#include "hv/xs.hpp"
#include "netback/datapath.hpp"

namespace zc::netback {

struct backend_options {
    uint32_t max_queues = 4;          // multi-queue-max-queues we offer
    bool split_event_channels = true; // feature-split-event-channels we offer
    datapath_options dp;
};

struct device_info {
    hv::domid_t frontend;
    uint32_t devid;
    int backend_state;   // XenbusState we published
    int frontend_state;  // last seen
    std::string last_error;
};

class backend {
public:
    static result<std::unique_ptr<backend>> create(hv::port& port, const backend_options& o, std::string* why) noexcept;
    ~backend();

    // Readable when xenstore has events or the data path reported a fatal error.
    int fd() const noexcept;
    // Handle everything pending; never blocks. Returns the number of events handled.
    int process() noexcept;

    std::vector<device_info> devices() const;
    // False once xenstore is unreachable (the hypervisor or xenstored went
    // away): the daemon should exit rather than serve a dead host.
    bool xenstore_alive() noexcept;
    datapath& dp() noexcept { return *_dp; }

private:
    struct device;
    backend() = default;
    void on_backend_path(const std::string& path) noexcept;
    void on_frontend_state(const std::string& key) noexcept;
    void on_release_domain() noexcept;
    void probe(device& d) noexcept;
    void frontend_changed(device& d) noexcept;
    int connect(device& d, std::string* why) noexcept;
    void disconnect(device& d) noexcept;
    void set_state(device& d, int state) noexcept;
    void set_backend_state(device& d, int target) noexcept;
    void forget(const std::string& key) noexcept;
    void handle_fatals() noexcept;
    // backend_direct.cpp: the direct path's keys.
    void read_direct_keys(device& d, vif_params& p) noexcept;
    void publish_direct_peers() noexcept;
    void withdraw_direct(device& d) noexcept;

    hv::port* _port = nullptr;
    backend_options _opts;
    std::unique_ptr<hv::xs> _xs;
    std::unique_ptr<datapath> _dp;
    std::string _base;                            // /local/domain/<me>/backend/vif
    std::map<std::string, std::unique_ptr<device>> _devices; // key "<fe>/<devid>"
    int _event_fd = -1;                           // kicked by data-path fatals
    int _epoll_fd = -1;                           // xenstore fd + _event_fd
    mutable std::mutex _fatal_lock;               // protects _fatals
    std::vector<std::pair<std::string, std::string>> _fatals; // (key, reason)
};

} // namespace zc::netback
