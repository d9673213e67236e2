// SPDX-License-Identifier: MIT
// zc-stackd's receiving side of the direct path (docs/ARCHITECTURE.md,
// "Direct path (guest to guest)"): the pages of senders' pools, mapped
// read-only once per (sender domain, grant) and kept, as Linux's
// xen-blkback keeps persistent grants, so that a descriptor costs a
// lookup and one copy instead of a map (or a grant copy) per datagram.
//
// Bounded: at most max_pages pages mapped (the least recently used one is
// unmapped for a new one), a page unused for idle_ms is unmapped (the
// sender cannot end its grant, hence free a closed socket's pool, while we
// map it: blkback purges persistent grants unused for
// persistent_grant_unused_seconds the same way), and every page of a
// domain that left the backend's zc-direct-peers (gone from our switch, or
// dead) is unmapped (drop_domain).
//
// A sender's descriptors cost us a map (a hypervisor call; in the
// emulation two broker round trips) only for pages not mapped yet: a
// sender naming grants that do not map gets at most max_failures refused
// maps per expire() period; its further descriptors are dropped without
// one until then.
//
// The bytes are the sender's and stay writable by it: read them once (copy
// them) before anything is decided on them. Single-threaded (zc-stackd's
// loop).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "hv/hv.hpp"

namespace zc::stackd {

class direct_maps {
public:
    direct_maps(hv::gnttab& tab, uint32_t max_pages, uint32_t idle_ms) noexcept
        : _tab(tab), _max(max_pages ? max_pages : 1), _idle(idle_ms) {}
    ~direct_maps();
    direct_maps(const direct_maps&) = delete;
    direct_maps& operator=(const direct_maps&) = delete;

    // The page of grant `ref` of domain `dom`, read-only; mapped now if it
    // is not. nullptr: the map was refused (*status: the GNTST_* code).
    const uint8_t* get(hv::domid_t dom, hv::gref_t ref, uint64_t now_ms, int16_t* status) noexcept;
    // Unmap every page of `dom`.
    void drop_domain(hv::domid_t dom) noexcept;
    // Unmap the pages unused since now_ms - idle_ms; a new period of
    // max_failures per domain.
    void expire(uint64_t now_ms) noexcept;
    static constexpr uint32_t max_failures = 64;
    // The domains with pages mapped.
    std::vector<hv::domid_t> domains() const;

    size_t mapped() const noexcept { return _m.size(); }
    uint64_t maps() const noexcept { return _maps; }
    uint64_t unmaps() const noexcept { return _unmaps; }

private:
    struct entry {
        hv::mapping m;
        uint64_t used = 0;
    };
    static uint64_t key(hv::domid_t dom, hv::gref_t ref) noexcept { return uint64_t(dom) << 32 | ref; }
    void unmap(entry& e) noexcept;
    void evict_lru() noexcept;
    template <class Pred>
    void unmap_if(Pred drop) noexcept;

    hv::gnttab& _tab;
    uint32_t _max, _idle;
    std::unordered_map<uint64_t, entry> _m;
    std::unordered_map<hv::domid_t, uint32_t> _failures; // refused maps this period, by domain
    uint64_t _maps = 0, _unmaps = 0;
};

} // namespace zc::stackd
