// SPDX-License-Identifier: MIT
// Grant map and copy by an unprivileged domain of another domain's grants,
// the hypervisor side (docs/ARCHITECTURE.md, "The emulated hypervisor's
// authentication"). Xen lets domain D map (GNTTABOP_map_grant_ref) or copy
// (GNTTABOP_copy) a grant of domain S whenever S's entry names D; an
// unprivileged D has no mapping of S's memory or tables here (broker.hpp,
// "Who gets what"), so the broker, which owns them, validates and pins the
// entry for D and hands D the memory of that grant and nothing else:
//
//   - the checks and codes are Xen's own (grant.hpp pin_grant: bad ref
//     GNTST_bad_gntref, an entry not naming D or a write pin of a
//     GTF_readonly entry GNTST_general_error, a frame with no page behind it
//     GNTST_bad_page; a domain that is not alive GNTST_bad_domain);
//   - what D gets is the memfd of the memory region (layout.hpp) the frame
//     lies in, and only if every populated page of that region is granted
//     to D (writable only if every one is granted writable to D, read-only
//     otherwise: a read-only fd, so D can neither map it writable nor
//     mprotect it so). A frame in the base memory, or in a region some page
//     of which is not granted to D, would show D pages not granted to it:
//     refused GNTST_permission_denied, the code of a map or copy refused by
//     Xen's policy (XSM), logged. A region is granted as a unit and freed as
//     a unit by the granter (grant.cpp, share_exportable); once lent to D,
//     D keeps the fd, so a region is never reused for other memory: freeing
//     it makes the next populate a fresh memfd;
//   - the pin is S's active entry with GTF_reading (and GTF_writing for a
//     writable pin) set, exactly as a privileged mapper's: S cannot end
//     access while D holds it. D's unpin, or D's death
//     (release_pins_of), releases it.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <vector>

#include "hv/emu/client.hpp"
#include "hv/emu/layout.hpp"

namespace zc::hv::emu {

// The pins one domain holds on other domains' grants through the broker.
struct foreign_pins {
    struct key {
        domid_t granter;
        uint32_t gen; // the granter's registry generation at pin time
        gref_t ref;
        bool readonly;
        auto operator<=>(const key&) const = default;
    };
    std::map<key, uint32_t> held; // -> number of pins
    // Forget every pin on `granter` (it is destroyed: its tables are gone).
    void forget(domid_t granter) noexcept;
};

// Per region of a granter: which domains hold its memfd (for the current
// generation of the slot), and whether writable.
struct region_lent {
    struct to {
        domid_t dom;
        bool writable;
    };
    uint32_t gen[region_slots] = {};
    std::vector<to> held[region_slots];
};

// A granter as the broker sees it.
struct granter_ref {
    const domain_view& grants;  // gnttab, active, mem_pages, regions
    const int* region_fds;      // region_slots entries, -1 = unpopulated
    region_lent& lent;
};

struct pinned_page {
    int16_t status = GNTST_general_error;
    int fd = -1;       // owned by the caller when status == GNTST_okay
    uint32_t page = 0; // the frame's page index in fd
};

// Validate and pin grant `ref` of `g` for `mapper` (foreign.hpp header
// comment); on GNTST_okay the pin is recorded in `pins` under `gen`.
pinned_page foreign_pin(granter_ref g, uint32_t gen, foreign_pins& pins, domid_t mapper, gref_t ref, bool readonly,
                        bool mapflag) noexcept;
// Undo one pin `pins` holds. `g` is null when the granter of that
// generation is gone (the record is dropped then). -EINVAL: no such pin.
int foreign_unpin(const domain_view* g, foreign_pins& pins, domid_t granter, uint32_t gen, gref_t ref,
                  bool readonly) noexcept;

} // namespace zc::hv::emu
