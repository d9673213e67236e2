// SPDX-License-Identifier: MIT
// Grant map and copy by an unprivileged domain of another domain's grants,
// the broker's side. See foreign.hpp.
#include "hv/emu/foreign.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "common/log.hpp"
#include "hv/emu/grant.hpp"

namespace zc::hv::emu {

namespace {

constexpr const char* tag = "emu-broker";

// Is every populated page of region `index` of `g` granted to `to` (and
// writable, if `writable`) by some entry of g's grant table? The entries
// are the granter's memory: each is read once, as a whole.
bool wholly_granted(const domain_view& g, uint32_t index, uint32_t pages, domid_t to, bool writable) noexcept {
    std::vector<bool> seen(pages, false);
    uint32_t count = 0;
    const uint32_t first = g.mem_pages + index * region_max_pages;
    for (uint32_t ref = 0; ref < g.nr_grefs && count < pages; ++ref) {
        const uint16_t flags = __atomic_load_n(&g.gnttab[ref].flags, __ATOMIC_ACQUIRE);
        if ((flags & GTF_type_mask) != GTF_permit_access || (writable && (flags & GTF_readonly))) continue;
        if (__atomic_load_n(&g.gnttab[ref].domid, __ATOMIC_RELAXED) != to) continue;
        const uint32_t f = __atomic_load_n(&g.gnttab[ref].frame, __ATOMIC_RELAXED);
        if (f < first || f - first >= pages || seen[f - first]) continue;
        seen[f - first] = true;
        ++count;
    }
    return count == pages;
}

// The fd D gets of a region's memfd: read-only unless `writable`. A
// read-only one is the memfd reopened O_RDONLY, so that neither mmap nor
// mprotect can make it writable.
int region_fd_for(int fd, bool writable) noexcept {
    if (writable) return ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return ::open(path, O_RDONLY | O_CLOEXEC);
}

} // namespace

void foreign_pins::forget(domid_t granter) noexcept {
    std::erase_if(held, [granter](const auto& kv) { return kv.first.granter == granter; });
}

pinned_page foreign_pin(granter_ref g, uint32_t gen, foreign_pins& pins, domid_t mapper, gref_t ref, bool readonly,
                        bool mapflag) noexcept {
    pinned_page out;
    const domain_view& v = g.grants;
    uint32_t frame = 0;
    out.status = pin_grant(v, ref, mapper, readonly, mapflag, &frame);
    if (out.status != GNTST_okay) return out;
    auto refuse = [&](int16_t st, const char* why) {
        unpin_grant(v, ref, readonly);
        ZC_LOG(warn, tag, "d%u: grant %u of d%u (frame %u) refused: %s", unsigned(mapper), unsigned(ref),
               unsigned(v.dom), frame, why);
        out.status = st;
        return out;
    };
    // pin_grant checked the frame is populated: base memory or a region.
    if (frame < v.mem_pages)
        return refuse(GNTST_permission_denied, "in the granter's base memory, which would show other pages");
    const uint32_t index = (frame - v.mem_pages) / region_max_pages;
    const uint32_t pages = v.regions[index].pages.load(std::memory_order_acquire);
    const uint32_t rgen = v.regions[index].gen.load(std::memory_order_acquire);
    if (g.lent.gen[index] != rgen) {
        g.lent.gen[index] = rgen;
        g.lent.held[index].clear();
    }
    auto& lent = g.lent.held[index];
    auto it = std::find_if(lent.begin(), lent.end(), [mapper](const region_lent::to& t) { return t.dom == mapper; });
    const bool known = it != lent.end() && (readonly || it->writable);
    if (!known) {
        // Writable only if every page is granted writable to the mapper;
        // else read-only, if every page is granted to it at all.
        const bool rw = wholly_granted(v, index, pages, mapper, true);
        if (!rw && (!readonly || !wholly_granted(v, index, pages, mapper, false)))
            return refuse(GNTST_permission_denied, "its region holds pages not granted to the mapper");
        if (it == lent.end()) lent.push_back({mapper, rw});
        else it->writable = rw;
    }
    out.fd = region_fd_for(g.region_fds[index], !readonly);
    if (out.fd < 0) return refuse(GNTST_general_error, std::strerror(errno));
    out.page = (frame - v.mem_pages) % region_max_pages;
    ++pins.held[foreign_pins::key{v.dom, gen, ref, readonly}];
    return out;
}

int foreign_unpin(const domain_view* g, foreign_pins& pins, domid_t granter, uint32_t gen, gref_t ref,
                  bool readonly) noexcept {
    auto it = pins.held.find(foreign_pins::key{granter, gen, ref, readonly});
    if (it == pins.held.end()) return -EINVAL;
    if (--it->second == 0) pins.held.erase(it);
    if (g) unpin_grant(*g, ref, readonly);
    return 0;
}

} // namespace zc::hv::emu
