// SPDX-License-Identifier: MIT
// Emulated grant tables: granting (gntshr) and mapping/copying (gnttab) with
// Xen's validation and GNTST_* codes. Owned by the grant-emulation work.
//
// Who touches what (see layout.hpp):
//   granter   writes its grant entries as a Linux guest does
//             (gnttab_grant_foreign_access_ref / gnttab_end_foreign_access_ref)
//   mapper    validates the entry, sets/clears GTF_reading/GTF_writing with
//             cmpxchg and keeps pin counts in the granter's active table, as
//             Xen's map_grant_ref / acquire_grant_for_copy do; all of it runs
//             in the mapper's process, the broker is never asked, except by
//             an unprivileged domain for another domain's grant: the broker
//             validates and pins that one (foreign.hpp)
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hv/emu/client.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

// Allocator of this domain's own guest-memory frames (the pages a guest can
// grant) and of its free grant refs: both are per-domain granting state, so
// one allocator serves all gntshr handles of the domain process.
// Thread-safe. Refs 0..7 (GNTTAB_NR_RESERVED_ENTRIES) are never handed out.
class frame_allocator {
public:
    frame_allocator(uint32_t mem_pages, uint32_t nr_grefs);

    // `count` contiguous frames, first fit. Returns the first frame.
    // Errors: -EINVAL (count 0), -ENOMEM (no run of `count` free frames).
    result<uint32_t> alloc_frames(uint32_t count) noexcept;
    void free_frames(uint32_t first, uint32_t count) noexcept;

    // `count` free grant refs into out[0..count). Errors: -ENOSPC.
    int alloc_refs(uint32_t count, gref_t* out) noexcept;
    void free_refs(const gref_t* refs, uint32_t count) noexcept;

    uint32_t free_frames_count() const noexcept;
    uint32_t free_refs_count() const noexcept;
    uint32_t mem_pages() const noexcept { return _mem_pages; }

private:
    const uint32_t _mem_pages;
    mutable std::mutex _lock;       // protects everything below
    std::vector<uint64_t> _used;    // bit per frame; bits past _mem_pages set
    uint32_t _free_frames;
    std::vector<gref_t> _free_refs; // LIFO, lowest ref on top at start
};

std::unique_ptr<frame_allocator> make_frame_allocator(client& c);

std::unique_ptr<gntshr> make_gntshr(client& c, frame_allocator& fa);
std::unique_ptr<gnttab> make_gnttab(client& c);

// For the broker when domain `dead` is destroyed: drop every pin `dead` holds
// on `granter`'s grants and clear GTF_reading/GTF_writing, as Xen's
// gnttab_release_mappings() does for a dying mapper, so that the granter can
// end access again. Call only once no process of `dead` runs any more.
// Returns the number of grant entries released.
uint32_t release_pins_of(const domain_view& granter, domid_t dead) noexcept;

// Pin grant `ref` of `granter` for domain `ldom` as Xen's map_grant_ref
// (mapflag) or acquire_grant_for_copy (!mapflag) does, with its GNTST_*
// codes; *frame is the granter's frame. unpin_grant undoes one pin. For
// the broker, which pins on behalf of unprivileged domains (foreign.hpp);
// `granter` needs gnttab, active, mem_pages and regions.
int16_t pin_grant(const domain_view& granter, gref_t ref, domid_t ldom, bool readonly, bool mapflag,
                  uint32_t* frame) noexcept;
void unpin_grant(const domain_view& granter, gref_t ref, bool readonly) noexcept;

namespace test_hooks {
// Called by gnttab::copy after both sides of a segment are claimed (pins and
// GTF_reading/GTF_writing held) and before the memcpy. Tests only: lets a
// test observe the granter's view of an in-flight copy. nullptr disables.
using copy_hook_fn = void (*)(void* arg) noexcept;
void set_copy_hook(copy_hook_fn fn, void* arg) noexcept;
} // namespace test_hooks

} // namespace zc::hv::emu
