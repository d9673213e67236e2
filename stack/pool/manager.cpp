// SPDX-License-Identifier: MIT
#include "pool/manager.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/check.hpp"
#include "common/log.hpp"

namespace zc::pool {

namespace {
constexpr uint32_t nr_domids = 0x7FF0; // DOMID_FIRST_RESERVED
constexpr uint32_t copy_batch = 16;    // grant-copy segments per hypercall

uint32_t div_up(uint32_t a, uint32_t b) noexcept { return (a + b - 1) / b; }
} // namespace

result<std::unique_ptr<manager>> manager::create(hv::gntshr& shr, hv::gnttab* tab,
                                                 const manager_options& o) noexcept {
    std::unique_ptr<manager> m(new (std::nothrow) manager());
    if (!m) return err(-ENOMEM);
    m->_opt = o;
    m->_tab = tab;
    m->_granter.reset(new (std::nothrow) granter(shr, o.max_grants));
    m->_by_dom.reset(new (std::nothrow) std::atomic<pool*>[nr_domids]);
    m->_foreign_gen.reset(new (std::nothrow) std::atomic<uint32_t>[nr_domids]);
    m->_backlog.reset(new (std::nothrow) std::atomic<uint32_t>[nr_domids]);
    if (!m->_granter || !m->_by_dom || !m->_foreign_gen || !m->_backlog) return err(-ENOMEM);
    for (uint32_t d = 0; d < nr_domids; ++d) {
        m->_by_dom[d].store(nullptr, std::memory_order_relaxed);
        m->_foreign_gen[d].store(0, std::memory_order_relaxed);
        m->_backlog[d].store(0, std::memory_order_relaxed);
    }
    if (o.bounce_buffers) {
        if (!std::has_single_bit(o.bounce_buf_size)) return err(-EINVAL);
        pool_options b;
        b.buf_size = o.bounce_buf_size;
        uint64_t bytes = uint64_t(o.bounce_buffers) * o.bounce_buf_size;
        uint64_t pages = std::bit_ceil((bytes + hv::page_size - 1) / hv::page_size);
        if (pages > (1u << 20)) return err(-EINVAL);
        b.chunk_pages = uint32_t(pages);
        b.initial_chunks = 1;
        auto p = pool::create(b, nullptr);
        if (!p) return err(p.error());
        m->_bounce = std::move(*p);
    }
    // Validate the pool template once, so that open_peer only fails on the peer.
    pool_options t = o.pool;
    t.peer = 0;
    t.initial_chunks = 0;
    if (!std::has_single_bit(t.buf_size) || t.buf_size < 64 || t.buf_size > hv::page_size ||
        !std::has_single_bit(t.chunk_pages) || t.initial_chunks > std::max(t.max_pages, t.max_grants))
        return err(-EINVAL);
    return m;
}

manager::~manager() {
    // Pools first (they return grants to _granter), then the granter.
    std::lock_guard l(_lock);
    _owned.clear();
    _bounce.reset();
}

result<pool*> manager::open_peer(hv::domid_t peer) noexcept {
    if (peer >= nr_domids) return err(-EINVAL);
    std::lock_guard l(_lock);
    pool* p = _by_dom[peer].load(std::memory_order_acquire);
    if (p) {
        if (!p->closed()) return p;
        int r = p->reopen();
        if (r < 0) return err(r);
        return p;
    }
    pool_options o = _opt.pool;
    o.peer = peer;
    auto np = pool::create(o, _granter.get());
    if (!np) return err(np.error());
    p = np->get();
    _owned.push_back(std::move(*np));
    _by_dom[peer].store(p, std::memory_order_release);
    return p;
}

pool* manager::find(hv::domid_t peer) const noexcept {
    if (peer >= nr_domids) return nullptr;
    pool* p = _by_dom[peer].load(std::memory_order_acquire);
    return p && !p->closed() ? p : nullptr;
}

void manager::teardown_peer(hv::domid_t peer) noexcept {
    if (peer >= nr_domids) return;
    revoke_foreign(peer);
    std::lock_guard l(_lock);
    if (pool* p = _by_dom[peer].load(std::memory_order_acquire)) p->close();
}

result<frame> manager::stamp_foreign(hv::domid_t dom, hv::gref_t gref, uint16_t offset, uint16_t len,
                                     bool readonly) noexcept {
    if (dom >= nr_domids || size_t(offset) + len > hv::page_size) return err(-EINVAL);
    frame f;
    f.kind = seg_kind::foreign;
    f.domid = dom;
    f.gref = gref;
    f.offset = offset;
    f.len = len;
    f.flags = readonly ? seg_flag::readonly : 0;
    // Acquire pairs with revoke_foreign's release: a stamp after a
    // revocation carries the new generation.
    f.cookie = _foreign_gen[dom].load(std::memory_order_acquire);
    return f;
}

void manager::revoke_foreign(hv::domid_t dom) noexcept {
    if (dom < nr_domids) _foreign_gen[dom].fetch_add(1, std::memory_order_acq_rel);
}

bool manager::revoked(const frame& s) const noexcept {
    if (s.kind == seg_kind::foreign)
        return s.domid >= nr_domids || s.cookie != _foreign_gen[s.domid].load(std::memory_order_acquire);
    if (s.kind == seg_kind::local) return s.owner && !s.owner->is_bounce() && s.owner->closed();
    return false;
}

// All-or-nothing: either every buffer for `len` bytes comes from `p`, or
// none is kept.
int manager::alloc_n(pool& p, uint32_t len, uint16_t headroom, frame* out, uint32_t nout) noexcept {
    const uint32_t bs = p.buf_size();
    if (headroom >= bs) return -EMSGSIZE;
    uint32_t n = std::max(1u, div_up(len + headroom, bs));
    if (n > nout) return -EMSGSIZE;
    uint32_t left = len;
    for (uint32_t i = 0; i < n; ++i) {
        uint16_t hr = i == 0 ? headroom : 0;
        int r = p.alloc_frame(out[i], hr);
        if (r < 0) {
            for (uint32_t j = 0; j < i; ++j) p.release(out[j]);
            return r;
        }
        out[i].len = uint16_t(std::min(left, bs - hr));
        left -= out[i].len;
        if (i) out[i - 1].next = &out[i];
    }
    return int(n);
}

uint32_t manager::backlog(hv::domid_t peer) const noexcept {
    return peer < nr_domids ? _backlog[peer].load(std::memory_order_relaxed) : 0;
}

void manager::mark_backlog(hv::domid_t peer, frame* out, int n) noexcept {
    for (int i = 0; i < n; ++i) out[i].domid = peer;
    out[0].flags |= seg_flag::backlog;
    _backlog[peer].fetch_add(1, std::memory_order_relaxed);
    _stats.fallbacks.fetch_add(1, std::memory_order_relaxed);
}

int manager::alloc_for(hv::domid_t peer, uint32_t len, uint16_t headroom, frame* out, uint32_t nout) noexcept {
    pool* p = find(peer);
    if (!p) return -ENOLINK;
    int n = -ENOBUFS;
    if (backlog(peer) == 0) {
        n = alloc_n(*p, len, headroom, out, nout);
        if (n > 0) {
            _stats.direct.fetch_add(1, std::memory_order_relaxed);
            return n;
        }
        if (n != -ENOBUFS && n != -ESHUTDOWN) return n;
    }
    if (_bounce) {
        n = alloc_n(*_bounce, len, headroom, out, nout);
        if (n > 0) {
            mark_backlog(peer, out, n);
            return n;
        }
        if (n != -ENOBUFS) return n;
    }
    _stats.backpressure.fetch_add(1, std::memory_order_relaxed);
    return -ENOBUFS;
}

// Copy src's bytes, in order, into the buffers of out[0..n). Local sources
// are memcpy'd; foreign ones are grant-copied in batches, as one hypercall
// per batch on Xen.
int manager::copy_into(const frame& src, frame* out, uint32_t n) noexcept {
    hv::copy_segment segs[copy_batch];
    uint32_t nsegs = 0;
    int rc = 0;
    auto flush = [&]() noexcept {
        if (!nsegs) return;
        int r = _tab->copy(segs, nsegs);
        for (uint32_t i = 0; i < nsegs; ++i) {
            if (r < 0 || segs[i].status != GNTST_okay) {
                _stats.copy_errors.fetch_add(1, std::memory_order_relaxed);
                rc = -EFAULT;
            }
        }
        nsegs = 0;
    };
    uint32_t di = 0, doff = 0; // destination segment and bytes filled in it
    for (const frame* s = &src; s; s = s->next) {
        uint32_t soff = 0;
        while (soff < s->len) {
            ZC_CHECK(di < n);
            frame& d = out[di];
            uint32_t room = d.len - doff;
            if (room == 0) {
                ++di;
                doff = 0;
                continue;
            }
            uint32_t k = std::min(room, uint32_t(s->len) - soff);
            uint8_t* dst = d.owner->data(d) + doff;
            if (s->kind == seg_kind::local) {
                std::memcpy(dst, s->owner->data(*s) + soff, k);
            } else {
                hv::copy_segment& g = segs[nsegs++];
                g = hv::copy_segment{};
                g.source.foreign.ref = s->gref;
                g.source.foreign.offset = uint16_t(s->offset + soff);
                g.source.foreign.domid = s->domid;
                g.dest.virt = dst;
                g.len = uint16_t(k);
                g.flags = GNTCOPY_source_gref;
                if (nsegs == copy_batch) flush();
            }
            soff += k;
            doff += k;
        }
    }
    flush();
    return rc;
}

int manager::stage(hv::domid_t peer, const frame& src, frame* out, uint32_t nout, uint32_t flags) noexcept {
    pool* p = find(peer);
    if (!p) return -ENOLINK;
    bool in_place = true, from_bounce = false, foreign = false;
    uint32_t total = 0;
    for (const frame* s = &src; s; s = s->next) {
        if (s->kind == seg_kind::foreign) {
            foreign = true;
            if (revoked(*s)) {
                // Never copy out of a grant its owner took back.
                _stats.revoked_drops.fetch_add(1, std::memory_order_relaxed);
                return -EKEYREVOKED;
            }
        } else if (s->kind != seg_kind::local || !s->owner) {
            return -EINVAL;
        }
        if (s->kind != seg_kind::local || s->owner != p) in_place = false;
        if (s->kind == seg_kind::local && s->owner->is_bounce()) from_bounce = true;
        total += s->len;
    }
    if (in_place) return 0;
    if (foreign && !_tab) return -EOPNOTSUPP;

    bool fallback = false;
    // A restage may take the room; a new frame may not overtake the backlog.
    int n = from_bounce || backlog(peer) == 0 ? alloc_n(*p, total, 0, out, nout) : -ENOBUFS;
    if (n == -ENOBUFS || n == -ESHUTDOWN) {
        if ((flags & stage_no_fallback) || from_bounce) return -ENOBUFS;
        n = _bounce ? alloc_n(*_bounce, total, 0, out, nout) : -ENOBUFS;
        if (n == -ENOBUFS) {
            _stats.backpressure.fetch_add(1, std::memory_order_relaxed);
            return -ENOBUFS;
        }
        fallback = true;
    }
    if (n < 0) return n;

    int r = copy_into(src, out, uint32_t(n));
    if (r < 0) {
        for (int i = 0; i < n; ++i) out[i].owner->release(out[i]);
        return r;
    }
    out[0].flags = src.flags & uint8_t(seg_flag::csum_blank | seg_flag::data_validated);
    out[0].gso = src.gso;
    out[0].gso_size = src.gso_size;
    if (fallback) mark_backlog(peer, out, n);
    else if (from_bounce) _stats.restaged.fetch_add(1, std::memory_order_relaxed);
    else _stats.direct.fetch_add(1, std::memory_order_relaxed);
    return n;
}

int manager::restage(hv::domid_t peer, frame& f, frame* out, uint32_t nout) noexcept {
    bool bounced = false;
    for (const frame* s = &f; s; s = s->next)
        if (s->kind == seg_kind::local && s->owner && s->owner->is_bounce()) bounced = true;
    if (!bounced) return 0;
    int n = stage(peer, f, out, nout, stage_no_fallback);
    if (n > 0) release(f);
    return n;
}

int manager::gate(frame& f, hv::domid_t dest) noexcept {
    int why = 0;
    for (const frame* s = &f; s && !why; s = s->next)
        if (revoked(*s)) why = -EKEYREVOKED;
    if (!why && dest != hv::domid_invalid && !find(dest)) why = -ENOLINK;
    if (!why) return 0;
    release(f);
    _stats.revoked_drops.fetch_add(1, std::memory_order_relaxed);
    return why;
}

int manager::release(frame& f) noexcept {
    int first = 0;
    for (frame* s = &f; s;) {
        frame* next = s->next;
        if ((s->flags & seg_flag::backlog) && s->kind == seg_kind::local && s->owner && s->owner->is_bounce() &&
            s->domid < nr_domids)
            _backlog[s->domid].fetch_sub(1, std::memory_order_relaxed);
        if (s->kind == seg_kind::local && s->owner) {
            int r = s->owner->release(*s);
            if (r < 0 && !first) first = r;
        } else {
            *s = frame{};
        }
        s->next = nullptr;
        s = next;
    }
    return first;
}

int manager::maintain() noexcept {
    std::lock_guard l(_lock);
    int draining = 0;
    for (auto& p : _owned) {
        int waiting = p->maintain();
        if (p->closed() && (waiting > 0 || !p->drained())) ++draining;
    }
    return draining;
}

manager_counters manager::counters() const noexcept {
    manager_counters c;
    auto add = [&c](const pool& p) {
        pool_counters pc = p.counters();
        c.allocs += pc.allocs;
        c.frees += pc.frees;
        c.grows += pc.grows;
        c.shrinks += pc.shrinks;
        c.unshare_busy += pc.unshare_busy;
        c.double_frees += pc.double_frees;
        c.bad_frees += pc.bad_frees;
    };
    {
        std::lock_guard l(_lock);
        for (auto& p : _owned) {
            add(*p);
            if (!p->closed()) ++c.pools_open;
            else if (!p->drained()) ++c.pools_draining;
        }
    }
    if (_bounce) add(*_bounce);
    auto rd = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    c.direct = rd(_stats.direct);
    c.fallbacks = rd(_stats.fallbacks);
    c.restaged = rd(_stats.restaged);
    c.backpressure = rd(_stats.backpressure);
    c.revoked_drops = rd(_stats.revoked_drops);
    c.copy_errors = rd(_stats.copy_errors);
    c.grants_used = _granter->used();
    c.grants_limit = _granter->limit();
    return c;
}

} // namespace zc::pool
