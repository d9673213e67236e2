// SPDX-License-Identifier: MIT
// Emulated grant tables. The granter side writes grant_entry_v1_t exactly as
// a Linux guest does (drivers/xen/grant-table.c); the mapper side validates
// and pins exactly as Xen 4.17 does (xen/common/grant_table.c). Function
// comments name the function each piece matches.
#include "hv/emu/grant.hpp"

#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <new>
#include <unordered_map>

#include "common/check.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"

namespace zc::hv::emu {

namespace {

constexpr const char* tag = "emu-grant";

// Xen updates flags and domid of an entry as one 32-bit word (union
// grant_combo); may_alias makes that view of grant_entry_v1_t legal C++.
typedef uint32_t __attribute__((__may_alias__)) combo_word;
static_assert(std::endian::native == std::endian::little,
              "combo_word packs flags in the low half, as on x86/arm64 Xen");

// Xen's active entry keeps four 8-bit pin counters and refuses a new pin when
// any has bit 7 set (act->pin & 0x80808080U) so that they cannot overflow.
constexpr uint32_t max_pins = 0x80;

// Xen's _set_status_v1 gives up after this many failed cmpxchg: a guest that
// rewrites its entry faster than we can update it must not livelock us.
constexpr int max_cmpxchg_retries = 5;

std::atomic<test_hooks::copy_hook_fn> g_copy_hook{nullptr};
std::atomic<void*> g_copy_hook_arg{nullptr};

// ---- the shared grant entry -------------------------------------------------

// gnttab_clear_flags(): the granter may be changing other bits concurrently.
void clear_flags(grant_entry_v1_t& e, uint16_t mask) noexcept {
    __atomic_fetch_and(&e.flags, static_cast<uint16_t>(~mask), __ATOMIC_SEQ_CST);
}

// Linux gnttab_update_entry_v1(): frame and domid must be visible before the
// flags that make the entry valid, because a mapper checks flags first.
void grant_entry(grant_entry_v1_t& e, domid_t peer, uint32_t frame, bool readonly) noexcept {
    __atomic_store_n(&e.frame, frame, __ATOMIC_RELAXED);
    __atomic_store_n(&e.domid, peer, __ATOMIC_RELAXED);
    const uint16_t flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
    __atomic_store_n(&e.flags, flags, __ATOMIC_RELEASE);
}

// Linux gnttab_end_foreign_access_ref_v1(): only an entry that no mapper or
// copier holds (neither GTF_reading nor GTF_writing) may be invalidated, and
// the check and the clear must be one cmpxchg against Xen's flag updates.
bool end_access(grant_entry_v1_t& e) noexcept {
    uint16_t flags = __atomic_load_n(&e.flags, __ATOMIC_ACQUIRE);
    do {
        if (flags & (GTF_reading | GTF_writing)) return false;
    } while (!__atomic_compare_exchange_n(&e.flags, &flags, uint16_t{0}, false,
                                          __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE));
    return true;
}

// Xen _set_status_v1(): validate type and domid (unless already pinned) and
// set GTF_reading [| GTF_writing] in one cmpxchg on flags+domid, so that the
// granter cannot end access between our check and our claim.
int16_t set_status_v1(grant_entry_v1_t& e, bool pinned, bool readonly, bool mapflag,
                      domid_t ldom) noexcept {
    // A v1 entry carrying GTF_sub_page cannot be mapped (mapflag), only copied.
    const uint16_t mask = GTF_type_mask | (mapflag ? GTF_sub_page : 0);
    auto* raw = reinterpret_cast<combo_word*>(&e);
    uint32_t cur = __atomic_load_n(raw, __ATOMIC_ACQUIRE);
    for (int retries = 0;;) {
        const auto flags = static_cast<uint16_t>(cur & 0xFFFF);
        const auto domid = static_cast<uint16_t>(cur >> 16);
        if (!pinned && ((flags & mask) != GTF_permit_access || domid != ldom))
            return GNTST_general_error;
        uint32_t next = cur | GTF_reading;
        if (!readonly) {
            if (flags & GTF_readonly) return GNTST_general_error; // write-pin of a r/o grant
            next |= GTF_writing;
        }
        if (__atomic_compare_exchange_n(raw, &cur, next, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE))
            return GNTST_okay;
        if (++retries == max_cmpxchg_retries) return GNTST_general_error; // "unstable"
    }
}

// ---- the active entry ---------------------------------------------------------

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// How long a caller waits for an active entry's lock before it gives up.
// The lock is held for a few instructions, but the active table is memory
// other processes write (the privileged mappers of the domain, see
// broker.hpp): one that dies or misbehaves holding it must not hang the
// others, so the wait is bounded and the operation fails instead
// (GNTST_general_error, as Xen fails an operation on an entry it cannot
// use). Generous: a holder may be preempted on a loaded host.
constexpr uint64_t active_lock_limit_ns = 2'000'000'000;

// Xen's per-entry spin lock (active_entry_acquire), bounded. Under
// contention yield rather than burn the shared core. Check held().
class active_lock {
public:
    explicit active_lock(active_entry& a, uint64_t limit_ns = active_lock_limit_ns) noexcept : _a(a) {
        uint64_t deadline = 0;
        for (uint32_t spins = 0;;) {
            if (!_a.lock.exchange(1, std::memory_order_acquire)) {
                _held = true;
                return;
            }
            while (_a.lock.load(std::memory_order_relaxed)) {
                if (++spins < 64) {
                    cpu_relax();
                    continue;
                }
                sched_yield();
                if (spins % 64) continue;
                const uint64_t t = uint64_t(mono_ns());
                if (!deadline) deadline = t + limit_ns;
                else if (t > deadline) return; // not held
            }
        }
    }
    ~active_lock() {
        if (_held) _a.lock.store(0, std::memory_order_release);
    }
    bool held() const noexcept { return _held; }
    active_lock(const active_lock&) = delete;
    active_lock& operator=(const active_lock&) = delete;

private:
    active_entry& _a;
    bool _held = false;
};

// A lock word that stays set is a broken or hostile writer of the table:
// say so (once per process, the rest are counted by the callers' status).
void log_stuck_lock(domid_t granter, gref_t ref, const char* what) noexcept {
    static std::atomic<bool> said{false};
    if (!said.exchange(true, std::memory_order_relaxed))
        ZC_LOG(warn, tag, "d%u gref %u: active entry lock held too long, %s (further ones not logged)",
               unsigned(granter), unsigned(ref), what);
}

// Xen: unlock_out_clear in map_grant_ref/acquire_grant_for_copy, and
// release_grant_for_copy / unmap_common_complete: GTF_writing goes with the
// last writable pin, GTF_reading with the last pin of any kind.
void clear_unpinned(grant_entry_v1_t& e, const active_entry& act, bool readonly) noexcept {
    uint16_t clear = 0;
    if (!readonly && act.writers == 0) clear |= GTF_writing;
    if (act.readers == 0 && act.writers == 0) clear |= GTF_reading;
    if (clear) clear_flags(e, clear);
}

// Is there a page behind gfn `f` of `v`: its base memory, or a populated
// part of a region (layout.hpp, "memory regions").
bool populated(const domain_view& v, uint32_t f) noexcept {
    if (f < v.mem_pages) return true;
    if (!v.regions) return false;
    const uint32_t index = (f - v.mem_pages) / region_max_pages;
    return index < region_slots &&
           (f - v.mem_pages) % region_max_pages < v.regions[index].pages.load(std::memory_order_acquire);
}

// Pin grant `ref` of `v` for domain `ldom`: Xen map_grant_ref (mapflag) and
// acquire_grant_for_copy (!mapflag), v1 full-page grants only. On success
// *frame is the granter's frame (bounds-checked against its memory).
int16_t acquire(const domain_view& v, gref_t ref, domid_t ldom, bool readonly, bool mapflag,
                uint32_t* frame) noexcept {
    if (ref >= v.nr_grefs) return GNTST_bad_gntref;
    active_entry& act = v.active[ref];
    grant_entry_v1_t& e = v.gnttab[ref];
    active_lock guard(act);
    if (!guard.held()) {
        log_stuck_lock(v.dom, ref, "operation failed");
        return GNTST_general_error;
    }

    // The active table is shared with every other mapper, so its counts are
    // not trusted further than "which domain pins, and is it about to wrap".
    const bool pinned = act.readers != 0 || act.writers != 0;
    if (pinned && (act.pinned_by != ldom || act.readers >= max_pins || act.writers >= max_pins))
        return GNTST_general_error;

    if (!pinned || (!readonly && act.writers == 0)) {
        const int16_t st = set_status_v1(e, pinned, readonly, mapflag, ldom);
        if (st != GNTST_okay) return st;
    }

    // Xen get_paged_frame(): a gfn outside the granter's memory is
    // GNTST_bad_page. (Xen reads the frame once, at the first pin, into
    // act->mfn; active_entry has no room for it, so it is re-read and
    // re-checked here: a granter that rewrites it can only point us at
    // another page of its own memory.)
    const uint32_t f = __atomic_load_n(&e.frame, __ATOMIC_RELAXED);
    if (!populated(v, f)) {
        clear_unpinned(e, act, readonly);
        return GNTST_bad_page;
    }
    if (!pinned) act.pinned_by = ldom;
    if (readonly)
        ++act.readers;
    else
        ++act.writers;
    *frame = f;
    return GNTST_okay;
}

// Undo acquire(): Xen release_grant_for_copy / unmap_common_complete.
void release(const domain_view& v, gref_t ref, bool readonly) noexcept {
    if (ref >= v.nr_grefs) return;
    active_entry& act = v.active[ref];
    active_lock guard(act);
    if (!guard.held()) {
        // The pin stays counted: the entry keeps GTF_reading/GTF_writing and
        // its granter cannot end access, which harms only that granter.
        log_stuck_lock(v.dom, ref, "pin not released");
        return;
    }
    // Saturate: another (buggy) mapper process may have scribbled the counts.
    uint32_t& n = readonly ? act.readers : act.writers;
    if (n) --n;
    clear_unpinned(v.gnttab[ref], act, readonly);
}

struct atomic_counters {
    std::atomic<uint64_t> copy_batches{0}, copy_segments{0}, copy_bytes{0}, copy_errors{0};
    std::atomic<uint64_t> maps{0}, unmaps{0}, shares{0}, unshares{0};

