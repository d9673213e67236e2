// SPDX-License-Identifier: MIT
// zc-netback's control plane, private part: one device (a vif's backend
// directory) and the strict parser of frontend-written numbers, shared by
// backend.cpp and backend_direct.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include <xen/io/xenbus.h>
}

#include "common/log.hpp"
#include "common/mac.hpp"
#include "netback/backend.hpp"

namespace zc::netback {

// Frontend-written numbers: strict decimal, bounded.
inline bool parse_u32(const std::string& s, uint32_t& out, uint64_t max = UINT32_MAX) {
    if (s.empty() || s.size() > 10) return false;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + uint64_t(c - '0');
    }
    if (v > max) return false;
    out = uint32_t(v);
    return true;
}

struct backend::device {
    std::string key; // "<fe>/<devid>"
    hv::domid_t frontend = 0;
    uint32_t devid = 0;
    std::string be_path, fe_path;
    int state = XenbusStateUnknown;    // ours
    int fe_state = -1;                 // theirs, last seen (-1: not yet read)
    bool vif_added = false;
    std::string last_error;
    // The direct path (backend_direct.cpp): negotiated by the frontend, its
    // configured MAC (the toolstack's `mac` key), the peers last published.
    bool direct = false;
    bool mac_configured = false;
    mac_addr mac{};
    std::vector<std::pair<std::string, std::string>> peers_written;
    // Every line about this device is rate-limited on its own: a frontend
    // cycling its state floods neither the log nor the lines about others.
    log::ratelimit rl{20, 2};
};

// A log line about device `d`, through its own rate limiter (`tag` is the
// including file's).
#define DEV_LOG(d, lvl, ...) ZC_LOG_RL((d).rl, lvl, tag, __VA_ARGS__)

} // namespace zc::netback
