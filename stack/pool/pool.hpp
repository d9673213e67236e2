// SPDX-License-Identifier: MIT
// A buffer pool shared with exactly one peer domain (docs/ARCHITECTURE.md,
// "Pools"): pages granted
// to that peer through the hypervisor port, carved into fixed-size buffers.
// A buffer whose bytes will end up in domain B comes from B's pool, so no
// page is ever visible to two guests.
//
// Memory is granted in chunks (one gntshr::share() call each). The pool
// starts with a few chunks, grows on demand or below the low watermark, up to
// a per-peer quota, and shrinks by ending the grants of idle chunks above the
// high watermark. Ending a grant fails with -EBUSY while the peer still maps
// or copies the page (Xen's gnttab_end_foreign_access_ref fails while the
// grant is in use: the unmap is asynchronous); the chunk then waits,
// still counted against the quotas, and is retried by maintain().
//
// Threading: alloc()/free() are lock-free on the fast path (a Treiber stack of
// 32-bit buffer indices with a 32-bit ABA tag in one 64-bit word). Growth,
// shrink, reclaim and close take the pool's mutex; an alloc that finds the
// free list empty takes it too (it may have to grow), so contention on an
// exhausted pool sleeps instead of spinning.
//
// The same class, created without a gntshr, is the bounce pool: plain local
// memory that nobody else can see, allocated once, never grown.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "common/result.hpp"
#include "hv/hv.hpp"
#include "pool/frame.hpp"

namespace zc::pool {

// Grant entries are a host-wide scarce resource: a peer that makes us grow
// without bound would exhaust our grant table and deny service to every other
// peer (docs/ARCHITECTURE.md, "Pools"). A granter owns one gntshr handle and a global budget of
// grant entries that every pool draws from, on top of its per-peer quota.
class granter {
public:
    // `shr` must outlive the granter.
    granter(hv::gntshr& shr, uint32_t max_grants) noexcept : _shr(shr), _limit(max_grants) {}

    // Take `count` grants from the budget and share `count` pages with
    // `peer`. Errors: -ENOSPC (budget exhausted), or what gntshr::share returns.
    result<hv::shared_pages> share(hv::domid_t peer, uint32_t count, bool writable) noexcept;
    // End the grants and give them back to the budget. -EBUSY: the peer still
    // maps or copies a page; nothing changed, retry later.
    int unshare(hv::shared_pages& p) noexcept;

    uint32_t used() const noexcept { return _used.load(std::memory_order_relaxed); }
    uint32_t limit() const noexcept { return _limit; }

private:
    hv::gntshr& _shr;
    // libxengntshr handles are not documented as thread-safe; pools of
    // different peers grow concurrently, so calls on _shr are serialized.
    std::mutex _shr_lock;
    const uint32_t _limit;
    std::atomic<uint32_t> _used{0};
};

struct pool_options {
    hv::domid_t peer = hv::domid_invalid; // ignored for a bounce pool
    uint32_t buf_size = 2048;      // power of two; granted pools: 256..4096 so
                                   // that a buffer never crosses a page (one
                                   // grant-copy segment per buffer); bounce
                                   // pools: up to 32768 (16-bit lengths)
    uint32_t chunk_pages = 8;      // pages granted per share() call
    uint32_t initial_chunks = 1;   // granted at create/reopen; shrink keeps these
    uint32_t max_pages = 256;      // per-peer quota: pages of usable chunks
    // Per-peer quota of grant entries not yet ended. Larger than max_pages
    // lets the pool replace chunks the peer still holds mapped, but not
    // without bound.
    uint32_t max_grants = 256;
    uint32_t low_watermark = 0;    // free buffers; maintain() grows below (0: half a chunk)
    uint32_t high_watermark = 0;   // free buffers; maintain() shrinks above (0: low + 2 chunks)
    bool writable = true;          // grant read-write (peer receives into buffers)
    bool grow_on_demand = true;    // alloc() on an empty free list grows inline
};

// Buffer handle: index in the pool and the generation of its chunk, so that a
// handle kept past its release is refused even after the chunk was ended and
// its index range granted again.
struct buffer {
    uint32_t index = 0;
    uint32_t cookie = 0;
};

// Where the peer sees a buffer.
struct grant_loc {
    hv::gref_t gref;
    uint16_t offset; // within the granted page
};

struct pool_counters {
    uint64_t allocs = 0;
    uint64_t frees = 0;
    uint64_t grows = 0;          // chunks granted
    uint64_t shrinks = 0;        // chunks whose grants were ended
    uint64_t exhausted = 0;      // alloc() answered -ENOBUFS
    uint64_t quota_hits = 0;     // growth refused by the per-peer quotas
    uint64_t budget_hits = 0;    // growth refused by the global grant budget
    uint64_t grow_errors = 0;    // share() failed for another reason
    uint64_t unshare_busy = 0;   // unshare() answered -EBUSY (peer still maps)
    uint64_t double_frees = 0;   // free() answered -EALREADY
    uint64_t bad_frees = 0;      // free() answered -EINVAL
    uint32_t chunks = 0;         // chunks holding memory (usable or draining)
    uint32_t pages = 0;          // pages of usable chunks
    uint32_t grants = 0;         // grant entries not yet ended
    uint32_t free_bufs = 0;      // free in usable chunks (a snapshot under concurrency)
    uint32_t in_use = 0;         // buffers allocated and not yet freed (allocs - frees)
};

class pool {
public:
    // Granted pool: `g` must outlive the pool. Bounce pool: g == nullptr;
    // initial_chunks * chunk_pages pages of local memory, allocated now.
    // Errors: -EINVAL (bad options), -ENOMEM. Failing to grant the initial
    // chunks is not an error: the pool starts empty (callers fall back).
    static result<std::unique_ptr<pool>> create(const pool_options& o, granter* g) noexcept;
    ~pool();
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;