    static void add(std::atomic<uint64_t>& c, uint64_t n) noexcept {
        c.fetch_add(n, std::memory_order_relaxed);
    }
    op_counters snapshot() const noexcept {
        op_counters o;
        o.copy_batches = copy_batches.load(std::memory_order_relaxed);
        o.copy_segments = copy_segments.load(std::memory_order_relaxed);
        o.copy_bytes = copy_bytes.load(std::memory_order_relaxed);
        o.copy_errors = copy_errors.load(std::memory_order_relaxed);
        o.maps = maps.load(std::memory_order_relaxed);
        o.unmaps = unmaps.load(std::memory_order_relaxed);
        o.shares = shares.load(std::memory_order_relaxed);
        o.unshares = unshares.load(std::memory_order_relaxed);
        return o;
    }
};

// ---- granter ---------------------------------------------------------------------

class emu_gntshr final : public gntshr {
public:
    emu_gntshr(client& c, frame_allocator& fa) noexcept : _c(c), _fa(fa) {}

    ~emu_gntshr() override {
        std::lock_guard g(_lock);
        for (auto& [addr, rec] : _live) {
            if (int rc = end_also_locked(rec); (rc == 0 || rc == -EINVAL) && end_all(rec) == 0) {
                release_memory(rec);
            } else {
                // Freeing now would hand a page the peer still uses to the
                // next share; leak it instead (gntalloc defers the same way).
                ZC_LOG(warn, tag, "gntshr closed while %u page(s) to d%u are in use: leaked",
                       rec.count, rec.peer);
            }
        }
    }

