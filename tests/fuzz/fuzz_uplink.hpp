// SPDX-License-Identifier: MIT
// zc-netback's uplink against the wire, in-process over the emulated
// hypervisor: the fuzz target shared by the libFuzzer binary (ZCNET_FUZZ)
// and the deterministic ctest driver (docs/ARCHITECTURE.md, "Uplinks").
//
// One emulated host lives for the whole run: dom0 runs the real control
// plane and data path (netback::backend) with one in-process uplink
// (datapath::add_uplink_inproc: the switch port, per-destination UMEM
// quota and delivery of an AF_XDP uplink, without the socket) and two
// connected guests, domains 2 and 3. An input is a list of operations:
//   - a frame from the wire of any length and bytes, addressed to a guest,
//     broadcast or anything (runts, oversized, truncated headers, bad
//     checksums, VLAN garbage): the switch lookup, flooding copies, the
//     quota and its fallback to the bounce pool, the queue to the vif and
//     the grant copy into the guest's RX buffer;
//   - a guest posting RX buffers (or not: full queues, quota fallbacks);
//   - a guest sending a frame bound for the wire: plain, checksum-blank or
//     a TCP/IPv4 or TCP/IPv6 GSO frame with any MSS, headers optionally
//     damaged: checksum completion and software segmentation;
//   - letting the data path run.
//
// Invariants (violations trap, which both drivers report):
//   - every frame from the wire is delivered to a vif or counted in exactly
//     one drop reason: from_wire = runt + rx_oversize + no_dest + (to_vif +
//     vif_full - flood_copies), after every frame; a frame is oversized
//     exactly when it is longer than MTU + Ethernet header (+ 4 if tagged);
//   - every UMEM frame and bounce buffer comes back once the guests post
//     buffers again (no leak, no frame stuck);
//   - every frame given to the wire is at most MTU + Ethernet + one VLAN
//     tag, and a frame the guest sent checksum-blank or as GSO carries an
//     L4 checksum (and, IPv4, a header checksum) that verifies;
//   - both guests' vifs stay connected and enabled.
// ASan (libFuzzer build, and the asan-ubsan preset) catches memory errors.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace zc::netback::fuzz {

// Summed over every input, for the ctest driver to check its inputs reach
// the interesting paths.
struct up_totals {
    uint64_t inputs = 0;
    uint64_t injected = 0;       // frames handed to the uplink as received
    uint64_t to_vif = 0;         // queued for a guest
    uint64_t runts = 0, oversize = 0, no_dest = 0, vif_full = 0;
    uint64_t quota_fallbacks = 0;
    uint64_t flood_copies = 0;
    uint64_t guest_rx = 0;       // frames the guests received (any source)
    uint64_t wire_frames = 0;    // frames given to the wire
    uint64_t verified = 0;       // of those, checksums verified
    uint64_t gso_segments = 0;
    uint64_t tx_drops = 0;       // guest -> wire drops on the uplink
};
up_totals& up_stats() noexcept;

} // namespace zc::netback::fuzz
