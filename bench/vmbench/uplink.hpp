// SPDX-License-Identifier: MIT
// zc-vmbench's uplink mode (docs/ARCHITECTURE.md, "Uplinks"): emulated
// guests behind zc-netback, whose --uplink is the near end of a veth pair;
// the far end is in its own network namespace, where a kernel UDP socket
// receives and checks every datagram (bench/kernel_path.hpp, uplink_veth).
// Guest -> kernel over AF_XDP, next to the kernel path's kernel -> kernel
// UDP rows over the same veth kind in the same pass.
#pragma once

#include <cstdint>

#include "report.hpp"

namespace zc::vmbench {

// The uplink rows of one pass go into `ps` (ratios to ps.kern, the kernel
// rows measured earlier in the pass). Without root or network namespaces
// it prints why it skipped and returns true; false when a measurement failed.
bool run_uplink(const run_opts& o, progress& prog, pass& ps);

// After the table: each uplink row next to the kernel row of its frame size,
// the ratio taken within each pass, then the median (min-max) over passes.
void print_uplink_summary(const std::vector<pass>& passes);

} // namespace zc::vmbench
