// SPDX-License-Identifier: MIT
// zc-vmbench's runner side of its processes: the children it starts (guests,
// zc-netback, zc-stackd, zc-perf) with line-based pipes, their CPU time, and
// zc-netback's counters read back over its control socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "netback/counters.hpp"

namespace zc::vmbench {

using clk = std::chrono::steady_clock;

inline double now_s() { return std::chrono::duration<double>(clk::now().time_since_epoch()).count(); }

struct child {
    pid_t pid = -1;
    int in = -1, out = -1; // our ends: write commands, read answers
    std::string buf;

    bool send(const std::string& s);
    // Next line, bounded wait.
    bool line(std::string& l, int timeout_ms);
    // Guests: ask them to quit. Others: SIGTERM. Either way 3 s, then SIGKILL.
    void stop();
    void terminate();

private:
    void end();
};

using env_list = std::vector<std::pair<std::string, std::string>>;

// Start `argv` with environment `env` added; stdin/stdout are pipes to us.
// `log`: the child's stderr goes there (its start-up chatter would break up
// the table); see log_tail() for errors.
child spawn(const std::vector<std::string>& argv, const env_list& env, bool pipes = true, const std::string& log = "");

// The last lines of a child's log, for an error message.
std::string log_tail(const std::string& path, size_t max = 600);

// CPU seconds (user + system) a process has used so far.
double cpu_of(pid_t pid);

// The emulated hosts' directories (hv/emu/host.hpp: broker socket, xenstore,
// logs) are removed by their destructors, which a signal that ends the
// runner skips. start_janitor() forks a process that outlives the runner:
// it ignores the terminal's signals, and when the runner's end of its pipe
// closes (however the runner ended) it removes every directory still
// listed. Call it while the runner has no threads.
void start_janitor();
void janitor_add(const std::string& dir);
void janitor_remove(const std::string& dir);

// zc-netback's `stats` JSON over its control socket.
std::string netback_stats(const std::string& ctl);

// A field of a flat JSON object (its raw text) and as a number.
std::string jfield(const std::string& json, const std::string& key);
double jnum(const std::string& json, const std::string& key);

// zc-netback's counters summed over every vif of its stats JSON (the keys
// are vif_stats' counter list, netback/counters.hpp).
netback::vif_stats netback_totals(const std::string& ctl);
// One counter of vif_stats (per-frame figures are deltas of one counter).
using vif_counter = uint64_t netback::vif_stats::*;

} // namespace zc::vmbench