    result<shared_pages> share(domid_t peer, uint32_t count, bool writable) noexcept override {
        const domain_view& self = _c.self_view();
        if (count == 0 || peer == self.dom || peer >= DOMID_FIRST_RESERVED) return err(-EINVAL);

        shared_pages p;
        p.refs.resize(count);
        // Refs first: a full grant table must report -ENOSPC without
        // touching (zeroing) any memory.
        if (int rc = _fa.alloc_refs(count, p.refs.data()); rc < 0) return err(rc);
        auto first = _fa.alloc_frames(count);
        if (!first) {
            _fa.free_refs(p.refs.data(), count);
            return err(first.error());
        }
        uint8_t* addr = self.mem + size_t{*first} * page_size;
        // Pages come back from earlier shares: never leak old contents to a new peer.
        std::memset(addr, 0, size_t{count} * page_size);
        for (uint32_t i = 0; i < count; ++i)
            grant_entry(self.gnttab[p.refs[i]], peer, *first + i, !writable);

        p.addr = addr;
        p.count = count;
        p.peer = peer;
        p.writable = writable;
        {
            std::lock_guard g(_lock);
            _live.emplace(reinterpret_cast<uintptr_t>(addr),
                          record{*first, count, peer, writable, p.refs, -1, -1, domid_invalid, false, {}});
        }
        atomic_counters::add(_ctr.shares, count);
        return p;
    }

    int unshare(shared_pages& p) noexcept override {
        std::lock_guard g(_lock);
        auto it = _live.find(reinterpret_cast<uintptr_t>(p.addr));
        if (it == _live.end() || it->second.count != p.count || it->second.refs != p.refs)
            return -EINVAL;
        record& rec = it->second;
        if (int rc = end_also_locked(rec); rc < 0 && rc != -EINVAL) return rc;
        if (int rc = end_all(rec); rc < 0) {
            regrant_also(rec);
            return rc;
        }
        release_memory(rec);
        atomic_counters::add(_ctr.unshares, rec.count);
        _live.erase(it);
        p = shared_pages{};
        return 0;
    }

    op_counters counters() const noexcept override { return _ctr.snapshot(); }

    // The pages in a memory region of their own (layout.hpp, "memory
    // regions"): a memfd that holds exactly them, which export_fd hands on.
    result<shared_pages> share_exportable(domid_t peer, uint32_t count, bool writable) noexcept override {
        const domain_view& self = _c.self_view();
        if (count == 0 || count > region_max_pages || peer == self.dom || peer >= DOMID_FIRST_RESERVED)
            return err(-EINVAL);
        shared_pages p;
        p.refs.resize(count);
        if (int rc = _fa.alloc_refs(count, p.refs.data()); rc < 0) return err(rc);
        auto reg = _c.region_new(count); // a fresh memfd: zeroed
        if (!reg) {
            _fa.free_refs(p.refs.data(), count);
            return err(reg.error() == -ENOSPC ? -ENOSPC : -ENOMEM);
        }
        for (uint32_t i = 0; i < count; ++i)
            grant_entry(self.gnttab[p.refs[i]], peer, reg->first + i, !writable);
        p.addr = self.mem + size_t{reg->first} * page_size;
        p.count = count;
        p.peer = peer;
        p.writable = writable;
        {
            std::lock_guard g(_lock);
            _live.emplace(reinterpret_cast<uintptr_t>(p.addr),
                          record{reg->first, count, peer, writable, p.refs, int32_t(reg->index), reg->fd, domid_invalid, false, {}});
        }
        atomic_counters::add(_ctr.shares, count);
        return p;
    }

    // A new fd of the share's region memfd, whose bytes are exactly the
    // pages of the share; it is sealed against shrink, grow and new seals
    // (the broker sealed it). Shares made with share() have no fd of their
    // own: -EINVAL.
    result<exported_fd> export_fd(const shared_pages& p) noexcept override {
        std::lock_guard g(_lock);
        auto it = _live.find(reinterpret_cast<uintptr_t>(p.addr));
        if (it == _live.end() || it->second.count != p.count || it->second.region < 0) return err(-EINVAL);
        int fd = ::fcntl(it->second.fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) return err(-errno);
        return exported_fd{fd, 0};
    }

