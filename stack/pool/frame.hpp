// SPDX-License-Identifier: MIT
// A frame descriptor says where a frame's bytes live (docs/ARCHITECTURE.md,
// "Frames"): either in a buffer of one of our pools (local), or in a page
// another domain granted to us (foreign: domid + gref + offset + len). "Is it foreign, and whose is it" is answered from the
// descriptor alone, without touching the pool or the grant table.
//
// A frame is a chain of segments linked by `next` (scatter-gather, as netif's
// NETTXF_more_data chains slots). Descriptors live in process-private memory
// and are never shared with a peer, so the chain and the owning pool are
// plain pointers; everything a peer can see (grant refs, offsets) is an index.
//
// Ownership: a local segment owns one reference on its pool buffer until it
// is released (pool::release / manager::release); a foreign segment owns
// nothing locally, the granter's completion (a netif TX response) is the
// caller's business once the bytes have been copied out.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hv/hv.hpp"

namespace zc::pool {

class pool;

enum class seg_kind : uint8_t {
    none = 0,     // empty descriptor
    local = 1,    // bytes in `owner`'s buffer `buf`
    foreign = 2,  // bytes in domain `domid`'s page granted as `gref`
};

// Flag bits. The checksum bits have the values of netif's NETTXF_csum_blank
// and NETTXF_data_validated so that netback copies them through unchanged
// (static_assert'ed in frame.cpp).
namespace seg_flag {
inline constexpr uint8_t csum_blank = 1u << 0;     // NETTXF_csum_blank: L4 checksum not yet computed
inline constexpr uint8_t data_validated = 1u << 1; // NETTXF_data_validated: checksum already checked
inline constexpr uint8_t readonly = 1u << 4;       // foreign grant is read-only (GTF_readonly)
// First segment of a frame the manager put in bounce buffers for peer
// `domid`: it counts in that peer's backlog until restaged or released.
inline constexpr uint8_t backlog = 1u << 5;
} // namespace seg_flag

// GSO types, XEN_NETIF_GSO_TYPE_* values.
enum class gso_type : uint8_t { none = 0, tcpv4 = 1, tcpv6 = 2 };

struct frame {
    frame* next = nullptr;        // next segment of the same frame, or nullptr
    pool* owner = nullptr;        // local: the pool that owns `buf`
    uint32_t buf = 0;             // local: buffer index within `owner`
    uint32_t gref = 0;            // foreign: the granter's grant reference
    // local: generation of the buffer's chunk when it was allocated, so a
    //   stale release after the chunk was ended and re-granted is refused;
    // foreign: the granter's revocation generation when the frame was
    //   stamped (manager::stamp_foreign); a mismatch means "revoked".
    uint32_t cookie = 0;
    // foreign: the granting domain; local: the peer the buffer is granted to;
    // bounce buffers (which nobody else can see): the destination the frame
    // waits for, or hv::domid_invalid.
    hv::domid_t domid = hv::domid_invalid;
    uint16_t offset = 0;          // data start in the buffer (local; = headroom) or page (foreign)
    uint16_t len = 0;             // bytes of data in this segment
    uint16_t gso_size = 0;        // MSS when gso != none (first segment only)
    seg_kind kind = seg_kind::none;
    uint8_t flags = 0;            // seg_flag::*
    gso_type gso = gso_type::none;

    bool is_foreign() const noexcept { return kind == seg_kind::foreign; }
    bool is_local() const noexcept { return kind == seg_kind::local; }
    // Whose bytes: the granter of a foreign segment; the peer a local buffer
    // is shared with (for a bounce buffer: the destination it waits for).
    hv::domid_t whose() const noexcept { return domid; }
    bool readonly() const noexcept { return flags & seg_flag::readonly; }
};

// One cache line holds one segment; netback keeps arrays of these per ring
// slot, so growth here is paid per packet.
static_assert(sizeof(frame) <= 64);
static_assert(sizeof(frame) == 40);

// Total bytes of a chain and its number of segments.
size_t frame_bytes(const frame& f) noexcept;
uint32_t frame_segments(const frame& f) noexcept;

} // namespace zc::pool
