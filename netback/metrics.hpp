// SPDX-License-Identifier: MIT
// zc-netback's counters in the Prometheus text exposition format (version
// 0.0.4: `# HELP`, `# TYPE`, then `name{label="value",...} number` lines),
// for node_exporter's textfile collector (`zc-netback run --metrics-file`)
// or a scrape through `zc-netback stats --prometheus`. Every counter of the
// per-vif schema (netback/counters.hpp) becomes one metric family
// `zcnet_netback_<name>_total` with one sample per vif, so a counter added
// to the schema is exported without touching this file.
#pragma once

#include <string>
#include <vector>

#include "netback/backend.hpp"
#include "netback/datapath.hpp"

namespace zc::netback {

// Uplinks (AF_XDP ports, netback/uplink.hpp) add the families
// `zcnet_netback_uplink_<name>_total` of their own counter schema.
std::string prometheus_text(const std::vector<vif_info>& vifs, const std::vector<device_info>& devices,
                            const std::vector<uplink_info>& uplinks = {});

// Writes `text` to `path` atomically (a temporary file in the same
// directory, then rename(2)), so that a collector never reads half a file.
// Returns 0 or -errno.
int write_file_atomic(const std::string& path, const std::string& text) noexcept;

} // namespace zc::netback