    // Errors: -ENOBUFS (exhausted: free list empty and no growth possible:
    // quota, grant budget, grow_on_demand off, or a bounce pool),
    // -ESHUTDOWN (closed).
    result<buffer> alloc() noexcept;
    // Errors: -EINVAL (index not a buffer of this pool), -EALREADY (already
    // free, or the handle is from an earlier generation of its chunk). The
    // pool is left unchanged on error.
    int free(buffer b) noexcept;

    // Frame-level helpers. alloc_frame fills `f` as an empty local segment
    // with `headroom` bytes reserved in front (-EINVAL if >= buf_size).
    int alloc_frame(frame& f, uint16_t headroom = 0) noexcept;
    // Releases one local segment of this pool and clears it. Errors as free();
    // -EINVAL also when `f` is not a local segment of this pool.
    int release(frame& f) noexcept;

    // Buffer containing `p`. -EINVAL if `p` is not inside a buffer of this pool.
    result<buffer> lookup(const void* p) const noexcept;
    // Start of buffer `index`; only meaningful while the caller holds it.
    uint8_t* data(uint32_t index) const noexcept;
    uint8_t* data(const frame& f) const noexcept { return data(f.buf) + f.offset; }
    // Grant of buffer `index` as the peer sees it. -EINVAL for a bounce pool,
    // an index out of range or a chunk holding no grants.
    result<grant_loc> grant_of(uint32_t index) const noexcept;

    // Grant one more chunk. Errors: -ENOBUFS (quota), -ENOSPC (grant
    // budget), -ESHUTDOWN, -EINVAL (bounce pool), share() errors.
    int grow() noexcept;
    // Retire up to `n` idle chunks (no buffer in use), never below
    // initial_chunks, and try to end their grants. Returns chunks retired.
    int shrink(uint32_t n) noexcept;
    // Grow below the low watermark, shrink above the high one, retry ending
    // grants of retired chunks. Returns the number of chunks still waiting
    // for their grants to end.
    int maintain() noexcept;

    // Stop allocating, retire every chunk; grants end as buffers come back
    // and the peer unmaps (maintain()). Frames holding buffers stay valid
    // until released. Idempotent.
    void close() noexcept;
    // Open a closed pool again once drained. -EBUSY while some chunk still
    // holds grants; -EINVAL if not closed.
    int reopen() noexcept;
    bool closed() const noexcept { return _closed.load(std::memory_order_acquire); }
    // No chunk holds memory or grants.
    bool drained() const noexcept;

    hv::domid_t peer() const noexcept { return _opt.peer; }
    bool is_bounce() const noexcept { return _granter == nullptr; }
    uint32_t buf_size() const noexcept { return _opt.buf_size; }
    // Free buffers in usable chunks; O(buffers), for slow paths and tests.
    uint32_t free_count() const noexcept;
    const pool_options& options() const noexcept { return _opt; }
    pool_counters counters() const noexcept;

private:
    struct chunk;
    struct stats;
    pool() noexcept;

    chunk& chunk_of(uint32_t index) const noexcept;
    uint32_t pop() noexcept;
    void push(uint32_t index) noexcept;
    void push_chain(uint32_t first, uint32_t last) noexcept;
    void retire(uint32_t index, chunk& c) noexcept;
    int grow_locked() noexcept;
    void drain_retired_locked() noexcept;
    int reclaim_locked() noexcept;
    void retire_chunk_locked(chunk& c) noexcept;
    bool idle(uint32_t slot) const noexcept;

    pool_options _opt;
    granter* _granter = nullptr;
    uint32_t _bufs_per_chunk = 0;
    uint32_t _nr_slots = 0;        // chunk slots: enough for max_grants
    uint32_t _buf_shift = 0;       // log2(buf_size)
    std::unique_ptr<chunk[]> _chunks;
    // Per buffer: the next index on the free list, and its state (free, in
    // use, retired/absent). The state byte is what catches double frees.
    std::unique_ptr<std::atomic<uint32_t>[]> _next;
    std::unique_ptr<std::atomic<uint8_t>[]> _state;

    // Free-list head: low 32 bits index (nil = ~0u), high 32 bits a tag
    // bumped on every change so that a pop that read a stale `next` fails
    // its CAS (ABA).
    alignas(64) std::atomic<uint64_t> _head;

    // Protects growth, shrink, reclaim, close/reopen and the chunk slots'
    // non-atomic fields (`pages`, `local`). Never taken by free().
    alignas(64) mutable std::mutex _lock;
    std::atomic<bool> _closed{false};
    std::atomic<uint32_t> _pages{0};   // pages of usable chunks
    std::atomic<uint32_t> _grants{0};  // grant entries not yet ended
    std::unique_ptr<stats> _stats;
};

} // namespace zc::pool