    // The region's pages granted to a second domain too (hv.hpp): the
    // broker lends the region to that domain only once every page is
    // granted to it (foreign.hpp), which these grants make so.
    result<std::vector<gref_t>> grant_also(const shared_pages& p, domid_t peer, bool writable) noexcept override {
        std::lock_guard g(_lock);
        auto it = _live.find(reinterpret_cast<uintptr_t>(p.addr));
        if (it == _live.end() || it->second.count != p.count || it->second.region < 0) return err(-EINVAL);
        record& rec = it->second;
        if (peer == _c.self_view().dom || peer >= DOMID_FIRST_RESERVED || peer == rec.peer ||
            !rec.also_refs.empty())
            return err(-EINVAL);
        std::vector<gref_t> refs(rec.count);
        if (int rc = _fa.alloc_refs(rec.count, refs.data()); rc < 0) return err(rc);
        rec.also = peer;
        rec.also_writable = writable;
        rec.also_refs = refs;
        regrant_also(rec);
        atomic_counters::add(_ctr.shares, rec.count);
        return refs;
    }

    int end_also(const shared_pages& p) noexcept override {
        std::lock_guard g(_lock);
        auto it = _live.find(reinterpret_cast<uintptr_t>(p.addr));
        if (it == _live.end() || it->second.count != p.count) return -EINVAL;
        return end_also_locked(it->second);
    }

private:
    struct record {
        uint32_t first;
        uint32_t count;
        domid_t peer;
        bool writable;
        std::vector<gref_t> refs;
        int32_t region = -1; // share_exportable: its region, whose memfd is fd (the client's)
        int fd = -1;
        // grant_also: the second domain and its grants (empty: none).
        domid_t also = domid_invalid;
        bool also_writable = false;
        std::vector<gref_t> also_refs;
    };

    void regrant_also(const record& rec) noexcept {
        grant_entry_v1_t* tab = _c.self_view().gnttab;
        for (uint32_t i = 0; i < rec.also_refs.size(); ++i)
            grant_entry(tab[rec.also_refs[i]], rec.also, rec.first + i, !rec.also_writable);
    }

    // _lock held. All or nothing, as end_all.
    int end_also_locked(record& rec) noexcept {
        if (rec.also_refs.empty()) return -EINVAL;
        grant_entry_v1_t* tab = _c.self_view().gnttab;
        for (uint32_t i = 0; i < rec.also_refs.size(); ++i) {
            if (end_access(tab[rec.also_refs[i]])) continue;
            for (uint32_t j = 0; j < i; ++j)
                grant_entry(tab[rec.also_refs[j]], rec.also, rec.first + j, !rec.also_writable);
            return -EBUSY;
        }
        for (gref_t r : rec.also_refs) {
            __atomic_store_n(&tab[r].domid, domid_t{0}, __ATOMIC_RELAXED);
            __atomic_store_n(&tab[r].frame, uint32_t{0}, __ATOMIC_RELAXED);
        }
        _fa.free_refs(rec.also_refs.data(), uint32_t(rec.also_refs.size()));
        atomic_counters::add(_ctr.unshares, rec.also_refs.size());
        rec.also_refs.clear();
        rec.also = domid_invalid;
        return 0;
    }

    // All or nothing: if one page is still mapped or in a copy, re-grant the
    // ones already ended. Between the two a map of those pages fails with
    // GNTST_general_error, as it would on Xen during a revoke-and-regrant.
    int end_all(const record& rec) noexcept {
        grant_entry_v1_t* tab = _c.self_view().gnttab;
        for (uint32_t i = 0; i < rec.count; ++i) {
            if (end_access(tab[rec.refs[i]])) continue;
            for (uint32_t j = 0; j < i; ++j)
                grant_entry(tab[rec.refs[j]], rec.peer, rec.first + j, !rec.writable);
            return -EBUSY;
        }
        return 0;
    }

    void release_memory(const record& rec) noexcept {
        grant_entry_v1_t* tab = _c.self_view().gnttab;
        for (gref_t r : rec.refs) {
            // Flags are already 0 (GTF_invalid); clear the rest for hygiene.
            __atomic_store_n(&tab[r].domid, domid_t{0}, __ATOMIC_RELAXED);
            __atomic_store_n(&tab[r].frame, uint32_t{0}, __ATOMIC_RELAXED);
        }
        _fa.free_refs(rec.refs.data(), rec.count);
        if (rec.region >= 0) (void)_c.region_free(uint32_t(rec.region));
        else _fa.free_frames(rec.first, rec.count);
    }

    client& _c;
    frame_allocator& _fa;
    std::mutex _lock; // protects _live
    std::unordered_map<uintptr_t, record> _live; // addr -> live share
    atomic_counters _ctr;
};

// ---- mapper and copier ----------------------------------------------------------

class emu_gnttab final : public gnttab {
public:
    explicit emu_gnttab(client& c) noexcept : _c(c), _self(c.self()) {}

    ~emu_gnttab() override {
        // Like closing gntdev: whatever the user did not unmap is unmapped,
        // so that no pin outlives the handle.
        std::lock_guard g(_maps_lock);
        for (auto& [addr, rec] : _maps) {
            ::munmap(reinterpret_cast<void*>(addr), size_t{rec.count} * page_size);
            for (uint32_t i = 0; i < rec.count; ++i) unpin(rec.pins[i], !rec.writable);
        }
    }

