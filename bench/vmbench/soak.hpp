// SPDX-License-Identifier: MIT
// zc-vmbench --modes soak: N emulated guests in a ring (guest i sends to
// guest i+1 and receives from guest i-1, mixed frame sizes, every byte
// checked) behind one zc-netback for --duration, in rounds; random guests
// are killed (SIGKILL: the domain dies, zc-netback tears its vif down as
// after `xl destroy`) and re-created on the same vif, and --flappers guests
// close and reopen their netfront in a tight loop. Checks at the end, each
// able to fail (docs/ARCHITECTURE.md, "Measuring"): no frame lost between
// two guests that stayed connected through a round, counters that add up
// ("Counters"), and zc-netback's RSS, fds and mapped grants back to what
// they were after the warm-up.
#pragma once

#include <cstdint>
#include <string>

#include "hosts.hpp"

namespace zc::vmbench {

struct soak_opts {
    uint32_t guests = 8;      // in the ring, sending and receiving
    uint32_t flappers = 0;    // more guests that close and reopen their netfront in a loop
    double duration = 3600;   // seconds of load after the warm-up round
    double round = 5;         // seconds per round (every report is checked per round)
    double kill_every = 10;   // mean seconds between guest kills; 0: none
    double rate = 2000;       // frames a second per guest; 0: as fast as the rings take them
    uint32_t seed = 0;        // 0: from the clock (printed, so a run can be replayed)
    double rss_slack = 0.10;  // allowed RSS growth over the warm-up's, as a fraction...
    uint64_t rss_slack_kb = 4096; // ...or this many KiB, whichever is larger
    std::string json;         // summary as JSON (optional)
};

// Returns 0 when every check held, 1 when one failed, 2 when the host
// could not be set up.
int run_soak(const run_opts& o, const soak_opts& s);

} // namespace zc::vmbench
