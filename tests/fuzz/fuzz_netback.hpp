// SPDX-License-Identifier: MIT
// zc-netback against a hostile frontend, in-process over the emulated
// hypervisor: the fuzz target shared by the libFuzzer binary (ZCNET_FUZZ)
// and the deterministic ctest driver.
//
// One emulated host lives for the whole run: dom0 runs the real control
// plane and data path (netback::backend), domain 2 is an honest guest with a
// connected vif that keeps posting RX buffers, domain 1 is the frontend the
// input controls. Each input is one life of domain 1's vif: the toolstack
// creates it, the input writes the frontend's xenstore keys (ring
// references, event channels, queue count, features, raw strings) and its
// state changes, then, if the backend connected, domain 2 sends it one
// frame and the input drives the rings: TX
// requests and extras with any fields, frame bytes, RX requests, producer
// indices (also impossible ones), notifications. Then the frontend closes
// and the toolstack removes the vif.
//
// Input format: a byte stream read front to back (zeros past the end):
//   u8 key flags, u8 features, u8 queues, u8 raw-key selector (+ length and
//   bytes), u8 state count and that many state bytes, then operations of
//   one selector byte and its operands (see fuzz_netback.cpp, op_*).
//
// Invariants (violations trap, which both drivers report):
//   - no byte of domain 2's memory but the frame it sent (a fresh random
//     canary in every other page it grants, per input) ever appears in
//     domain 1's pages: a read of another domain's memory on domain 1's
//     behalf;
//   - domain 2's TX pages (granted, never used in a request) are never
//     written;
//   - domain 2's vif stays connected and enabled whatever domain 1 does;
//   - domain 1's vif goes away within a bound after it closes (no hang).
// ASan (libFuzzer build, and the asan-ubsan preset) catches memory errors
// in zc-netback's own memory.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace zc::netback::fuzz {

// Summed over every input, for the ctest driver to check its inputs reach
// the interesting paths.
struct totals {
    uint64_t inputs = 0;
    uint64_t connected = 0;       // inputs where the backend reached Connected
    uint64_t connect_refused = 0; // inputs where it answered Closing (bad keys)
    uint64_t tx_requests = 0;     // TX requests the input wrote
    uint64_t disabled = 0;        // inputs whose vif the data path disabled (fatal)
    uint64_t delivered = 0;       // frames domain 2 received from domain 1
    uint64_t tx_drops = 0;        // domain 1's frames dropped, any counted reason
    uint64_t received = 0;        // frames domain 1 received (domain 2's)
};
totals& stats() noexcept;

} // namespace zc::netback::fuzz