    result<mapping> map(uint32_t count, const domid_t* doms, const gref_t* refs, bool writable,
                        int16_t* status) noexcept override;
    int unmap(mapping& m) noexcept override;
    int copy(copy_segment* segs, uint32_t count) noexcept override;
    op_counters counters() const noexcept override { return _ctr.snapshot(); }

private:
    // A pinned grant: of a domain mapped here (v, held: client::hold;
    // ourselves, or any domain when privileged), or pinned by the broker for us (foreign: an
    // unprivileged domain's pin on another's grant, foreign.hpp), whose
    // page is at `off` in `fd` until it is mapped.
    struct pin {
        const domain_view* v = nullptr; // null and !foreign: not pinned
        gref_t ref = 0;
        uint32_t frame = 0;
        bool foreign = false;
        domid_t dom = 0;
        uint32_t gen = 0;
        int fd = -1;
        uint64_t off = 0;
    };
    struct map_record {
        uint32_t count;
        bool writable;
        std::unique_ptr<pin[]> pins;
    };
    // A grant held across consecutive segments of one batch, as Xen's
    // gnttab_copy_buf is (gnttab_copy_buf_valid).
    struct claim {
        const domain_view* v = nullptr;
        gref_t ref = 0;
        uint8_t* page = nullptr; // foreign: a mapping of the page, ours to unmap
        bool foreign = false;
        domid_t dom = 0;
        uint32_t gen = 0;
    };

    const domain_view* lookup(domid_t d, int16_t* st) noexcept;
    int16_t pin_foreign(domid_t d, gref_t ref, bool readonly, bool mapflag, pin& out) noexcept;
    void unpin(pin& p, bool readonly) noexcept;
    int16_t claim_gref(claim& c, const domain_view* v, domid_t d, gref_t ref, bool readonly) noexcept;
    void drop(claim& c, bool readonly) noexcept {
        if (c.v) {
            release(*c.v, c.ref, readonly);
        } else if (c.foreign) {
            ::munmap(c.page, page_size); // before the pin goes, as unmap does
            (void)_c.grant_unpin(c.dom, c.gen, c.ref, readonly);
        } else {
            return;
        }
        c = claim{};
    }
    int16_t copy_one(copy_segment& s, claim& src, claim& dst) noexcept;

