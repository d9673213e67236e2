// SPDX-License-Identifier: MIT
// The proto frame-dispatcher fuzz target, shared by the libFuzzer binary
// (ZCNET_FUZZ) and the deterministic ctest driver.
//
// Input format (so that a fuzzer can build multi-frame conversations):
//   byte 0      control: bits 0-1 rx_csum (3 = verify), bit 2 reply in place,
//               bit 3 a small reply buffer of byte 1 bytes
//   byte 1      reply buffer size when bit 3 is set
//   then frames: a big-endian 16-bit length and that many bytes (the last
//   frame is cut at the end of the input), at most max_frames of them.
// Violated invariants abort (__builtin_trap), which both drivers report.
#pragma once

#include <cstddef>
#include <cstdint>

#include "proto/host.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace zc::proto::fuzz {

inline constexpr size_t max_frames = 8;

// What the target saw, summed over every input (for the ctest driver to
// check that its inputs reach every branch).
struct totals {
    uint64_t inputs = 0;
    uint64_t frames = 0;
    uint64_t by_action[4] = {};
    uint64_t by_reason[32] = {};
    uint64_t released = 0;  // ARP waiters handed back by a reply
    uint64_t failed = 0;    // ARP waiters handed back by expiry/drain
    uint64_t echo_replies = 0;  // echo replies surfaced to the caller
};
totals& stats() noexcept;

} // namespace zc::proto::fuzz
