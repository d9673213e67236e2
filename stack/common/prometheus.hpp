// SPDX-License-Identifier: MIT
// The Prometheus text exposition format (version 0.0.4), the pieces every
// exporter of ours writes: `# HELP` and `# TYPE` lines of a family, then
// `name{label="value",...} number` samples. zc-netback's metrics
// (netback/metrics.cpp) and zc-stackd's (uapi/stackd/stats_client.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "common/counters.hpp"

namespace zc::prom {

// A label value: backslash, double quote and newline escaped (the format's
// only escapes); other bytes below 0x20 dropped. Strings a peer chose reach
// labels only through here.
inline std::string label_value(const std::string& s) {
    std::string o;
    o.reserve(s.size());
    for (char c : s) {
        if (c == '\\') o += "\\\\";
        else if (c == '"') o += "\\\"";
        else if (c == '\n') o += "\\n";
        else if (uint8_t(c) >= 0x20) o += c;
    }
    return o;
}

// A family's HELP (backslash and newline escaped) and TYPE lines.
inline void family(std::string& out, const std::string& name, const char* type, const std::string& help) {
    out += "# HELP " + name + " ";
    for (char c : help) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    out += "\n# TYPE " + name + " " + type + "\n";
}

// The family of a schema counter (common/counters.hpp): a counter whose
// HELP gives its unit, what it counts and, for drops, that it counts losses.
inline void counter_family(std::string& out, const std::string& name, const counter_desc& d) {
    family(out, name, "counter", std::string(d.drop ? "dropped " : "") + d.unit + ": " + d.help);
}

// One sample; `labels` is "" or `a="x",b="y"` (values through label_value).
inline void sample(std::string& out, const std::string& name, const std::string& labels, uint64_t v) {
    out += name;
    if (!labels.empty()) out += "{" + labels + "}";
    out += " " + std::to_string(v) + "\n";
}

} // namespace zc::prom