    client& _c;
    const domid_t _self;
    // Set once the broker refused us another domain's memory: we are not
    // privileged (that never changes), so other domains' grants are pinned
    // through the broker from then on.
    std::atomic<bool> _unprivileged{false};
    std::mutex _maps_lock; // protects _maps
    std::unordered_map<uintptr_t, map_record> _maps; // addr -> live mapping
    atomic_counters _ctr;
};

// The view of granter `d`, or nullptr with *st = GNTST_bad_domain (no such
// live domain) or GNTST_permission_denied (the broker gives an unprivileged
// domain no other domain's memory or tables, broker.hpp "Who gets what":
// its grants are pinned through the broker, pin_foreign).
const domain_view* emu_gnttab::lookup(domid_t d, int16_t* st) noexcept {
    *st = GNTST_bad_domain;
    if (d >= max_domains) return nullptr;
    const registry_slot& slot = _c.registry()[d];
    // Xen rcu_lock_domain_by_id(): a dying domain takes no new maps or copies.
    if (slot.state.load(std::memory_order_acquire) != dom_alive) return nullptr;
    if (d == _self) return &_c.self_view();
    if (const domain_view* v = _c.cached_view(d, slot.generation.load(std::memory_order_acquire))) return v;
    if (_unprivileged.load(std::memory_order_relaxed)) {
        *st = GNTST_permission_denied;
        return nullptr;
    }
    // First use of the domain, or a new domain behind the domid. Both
    // views stay valid for the caller's read section (client.hpp,
    // "Lifetime of the views").
    auto r = _c.view(d);
    if (!r) {
        if (r.error() == -EPERM) {
            *st = GNTST_permission_denied;
            _unprivileged.store(true, std::memory_order_relaxed);
        }
        return nullptr;
    }
    return r.value();
}

result<mapping> emu_gnttab::map(uint32_t count, const domid_t* doms, const gref_t* refs,
                                bool writable, int16_t* status) noexcept {
    if (count == 0 || !doms || !refs) return err(-EINVAL);
    std::unique_ptr<pin[]> pins(new (std::nothrow) pin[count]);
    if (!pins) return err(-ENOMEM);
    client::read_section rs(_c); // the views found below, until each pin holds its own

    // Xen gnttab_map_grant_ref: every op is validated and gets its own
    // status, whatever the others do.
    bool ok = true;
    for (uint32_t i = 0; i < count; ++i) {
        // rcu_lock_domain_by_id(), unlike copy's _by_any_id, knows no DOMID_SELF.
        int16_t st = GNTST_bad_domain;
        const domain_view* v = lookup(doms[i], &st);
        uint32_t frame = 0;
        if (v) {
            st = acquire(*v, refs[i], _self, !writable, true, &frame);
            if (st == GNTST_okay) {
                pins[i] = pin{v, refs[i], frame};
                _c.hold(v); // for as long as the pin: unpin() lets go
            }
            if (st == GNTST_okay && _c.region_sync(*v, frame) < 0) st = GNTST_general_error; // pinned: released below
        } else if (st == GNTST_permission_denied) {
            st = pin_foreign(doms[i], refs[i], !writable, true, pins[i]);
        }
        if (status) status[i] = st;
        ok = ok && st == GNTST_okay;
    }

    int rc = -EINVAL;
    void* area = MAP_FAILED;
    if (ok) {
        // Reserve the range, then place the granter pages into it, one mmap
        // per run of consecutive frames of one domain.
        const size_t bytes = size_t{count} * page_size;
        area = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (area == MAP_FAILED) {
            ok = false;
            rc = -ENOMEM;
        }
        const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
        for (uint32_t i = 0; ok && i < count;) {
            if (pins[i].foreign) {
                // One page of the memfd the broker gave (read-only for a
                // read-only pin: PROT_WRITE would fail).
                void* at = static_cast<uint8_t*>(area) + size_t{i} * page_size;
                void* got = ::mmap(at, page_size, prot, MAP_SHARED | MAP_FIXED, pins[i].fd, off_t(pins[i].off));
                ::close(pins[i].fd);
                pins[i].fd = -1;
                if (got == MAP_FAILED) {
                    ZC_LOG(warn, tag, "mmap of d%u gref %u: %s", unsigned(pins[i].dom), unsigned(pins[i].ref),
                           std::strerror(errno));
                    if (status) status[i] = GNTST_general_error;
                    ok = false;
                    rc = -ENOMEM;
                }
                ++i;
                continue;
            }
            uint32_t n = 1;
            // A run stays within one memfd: the base memory or one region.
            const domain_view& v = *pins[i].v;
            auto backing = [&v](uint32_t f) {
                return f < v.mem_pages ? ~0u : (f - v.mem_pages) / region_max_pages;
            };
            while (i + n < count && !pins[i + n].foreign && pins[i + n].v == pins[i].v &&
                   pins[i + n].frame == pins[i].frame + n && backing(pins[i + n].frame) == backing(pins[i].frame))
                ++n;
            void* at = static_cast<uint8_t*>(area) + size_t{i} * page_size;
            uint64_t off = 0;
            const int fd = _c.frame_fd(v, pins[i].frame, &off);
            void* got = fd < 0 ? MAP_FAILED
                               : ::mmap(at, size_t{n} * page_size, prot, MAP_SHARED | MAP_FIXED, fd, off_t(off));
            if (fd >= 0 && fd != v.mem_fd) ::close(fd);
            if (got == MAP_FAILED) {
                // Xen: create_grant_host_mapping() failing is general_error.
                ZC_LOG(warn, tag, "mmap of d%u frame %u (%u pages): %s", pins[i].v->dom,
                       pins[i].frame, n, std::strerror(errno));
                if (status)
                    for (uint32_t j = i; j < i + n; ++j) status[j] = GNTST_general_error;
                ok = false;
                rc = -ENOMEM;
            }
            i += n;
        }
    }

    if (!ok) {
        // gntdev: a batch that fails anywhere leaves nothing mapped or pinned.
        if (area != MAP_FAILED) ::munmap(area, size_t{count} * page_size);
        for (uint32_t i = 0; i < count; ++i) unpin(pins[i], !writable);
        return err(rc);
    }

    {
        std::lock_guard g(_maps_lock);
        _maps.emplace(reinterpret_cast<uintptr_t>(area), map_record{count, writable, std::move(pins)});
    }
    atomic_counters::add(_ctr.maps, count);
    return mapping{area, count, writable};
}

int emu_gnttab::unmap(mapping& m) noexcept {
    std::unique_lock g(_maps_lock);
    auto it = _maps.find(reinterpret_cast<uintptr_t>(m.addr));
    if (it == _maps.end() || it->second.count != m.count) return -EINVAL;
    map_record rec = std::move(it->second);
    _maps.erase(it);
    g.unlock();

    // Unmap before unpinning: once the pins go the granter may end access
    // and reuse the frames, and we must not be able to touch them then.
    ::munmap(m.addr, size_t{rec.count} * page_size);
    for (uint32_t i = 0; i < rec.count; ++i) unpin(rec.pins[i], !rec.writable);
    atomic_counters::add(_ctr.unmaps, rec.count);
    m = mapping{};
    return 0;
}

// Another domain's grant, validated and pinned by the broker (foreign.hpp).
int16_t emu_gnttab::pin_foreign(domid_t d, gref_t ref, bool readonly, bool mapflag, pin& out) noexcept {
    const client::foreign_page fp = _c.grant_pin(d, ref, readonly, mapflag);
    if (fp.status == GNTST_okay) out = pin{nullptr, ref, 0, true, d, fp.gen, fp.fd, fp.offset};
    return fp.status;
}

// Undo a pin of either kind (the caller has unmapped its page).
void emu_gnttab::unpin(pin& p, bool readonly) noexcept {
    if (p.v) {
        release(*p.v, p.ref, readonly);
        _c.unhold(p.v);
    } else if (p.foreign) {
        if (p.fd >= 0) ::close(p.fd);
        (void)_c.grant_unpin(p.dom, p.gen, p.ref, readonly);
    }
    p = pin{};
}

// Xen gnttab_copy_claim_buf for a gref side; keeps the claim when the
// segment names the same grant as the previous one. `v` null: domain `d`'s
// grant is pinned through the broker and its page mapped here until the
// claim is dropped.
int16_t emu_gnttab::claim_gref(claim& c, const domain_view* v, domid_t d, gref_t ref, bool readonly) noexcept {
    if (c.ref == ref && (v ? c.v == v : c.foreign && c.dom == d)) return GNTST_okay;
    drop(c, readonly);
    if (!v) {
        pin p;
        const int16_t st = pin_foreign(d, ref, readonly, false, p);
        if (st != GNTST_okay) return st;
        void* page = ::mmap(nullptr, page_size, PROT_READ | (readonly ? 0 : PROT_WRITE), MAP_SHARED, p.fd,
                            off_t(p.off));
        ::close(p.fd);
        if (page == MAP_FAILED) {
            (void)_c.grant_unpin(d, p.gen, ref, readonly);
            return GNTST_general_error;
        }
        c = claim{nullptr, ref, static_cast<uint8_t*>(page), true, d, p.gen};
        return GNTST_okay;
    }
    uint32_t frame = 0;
    const int16_t st = acquire(*v, ref, _self, readonly, false, &frame);
    if (st != GNTST_okay) return st;
    if (_c.region_sync(*v, frame) < 0) {
        release(*v, ref, readonly);
        return GNTST_general_error;
    }
    c = claim{v, ref, v->mem + size_t{frame} * page_size, false, v->dom, 0};
    return GNTST_okay;
}

int16_t emu_gnttab::copy_one(copy_segment& s, claim& src, claim& dst) noexcept {
    constexpr uint16_t known = GNTCOPY_source_gref | GNTCOPY_dest_gref;
    const uint16_t f = s.flags;
    const bool sg = f & GNTCOPY_source_gref, dg = f & GNTCOPY_dest_gref;
    // Linux gntdev_grant_copy_seg(): local->local is refused, and a gref side
    // may not cross its page (the local side may; gntdev splits it).
    if ((f & ~known) || !(f & known)) return GNTST_bad_copy_arg;
    if (sg && size_t{s.source.foreign.offset} + s.len > page_size) return GNTST_bad_copy_arg;
    if (dg && size_t{s.dest.foreign.offset} + s.len > page_size) return GNTST_bad_copy_arg;
    // A null local side, whatever the length: what the real port answers
    // (xen::precheck_copy keeps it away from gntdev, which would fail the
    // whole ioctl with -EFAULT). Seen in the Xen lab; this said
    // GNTST_bad_virt_addr, and GNTST_okay for an empty segment, before.
    if ((!sg && !s.source.virt) || (!dg && !s.dest.virt)) return GNTST_bad_copy_arg;
    // gntdev issues no GNTTABOP_copy for an empty segment: nothing is checked.
    if (s.len == 0) return GNTST_okay;

    // Xen gnttab_copy_lock_domains(): both domains before either grant;
    // rcu_lock_domain_by_any_id() accepts DOMID_SELF.
    // A domain we may not map (permission_denied) is pinned through the
    // broker in claim_gref.
    const domain_view *sv = nullptr, *dv = nullptr;
    const domid_t sd = s.source.foreign.domid == DOMID_SELF ? _self : s.source.foreign.domid;
    const domid_t dd = s.dest.foreign.domid == DOMID_SELF ? _self : s.dest.foreign.domid;
    int16_t lst = GNTST_bad_domain;
    if (sg && !(sv = lookup(sd, &lst)) && lst != GNTST_permission_denied) return lst;
    if (dg && !(dv = lookup(dd, &lst)) && lst != GNTST_permission_denied) return lst;

    const uint8_t* from;
    if (sg) {
        if (int16_t st = claim_gref(src, sv, sd, s.source.foreign.ref, true); st)
            return st;
        from = src.page + s.source.foreign.offset;
    } else {
        drop(src, true);
        from = static_cast<const uint8_t*>(s.source.virt);
    }
    uint8_t* to;
    if (dg) {
        if (int16_t st = claim_gref(dst, dv, dd, s.dest.foreign.ref, false); st)
            return st;
        to = dst.page + s.dest.foreign.offset;
    } else {
        drop(dst, false);
        to = static_cast<uint8_t*>(s.dest.virt);
    }

    if (auto hook = g_copy_hook.load(std::memory_order_acquire); __builtin_expect(hook != nullptr, 0))
        hook(g_copy_hook_arg.load(std::memory_order_relaxed));
    // memmove: the same grant may be both source and destination.
    std::memmove(to, from, s.len);
    return GNTST_okay;
}

// Xen gnttab_copy(): one status per segment; a failed segment releases both
// held grants, the rest are released at the end of the batch.
int emu_gnttab::copy(copy_segment* segs, uint32_t count) noexcept {
    if (count == 0) return 0;
    if (!segs) return -EINVAL;
    client::read_section rs(_c); // the views of the batch's grants
    claim src, dst;
    uint64_t bytes = 0, errors = 0;
    for (uint32_t i = 0; i < count; ++i) {
        copy_segment& s = segs[i];
        const int16_t st = copy_one(s, src, dst);
        s.status = st;
        if (st == GNTST_okay) {
            bytes += s.len;
        } else {
            ++errors;
            drop(src, true);
            drop(dst, false);
        }
    }
    drop(src, true);
    drop(dst, false);
    atomic_counters::add(_ctr.copy_batches, 1);
    atomic_counters::add(_ctr.copy_segments, count);
    atomic_counters::add(_ctr.copy_bytes, bytes);
    atomic_counters::add(_ctr.copy_errors, errors);
    return 0;
}

} // namespace

// ---- frame_allocator -----------------------------------------------------------

frame_allocator::frame_allocator(uint32_t mem_pages, uint32_t nr_grefs)
    : _mem_pages(mem_pages), _used((mem_pages + 63) / 64, 0), _free_frames(mem_pages) {
    // Bits past the end count as used, so the scan needs no bounds special case.
    if (mem_pages % 64) _used.back() = ~uint64_t{0} << (mem_pages % 64);
    if (nr_grefs > reserved_grefs) {
        _free_refs.reserve(nr_grefs - reserved_grefs);
        for (uint32_t r = nr_grefs; r-- > reserved_grefs;) _free_refs.push_back(r);
    }
}

result<uint32_t> frame_allocator::alloc_frames(uint32_t count) noexcept {
    if (count == 0) return err(-EINVAL);
    std::lock_guard g(_lock);
    if (count > _free_frames) return err(-ENOMEM);
    const uint32_t limit = static_cast<uint32_t>(_used.size()) * 64;
    uint32_t start = 0, run = 0;
    for (uint32_t f = 0; f < limit && run < count;) {
        const uint64_t w = _used[f / 64];
        if (f % 64 == 0 && (w == 0 || w == ~uint64_t{0})) { // whole word free or used
            if (w == 0) {
                if (run == 0) start = f;
                run += 64;
            } else {
                run = 0;
            }
            f += 64;
            continue;
        }
        if ((w >> (f % 64)) & 1) {
            run = 0;
        } else {
            if (run == 0) start = f;
            ++run;
        }
        ++f;
    }
    if (run < count) return err(-ENOMEM);
    for (uint32_t f = start; f < start + count; ++f) _used[f / 64] |= uint64_t{1} << (f % 64);
    _free_frames -= count;
    return start;
}

void frame_allocator::free_frames(uint32_t first, uint32_t count) noexcept {
    std::lock_guard g(_lock);
    ZC_CHECK(first <= _mem_pages && count <= _mem_pages - first);
    for (uint32_t f = first; f < first + count; ++f) {
        const uint64_t bit = uint64_t{1} << (f % 64);
        ZC_CHECK(_used[f / 64] & bit); // double free of our own frames
        _used[f / 64] &= ~bit;
    }
    _free_frames += count;
}

int frame_allocator::alloc_refs(uint32_t count, gref_t* out) noexcept {
    std::lock_guard g(_lock);
    if (count > _free_refs.size()) return -ENOSPC;
    for (uint32_t i = 0; i < count; ++i) {
        out[i] = _free_refs.back();
        _free_refs.pop_back();
    }
    return 0;
}

void frame_allocator::free_refs(const gref_t* refs, uint32_t count) noexcept {
    std::lock_guard g(_lock);
    // reserve()d to capacity at construction: push_back never allocates.
    for (uint32_t i = count; i-- > 0;) _free_refs.push_back(refs[i]);
}

uint32_t frame_allocator::free_frames_count() const noexcept {
    std::lock_guard g(_lock);
    return _free_frames;
}

uint32_t frame_allocator::free_refs_count() const noexcept {
    std::lock_guard g(_lock);
    return static_cast<uint32_t>(_free_refs.size());
}

// ---- factories and helpers --------------------------------------------------------

std::unique_ptr<frame_allocator> make_frame_allocator(client& c) {
    const domain_view& v = c.self_view();
    return std::unique_ptr<frame_allocator>(new (std::nothrow) frame_allocator(v.mem_pages, v.nr_grefs));
}

std::unique_ptr<gntshr> make_gntshr(client& c, frame_allocator& fa) {
    return std::unique_ptr<gntshr>(new (std::nothrow) emu_gntshr(c, fa));
}

std::unique_ptr<gnttab> make_gnttab(client& c) {
    std::unique_ptr<emu_gnttab> t(new (std::nothrow) emu_gnttab(c));
    return t;
}

uint32_t release_pins_of(const domain_view& granter, domid_t dead) noexcept {
    uint32_t released = 0;
    // The broker waits out one stuck entry per granter; after that whoever
    // holds the table's locks is not coming back, and every further wait is
    // short, so that a table full of stuck locks cannot stall the broker
    // for long.
    uint64_t limit = active_lock_limit_ns;
    for (uint32_t ref = 0; ref < granter.nr_grefs; ++ref) {
        active_entry& act = granter.active[ref];
        active_lock guard(act, limit);
        if (!guard.held()) {
            log_stuck_lock(granter.dom, ref, "dead mapper's pin not released");
            limit = 0;
            continue;
        }
        if ((act.readers == 0 && act.writers == 0) || act.pinned_by != dead) continue;
        act.readers = 0;
        act.writers = 0;
        clear_flags(granter.gnttab[ref], GTF_reading | GTF_writing);
        ++released;
    }
    return released;
}

int16_t pin_grant(const domain_view& granter, gref_t ref, domid_t ldom, bool readonly, bool mapflag,
                  uint32_t* frame) noexcept {
    return acquire(granter, ref, ldom, readonly, mapflag, frame);
}

void unpin_grant(const domain_view& granter, gref_t ref, bool readonly) noexcept { release(granter, ref, readonly); }

namespace test_hooks {
void set_copy_hook(copy_hook_fn fn, void* arg) noexcept {
    g_copy_hook_arg.store(arg, std::memory_order_relaxed);
    g_copy_hook.store(fn, std::memory_order_release);
}
} // namespace test_hooks

} // namespace zc::hv::emu
