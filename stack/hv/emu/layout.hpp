// SPDX-License-Identifier: MIT
// Shared-memory layouts of the emulated hypervisor. Every structure here is
// mapped by several processes at once, so it holds only integers and
// lock-free atomics (never pointers) and has its size pinned by
// static_assert. Grant entries are Xen's own grant_entry_v1_t.
//
// Who writes what:
//   guest memory (memfd, mem_pages * 4096)  the domain; mappers/copiers that
//        pass grant validation
//   grant table (memfd, nr_grefs * 8)       the domain (the granter), and
//        GTF_reading/GTF_writing set and cleared by mappers/copiers with
//        cmpxchg, exactly as Xen does on the shared entry
//   active table (memfd, nr_grefs entries)  "hypervisor" state: pin counts
//        kept by mappers/copiers. Only the broker and privileged domains
//        (broker.hpp, "Who gets what") ever get it: the granter cannot write
//        it, and its lock word, which others may still leave set, is waited
//        for with a bound (grant.cpp, active_lock)
//   every memfd is sealed against shrink and grow
//   registry (memfd, one slot per domid)    the broker only; read by all
//   evtchn bindings (memfd per domain)      the broker only; read by all;
//        its last page is the domain's region table (below)
//   regions (memfd per exportable share)    the domain; mappers/copiers that
//        pass grant validation; the one process of the domain it is exported
//        to (hv.hpp, gntshr::export_fd)
//   evtchn bitmaps (memfd per domain)       pending set by notifiers, cleared
//        by the owner; mask set/cleared by the owner
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

extern "C" {
#include <xen/grant_table.h>
}

namespace zc::hv::emu {

inline constexpr uint32_t max_domains = 1024;       // domids 0..1023 in the emulation
inline constexpr uint32_t default_grant_frames = 64; // Xen 4.17 default max_grant_frames
inline constexpr uint32_t grefs_per_frame = 4096 / sizeof(grant_entry_v1_t); // 512
inline constexpr uint32_t default_nr_grefs = default_grant_frames * grefs_per_frame;
inline constexpr uint32_t reserved_grefs = 8;        // GNTTAB_NR_RESERVED_ENTRIES
inline constexpr uint32_t default_mem_pages = 16384; // 64 MiB of guest memory
inline constexpr uint32_t max_evtchn_ports = 4096;   // 2-level ABI, 64-bit guest

static_assert(sizeof(grant_entry_v1_t) == 8);
static_assert(offsetof(grant_entry_v1_t, flags) == 0);
static_assert(offsetof(grant_entry_v1_t, domid) == 2);
static_assert(offsetof(grant_entry_v1_t, frame) == 4);

// ---- domain registry -------------------------------------------------------
enum domain_state : uint32_t {
    dom_free = 0,   // never created, or destroyed and reaped
    dom_alive = 1,
    dom_dying = 2,  // process gone; grants invalid for new maps and copies
};

struct alignas(16) registry_slot {
    std::atomic<uint32_t> state;  // domain_state
    std::atomic<uint32_t> generation; // bumped on every create; a cached
                                      // mapping of a domain's memory is valid
                                      // only while generation matches
    uint32_t mem_pages;
    uint32_t nr_grefs;
};
static_assert(sizeof(registry_slot) == 16);
inline constexpr size_t registry_bytes = sizeof(registry_slot) * max_domains;

// ---- active grant table ----------------------------------------------------
// Xen keeps a private "active entry" per in-use grant: which domain pinned it,
// and pin counts that decide when GTF_reading/GTF_writing are cleared again.
// Here it is shared among all mapper processes, guarded by a per-entry spin
// lock (held only for a few instructions, never across a copy).
struct alignas(16) active_entry {
    std::atomic<uint32_t> lock;   // 0 free, 1 held
    uint32_t readers;             // read-only pins (maps + copies in flight)
    uint32_t writers;             // writable pins
    uint16_t pinned_by;           // domid that holds the pins (valid while pinned)
    uint16_t pad;
};
static_assert(sizeof(active_entry) == 16);

// ---- event channels ----------------------------------------------------------
enum evtchn_state : uint32_t {
    ecs_free = 0,
    ecs_unbound = 1,     // allocated, waiting for `remote_dom` to bind
    ecs_interdomain = 2, // connected to (remote_dom, remote_port)
};

struct alignas(16) evtchn_binding {
    std::atomic<uint32_t> state;  // evtchn_state
    uint16_t remote_dom;
    uint16_t handle;              // owner's evtchn handle id the port delivers to
    uint32_t remote_port;
    uint32_t pad;
};
static_assert(sizeof(evtchn_binding) == 16);
inline constexpr size_t evtchn_bindings_bytes = sizeof(evtchn_binding) * max_evtchn_ports;

struct evtchn_bitmaps {
    std::atomic<uint64_t> pending[max_evtchn_ports / 64];
    std::atomic<uint64_t> mask[max_evtchn_ports / 64];
};
static_assert(sizeof(evtchn_bitmaps) == 1024);

// ---- memory regions ------------------------------------------------------------
// A region is guest memory in a memfd of its own, so that exactly those
// pages can be handed to one process of the domain (an application's zc
// socket pool) without the rest of the guest's memory. Region i, when
// populated, holds frames [mem_pages + i * region_max_pages,
// + pages); the rest of its frame window is unpopulated (GNTST_bad_page, as
// a gfn with no page behind it is in Xen's get_paged_frame). A region's
// memfd is never reused: freeing it and populating the slot again makes a
// new memfd and bumps `gen`, so a mapper that still maps the old one
// notices before it uses the frames (client.hpp, region_frame).
inline constexpr uint32_t region_slots = 64;
inline constexpr uint32_t region_max_pages = 4096; // 16 MiB: the largest zc socket pool
struct alignas(8) region_slot {
    std::atomic<uint32_t> gen;   // bumped on every populate and free
    std::atomic<uint32_t> pages; // 0 = unpopulated
};
static_assert(sizeof(region_slot) == 8);
inline constexpr size_t region_table_bytes = 4096;
static_assert(sizeof(region_slot) * region_slots <= region_table_bytes);
// The bindings memfd: evtchn bindings, then the region table.
inline constexpr size_t bindings_memfd_bytes = evtchn_bindings_bytes + region_table_bytes;

} // namespace zc::hv::emu
