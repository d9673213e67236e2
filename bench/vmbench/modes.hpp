// SPDX-License-Identifier: MIT
// zc-vmbench's modes: one pass over every selected mode and frame size,
// baselines first (memcpy, the kernel path) so every later row prints its
// ratios to them.
#pragma once

#include <cstdint>

#include "report.hpp"

namespace zc::vmbench {

// One pass: its rows go into `ps` and are printed as they complete.
// `phase` numbers the measurements (stale frames of an earlier one are
// told apart). False when a mode failed; the others still ran.
bool run_pass(const run_opts& o, progress& prog, uint32_t& phase, pass& ps);

} // namespace zc::vmbench
