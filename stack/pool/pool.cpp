// SPDX-License-Identifier: MIT
#include "pool/pool.hpp"

#include <bit>
#include <cstdlib>
#include <cstring>

#include "common/check.hpp"
#include "common/log.hpp"

namespace zc::pool {

namespace {

constexpr uint32_t nil = ~0u;
// Domids from DOMID_FIRST_RESERVED up are not domains one can grant to.
constexpr hv::domid_t domid_first_reserved = 0x7FF0;

enum chunk_state : uint8_t {
    cs_empty = 0,    // no memory, no grants
    cs_active = 1,   // buffers may be handed out
    cs_draining = 2, // retired: buffers come back but are not reused; grants
                     // end once every buffer is back and the peer unmapped
};

// Per-buffer state byte. "In use" carries the chunk generation (mod 254) so
// that a release racing with the chunk being ended and granted again cannot
// free the new incarnation's buffer.
constexpr uint8_t bs_absent = 0; // retired, or chunk not present
constexpr uint8_t bs_free = 1;   // on the free list (or about to be)
constexpr uint8_t bs_used(uint32_t gen) noexcept { return uint8_t(2 + gen % 254); }

constexpr uint64_t make_head(uint32_t tag, uint32_t idx) noexcept { return (uint64_t(tag) << 32) | idx; }
constexpr uint32_t head_idx(uint64_t h) noexcept { return uint32_t(h); }
constexpr uint32_t head_tag(uint64_t h) noexcept { return uint32_t(h >> 32); }

log::ratelimit g_bad_free_log{10, 1};

} // namespace

// ---------------------------------------------------------------------------
result<hv::shared_pages> granter::share(hv::domid_t peer, uint32_t count, bool writable) noexcept {
    uint32_t used = _used.load(std::memory_order_relaxed);
    do {
        if (count > _limit || used > _limit - count) return err(-ENOSPC);
    } while (!_used.compare_exchange_weak(used, used + count, std::memory_order_relaxed));
    std::lock_guard g(_shr_lock);
    auto r = _shr.share(peer, count, writable);
    if (!r) _used.fetch_sub(count, std::memory_order_relaxed);
    return r;
}

int granter::unshare(hv::shared_pages& p) noexcept {
    uint32_t n = p.count;
    int r;
    {
        std::lock_guard g(_shr_lock);
        r = _shr.unshare(p);
    }
    if (r == 0) _used.fetch_sub(n, std::memory_order_relaxed);
    return r;
}

// ---------------------------------------------------------------------------
struct pool::chunk {
    std::atomic<uint8_t> state{cs_empty};
    std::atomic<uint32_t> gen{0};            // bumped each time the slot is filled
    std::atomic<uint8_t*> addr{nullptr};
    // Buffers back for good while draining. bufs_per_chunk - retired is the
    // chunk's refcount once retired: its grants end when it reaches zero.
    // (While active, the state bytes are the refcount; keeping a counter
    // too would cost two more atomic RMWs per alloc+free pair.)
    std::atomic<uint32_t> retired{0};
    hv::shared_pages pages;                  // granted pools; under _lock
    void* local = nullptr;                   // bounce pools; under _lock
};

struct pool::stats {
    std::atomic<uint64_t> allocs{0}, frees{0}, grows{0}, shrinks{0}, exhausted{0}, quota_hits{0},
        budget_hits{0}, grow_errors{0}, unshare_busy{0}, double_frees{0}, bad_frees{0};
};

static void bump(std::atomic<uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }

pool::pool() noexcept : _head(make_head(0, nil)), _stats(new (std::nothrow) stats()) {}

result<std::unique_ptr<pool>> pool::create(const pool_options& o, granter* g) noexcept {
    const bool bounce = g == nullptr;
    if (!std::has_single_bit(o.buf_size) || o.buf_size < 64 || o.buf_size > (bounce ? 32768u : hv::page_size))
        return err(-EINVAL);
    if (!std::has_single_bit(o.chunk_pages) || o.chunk_pages * hv::page_size < o.buf_size)
        return err(-EINVAL);
    if (!bounce && (o.peer >= domid_first_reserved)) return err(-EINVAL);
    if (bounce && o.initial_chunks == 0) return err(-EINVAL);

    uint32_t slots = bounce ? o.initial_chunks : std::max(o.max_pages, o.max_grants) / o.chunk_pages;
    uint32_t bpc = uint32_t(o.chunk_pages * hv::page_size / o.buf_size);
    if (slots == 0) slots = 1; // a zero quota still needs a valid (empty) slot array
    if (uint64_t(slots) * bpc >= (1u << 24) || o.initial_chunks > slots) return err(-EINVAL);

    std::unique_ptr<pool> p(new (std::nothrow) pool());
    if (!p || !p->_stats) return err(-ENOMEM);
    p->_opt = o;
    if (bounce) p->_opt.peer = hv::domid_invalid;
    p->_granter = g;
    p->_bufs_per_chunk = bpc;
    p->_nr_slots = slots;
    p->_buf_shift = uint32_t(std::countr_zero(o.buf_size));
    if (p->_opt.low_watermark == 0) p->_opt.low_watermark = std::max(1u, bpc / 2);
    if (p->_opt.high_watermark == 0) p->_opt.high_watermark = p->_opt.low_watermark + 2 * bpc;
    // Hysteresis: after shrinking one chunk above `high` we must still be
    // above `low`, or maintain() would oscillate.
    if (p->_opt.high_watermark < p->_opt.low_watermark + bpc)
        p->_opt.high_watermark = p->_opt.low_watermark + bpc;

    size_t nbufs = size_t(slots) * bpc;
    p->_chunks.reset(new (std::nothrow) chunk[slots]);
    p->_next.reset(new (std::nothrow) std::atomic<uint32_t>[nbufs]);
    p->_state.reset(new (std::nothrow) std::atomic<uint8_t>[nbufs]);
    if (!p->_chunks || !p->_next || !p->_state) return err(-ENOMEM);
    for (size_t i = 0; i < nbufs; ++i) {
        p->_next[i].store(nil, std::memory_order_relaxed);
        p->_state[i].store(bs_absent, std::memory_order_relaxed);
    }

    std::lock_guard l(p->_lock);
    for (uint32_t i = 0; i < o.initial_chunks; ++i) {
        int r = p->grow_locked();
        if (r == -ENOMEM && bounce) return err(-ENOMEM);
        if (r < 0) {
            ZC_LOG(warn, "pool", "dom%u: initial chunk %u not granted (%d); starting smaller",
                   unsigned(o.peer), i, r);
            break;
        }
    }
    return p;
}

pool::~pool() {
    close();
    std::lock_guard l(_lock);
    reclaim_locked();
    uint32_t left = 0;
    for (uint32_t s = 0; s < _nr_slots; ++s)
        if (_chunks[s].state.load(std::memory_order_relaxed) != cs_empty) ++left;
    if (left) {
        // Frames or the peer still hold these pages. Freeing them would hand
        // memory the peer can still map to someone else; leak instead.
        ZC_LOG(error, "pool", "dom%u: destroyed with %u chunks still referenced; leaking them",
               unsigned(_opt.peer), left);
    }
}

pool::chunk& pool::chunk_of(uint32_t index) const noexcept {
    ZC_DCHECK(index / _bufs_per_chunk < _nr_slots);
    return _chunks[index / _bufs_per_chunk];
}

// Treiber stack. Readers of a popped buffer's contents synchronize with the
// thread that pushed it: push CASes with release, pop loads with acquire.
uint32_t pool::pop() noexcept {
    uint64_t h = _head.load(std::memory_order_acquire);
    for (;;) {
        uint32_t idx = head_idx(h);
        if (idx == nil) return nil;
        // May read a stale `next` if idx was popped and pushed again since we
        // loaded h; the tag then differs and the CAS fails.
        uint32_t nxt = _next[idx].load(std::memory_order_relaxed);
        if (_head.compare_exchange_weak(h, make_head(head_tag(h) + 1, nxt), std::memory_order_acquire,
                                        std::memory_order_acquire))
            return idx;
    }
}

void pool::push(uint32_t index) noexcept { push_chain(index, index); }

void pool::push_chain(uint32_t first, uint32_t last) noexcept {
    uint64_t h = _head.load(std::memory_order_relaxed);
    do {
        _next[last].store(head_idx(h), std::memory_order_relaxed);
    } while (!_head.compare_exchange_weak(h, make_head(head_tag(h) + 1, first), std::memory_order_release,
                                          std::memory_order_relaxed));
}

// A buffer of a draining chunk came back: it is never reused. The release
// pairs with reclaim's acquire so that the unshare happens after our last
// touch of the buffer.
void pool::retire(uint32_t index, chunk& c) noexcept {
    _state[index].store(bs_absent, std::memory_order_relaxed);
    c.retired.fetch_add(1, std::memory_order_release);
}

result<buffer> pool::alloc() noexcept {
    for (;;) {
        uint32_t idx = pop();
        if (idx != nil) {
            chunk& c = chunk_of(idx);
            if (c.state.load(std::memory_order_acquire) != cs_active) {
                retire(idx, c);
                continue;
            }
            uint32_t gen = c.gen.load(std::memory_order_relaxed);
            _state[idx].store(bs_used(gen), std::memory_order_relaxed);
            bump(_stats->allocs);
            return buffer{idx, gen};
        }
        // Slow path: the free list is empty.
        if (closed()) return err(-ESHUTDOWN);
        // At quota nothing can grow: answer without the mutex, so that a
        // pool under pressure costs the fallback path as little as possible.
        const uint32_t cp = _opt.chunk_pages;
        if (is_bounce() || !_opt.grow_on_demand || _pages.load(std::memory_order_relaxed) + cp > _opt.max_pages ||
            _grants.load(std::memory_order_relaxed) + cp > _opt.max_grants) {
            if (!is_bounce() && _opt.grow_on_demand) bump(_stats->quota_hits);
            bump(_stats->exhausted);
            return err(-ENOBUFS);
        }
        std::lock_guard l(_lock);
        if (closed()) return err(-ESHUTDOWN);
        if (head_idx(_head.load(std::memory_order_acquire)) != nil) continue; // someone freed or grew
        if (grow_locked() < 0) {
            bump(_stats->exhausted);
            return err(-ENOBUFS);
        }
    }
}

int pool::free(buffer b) noexcept {
    if (b.index >= _nr_slots * _bufs_per_chunk) {
        bump(_stats->bad_frees);
        if (g_bad_free_log.allow())
            ZC_LOG(warn, "pool", "dom%u: free of index %u: not a buffer of this pool", unsigned(_opt.peer), b.index);
        return -EINVAL;
    }
    chunk& c = chunk_of(b.index);
    uint8_t expect = bs_used(b.cookie);
    if (!_state[b.index].compare_exchange_strong(expect, bs_free, std::memory_order_acq_rel)) {
        // Generation 0 is never handed out; a cookie from the future was
        // never handed out either.
        uint32_t gen = c.gen.load(std::memory_order_relaxed);
        if (b.cookie == 0 || b.cookie > gen) {
            bump(_stats->bad_frees);
            return -EINVAL;
        }
        bump(_stats->double_frees);
        if (g_bad_free_log.allow())
            ZC_LOG(warn, "pool", "dom%u: double free of buffer %u (gen %u)", unsigned(_opt.peer), b.index, b.cookie);
        return -EALREADY;
    }
    bump(_stats->frees);
    if (c.state.load(std::memory_order_acquire) != cs_active)
        retire(b.index, c);
    else
        push(b.index); // may race with the chunk being retired: the next pop or drain retires it
    return 0;
}

int pool::alloc_frame(frame& f, uint16_t headroom) noexcept {
    if (headroom >= _opt.buf_size) return -EINVAL;
    auto b = alloc();
    if (!b) return b.error();
    f = frame{};
    f.owner = this;
    f.buf = b->index;
    f.cookie = b->cookie;
    f.domid = _opt.peer;
    f.offset = headroom;
    f.kind = seg_kind::local;
    return 0;
}

int pool::release(frame& f) noexcept {
    if (f.kind != seg_kind::local || f.owner != this) return -EINVAL;
    int r = free(buffer{f.buf, f.cookie});
    if (r == 0) {
        frame* next = f.next;
        f = frame{};
        f.next = next;
    }
    return r;
}

result<buffer> pool::lookup(const void* p) const noexcept {
    auto a = reinterpret_cast<uintptr_t>(p);
    const size_t bytes = size_t(_opt.chunk_pages) * hv::page_size;
    for (uint32_t s = 0; s < _nr_slots; ++s) {
        const chunk& c = _chunks[s];
        if (c.state.load(std::memory_order_acquire) == cs_empty) continue;
        auto base = reinterpret_cast<uintptr_t>(c.addr.load(std::memory_order_relaxed));
        if (base && a >= base && a - base < bytes)
            return buffer{s * _bufs_per_chunk + uint32_t((a - base) >> _buf_shift),
                          c.gen.load(std::memory_order_relaxed)};
    }
    return err(-EINVAL);
}

uint8_t* pool::data(uint32_t index) const noexcept {
    const chunk& c = chunk_of(index);
    return c.addr.load(std::memory_order_relaxed) + (size_t(index % _bufs_per_chunk) << _buf_shift);
}

result<grant_loc> pool::grant_of(uint32_t index) const noexcept {
    if (is_bounce() || index >= _nr_slots * _bufs_per_chunk) return err(-EINVAL);
    const chunk& c = chunk_of(index);
    if (c.state.load(std::memory_order_acquire) == cs_empty) return err(-EINVAL);
    size_t off = size_t(index % _bufs_per_chunk) << _buf_shift;
    return grant_loc{c.pages.refs[off / hv::page_size], uint16_t(off % hv::page_size)};
}

int pool::grow_locked() noexcept {
    if (closed()) return -ESHUTDOWN;
    const uint32_t cp = _opt.chunk_pages;
    chunk* slot = nullptr;
    uint32_t s = 0;
    for (; s < _nr_slots; ++s) {
        if (_chunks[s].state.load(std::memory_order_relaxed) == cs_empty) {
            slot = &_chunks[s];
            break;
        }
    }
    if (is_bounce()) {
        if (!slot) return -ENOBUFS;
        slot->local = std::aligned_alloc(hv::page_size, size_t(cp) * hv::page_size);
        if (!slot->local) return -ENOMEM;
        std::memset(slot->local, 0, size_t(cp) * hv::page_size);
        slot->addr.store(static_cast<uint8_t*>(slot->local), std::memory_order_relaxed);
    } else {
        const uint32_t pages = _pages.load(std::memory_order_relaxed);
        const uint32_t grants = _grants.load(std::memory_order_relaxed);
        if (!slot || pages + cp > _opt.max_pages || grants + cp > _opt.max_grants) {
            bump(_stats->quota_hits);
            return -ENOBUFS;
        }
        auto r = _granter->share(_opt.peer, cp, _opt.writable);
        if (!r) {
            bump(r.error() == -ENOSPC ? _stats->budget_hits : _stats->grow_errors);
            return r.error();
        }
        ZC_CHECK(r->count == cp && r->refs.size() == cp && r->addr);
        slot->pages = std::move(r.value());
        slot->addr.store(static_cast<uint8_t*>(slot->pages.addr), std::memory_order_relaxed);
        _grants.fetch_add(cp, std::memory_order_relaxed);
    }
    _pages.fetch_add(cp, std::memory_order_relaxed);
    slot->retired.store(0, std::memory_order_relaxed);
    slot->gen.fetch_add(1, std::memory_order_relaxed);
    const uint32_t first = s * _bufs_per_chunk, last = first + _bufs_per_chunk - 1;
    for (uint32_t i = first; i <= last; ++i) {
        _state[i].store(bs_free, std::memory_order_relaxed);
        _next[i].store(i + 1, std::memory_order_relaxed);
    }
    // Published to allocators by push_chain's release.
    slot->state.store(cs_active, std::memory_order_release);
    push_chain(first, last);
    bump(_stats->grows);
    return 0;
}

int pool::grow() noexcept {
    if (is_bounce()) return -EINVAL;
    std::lock_guard l(_lock);
    return grow_locked();
}

void pool::retire_chunk_locked(chunk& c) noexcept {
    c.state.store(cs_draining, std::memory_order_release);
    _pages.fetch_sub(_opt.chunk_pages, std::memory_order_relaxed);
}

// Take the whole free list, retire buffers of draining chunks, put the rest
// back. Concurrent allocators see an empty list meanwhile and queue on _lock
// (which we hold) instead of growing.
void pool::drain_retired_locked() noexcept {
    uint64_t h = _head.load(std::memory_order_acquire);
    while (!_head.compare_exchange_weak(h, make_head(head_tag(h) + 1, nil), std::memory_order_acquire,
                                        std::memory_order_acquire)) {
    }
    uint32_t first = nil, last = nil;
    for (uint32_t i = head_idx(h); i != nil;) {
        uint32_t nxt = _next[i].load(std::memory_order_relaxed);
        chunk& c = chunk_of(i);
        if (c.state.load(std::memory_order_acquire) != cs_active) {
            retire(i, c);
        } else {
            if (first == nil) first = i;
            else _next[last].store(i, std::memory_order_relaxed);
            last = i;
        }
        i = nxt;
    }
    if (first != nil) push_chain(first, last);
}

int pool::reclaim_locked() noexcept {
    bool need_drain = false;
    for (uint32_t s = 0; s < _nr_slots; ++s) {
        chunk& c = _chunks[s];
        if (c.state.load(std::memory_order_relaxed) == cs_draining &&
            c.retired.load(std::memory_order_relaxed) < _bufs_per_chunk)
            need_drain = true; // some of its buffers may still sit on the free list
    }
    if (need_drain) drain_retired_locked();

    int waiting = 0;
    for (uint32_t s = 0; s < _nr_slots; ++s) {
        chunk& c = _chunks[s];
        if (c.state.load(std::memory_order_relaxed) != cs_draining) continue;
        if (c.retired.load(std::memory_order_acquire) != _bufs_per_chunk) {
            ++waiting; // frames still reference it: grants end only after the last release
            continue;
        }
        if (is_bounce()) {
            std::free(c.local);
            c.local = nullptr;
        } else {
            int r = _granter->unshare(c.pages);
            if (r < 0) {
                if (r == -EBUSY) bump(_stats->unshare_busy);
                else ZC_LOG(error, "pool", "dom%u: unshare failed (%d); will retry", unsigned(_opt.peer), r);
                ++waiting;
                continue;
            }
            _grants.fetch_sub(_opt.chunk_pages, std::memory_order_relaxed);
            c.pages = hv::shared_pages{};
        }
        c.addr.store(nullptr, std::memory_order_relaxed);
        c.state.store(cs_empty, std::memory_order_release);
        bump(_stats->shrinks);
    }
    return waiting;
}

int pool::shrink(uint32_t n) noexcept {
    std::lock_guard l(_lock);
    if (closed() || is_bounce()) return 0;
    uint32_t active = 0;
    for (uint32_t s = 0; s < _nr_slots; ++s)
        if (_chunks[s].state.load(std::memory_order_relaxed) == cs_active) ++active;
    uint32_t done = 0;
    // Highest slots first: allocation order is LIFO, so low slots tend to be
    // the ones in use.
    for (uint32_t s = _nr_slots; s-- > 0 && done < n && active > _opt.initial_chunks;) {
        chunk& c = _chunks[s];
        if (c.state.load(std::memory_order_relaxed) != cs_active || !idle(s)) continue;
        retire_chunk_locked(c);
        ++done;
        --active;
    }
    if (done) reclaim_locked();
    return int(done);
}

int pool::maintain() noexcept {
    std::lock_guard l(_lock);
    if (!closed() && !is_bounce()) {
        while (free_count() < _opt.low_watermark)
            if (grow_locked() < 0) break;
        uint32_t active = 0;
        for (uint32_t s = 0; s < _nr_slots; ++s)
            if (_chunks[s].state.load(std::memory_order_relaxed) == cs_active) ++active;
        for (uint32_t s = _nr_slots; s-- > 0 && active > _opt.initial_chunks;) {
            uint32_t f = free_count();
            if (f <= _opt.high_watermark || f - _bufs_per_chunk < _opt.low_watermark) break;
            chunk& c = _chunks[s];
            if (c.state.load(std::memory_order_relaxed) != cs_active || !idle(s)) continue;
            retire_chunk_locked(c);
            --active;
            // The free count only drops when its buffers leave the list.
            drain_retired_locked();
        }
    }
    return reclaim_locked();
}

void pool::close() noexcept {
    std::lock_guard l(_lock);
    _closed.store(true, std::memory_order_release);
    for (uint32_t s = 0; s < _nr_slots; ++s)
        if (_chunks[s].state.load(std::memory_order_relaxed) == cs_active) retire_chunk_locked(_chunks[s]);
    reclaim_locked();
}

int pool::reopen() noexcept {
    std::lock_guard l(_lock);
    if (!closed()) return -EINVAL;
    if (reclaim_locked() > 0) return -EBUSY;
    _closed.store(false, std::memory_order_release);
    for (uint32_t i = 0; i < _opt.initial_chunks; ++i)
        if (grow_locked() < 0) break;
    return 0;
}

bool pool::drained() const noexcept {
    for (uint32_t s = 0; s < _nr_slots; ++s)
        if (_chunks[s].state.load(std::memory_order_acquire) != cs_empty) return false;
    return true;
}

// No buffer of slot `s` is in use. Racy by nature (an alloc may pop one
// right after): only a hint for choosing which chunk to retire; retiring a
// chunk with a buffer in use is safe, its grants just wait for the release.
bool pool::idle(uint32_t s) const noexcept {
    for (uint32_t i = s * _bufs_per_chunk, e = i + _bufs_per_chunk; i < e; ++i)
        if (_state[i].load(std::memory_order_relaxed) > bs_free) return false;
    return true;
}

// Counted rather than kept in a counter, which would cost two more atomic
// RMWs per alloc+free pair; only the slow paths (maintain) need it.
uint32_t pool::free_count() const noexcept {
    uint32_t n = 0;
    for (uint32_t s = 0; s < _nr_slots; ++s) {
        if (_chunks[s].state.load(std::memory_order_acquire) != cs_active) continue;
        for (uint32_t i = s * _bufs_per_chunk, e = i + _bufs_per_chunk; i < e; ++i)
            if (_state[i].load(std::memory_order_relaxed) == bs_free) ++n;
    }
    return n;
}

pool_counters pool::counters() const noexcept {
    pool_counters c;
    auto rd = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    c.allocs = rd(_stats->allocs);
    c.frees = rd(_stats->frees);
    c.grows = rd(_stats->grows);
    c.shrinks = rd(_stats->shrinks);
    c.exhausted = rd(_stats->exhausted);
    c.quota_hits = rd(_stats->quota_hits);
    c.budget_hits = rd(_stats->budget_hits);
    c.grow_errors = rd(_stats->grow_errors);
    c.unshare_busy = rd(_stats->unshare_busy);
    c.double_frees = rd(_stats->double_frees);
    c.bad_frees = rd(_stats->bad_frees);
    for (uint32_t s = 0; s < _nr_slots; ++s)
        if (_chunks[s].state.load(std::memory_order_relaxed) != cs_empty) ++c.chunks;
    c.in_use = c.allocs > c.frees ? uint32_t(c.allocs - c.frees) : 0; // two loads: a snapshot
    c.pages = _pages.load(std::memory_order_relaxed);
    c.grants = _grants.load(std::memory_order_relaxed);
    c.free_bufs = free_count();
    return c;
}

} // namespace zc::pool
