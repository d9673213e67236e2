// SPDX-License-Identifier: MIT
// Per-destination-domain pools, frames, fallback and teardown (stack/pool),
// against the emulated hypervisor: every grant a pool makes is checked in the
// granter's own grant table (Xen's grant_entry_v1_t), and peers map and copy
// through the emulated gnttab exactly as a guest would.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/emu_port.hpp"
#include "pool/manager.hpp"

namespace hv = zc::hv;
namespace test = zc::test;
using zc::pool::buffer;
using zc::pool::frame;
using zc::pool::frame_bytes;
using zc::pool::frame_segments;
using zc::pool::gso_type;
using zc::pool::manager;
using zc::pool::manager_options;
using zc::pool::pool;
using zc::pool::pool_options;
using zc::pool::seg_kind;
namespace seg_flag = zc::pool::seg_flag;

namespace {

// The domain running the pools is a driver domain, and so are the peers
// that map its pages here: in the emulation only privileged domains get
// another domain's memory to map or copy grants (hv/emu/broker.hpp).
constexpr hv::domid_t self_dom = 1; // the domain running the pools (a driver domain)
constexpr hv::domid_t dom_b = 2;
constexpr hv::domid_t dom_c = 3;
constexpr hv::domid_t dom_a = 4;    // a sender whose grants become foreign frames

// Grant entries of `granter`'s table that currently permit access to `peer`.
uint32_t grants_to(hv::port& granter, hv::domid_t peer) {
    const auto& v = hv::emu::client_of(granter)->self_view();
    uint32_t n = 0;
    for (uint32_t r = 0; r < v.nr_grefs; ++r) {
        uint16_t flags = __atomic_load_n(&v.gnttab[r].flags, __ATOMIC_ACQUIRE);
        uint16_t dom = __atomic_load_n(&v.gnttab[r].domid, __ATOMIC_RELAXED);
        if ((flags & GTF_type_mask) == GTF_permit_access && dom == peer) ++n;
    }
    return n;
}

// The grant entry as the hypervisor sees it.
grant_entry_v1_t entry(hv::port& granter, hv::gref_t r) {
    const auto& v = hv::emu::client_of(granter)->self_view();
    grant_entry_v1_t e;
    e.flags = __atomic_load_n(&v.gnttab[r].flags, __ATOMIC_ACQUIRE);
    e.domid = __atomic_load_n(&v.gnttab[r].domid, __ATOMIC_RELAXED);
    e.frame = __atomic_load_n(&v.gnttab[r].frame, __ATOMIC_RELAXED);
    return e;
}

class pool_test : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(_host.ok());
        _self = _host.domain(self_dom, 0, true);
        ASSERT_TRUE(_self);
        auto s = _self->open_gntshr();
        ASSERT_TRUE(s.ok()) << s.error();
        _shr = std::move(*s);
        auto t = _self->open_gnttab();
        ASSERT_TRUE(t.ok()) << t.error();
        _tab = std::move(*t);
    }

    std::unique_ptr<manager> make(const manager_options& o) {
        auto m = manager::create(*_shr, _tab.get(), o);
        EXPECT_TRUE(m.ok()) << m.error();
        return m.ok() ? std::move(*m) : nullptr;
    }

    // 2 KiB buffers, 2 per page; chunks of `chunk_pages`.
    static manager_options opts(uint32_t chunk_pages, uint32_t max_pages, uint32_t bounce = 8) {
        manager_options o;
        o.pool.buf_size = 2048;
        o.pool.chunk_pages = chunk_pages;
        o.pool.initial_chunks = 1;
        o.pool.max_pages = max_pages;
        o.pool.max_grants = max_pages;
        o.bounce_buf_size = 2048;
        o.bounce_buffers = bounce;
        o.max_grants = 4096;
        return o;
    }

    test::emu_host _host;
    std::unique_ptr<hv::port> _self;
    std::unique_ptr<hv::gntshr> _shr;
    std::unique_ptr<hv::gnttab> _tab;
};

// A local source frame with `len` bytes of pattern `seed`, from `p`.
int fill_source(pool& p, frame& f, uint16_t len, uint8_t seed) {
    int r = p.alloc_frame(f);
    if (r < 0) return r;
    f.len = len;
    for (uint16_t i = 0; i < len; ++i) p.data(f)[i] = uint8_t(seed + i);
    return 0;
}

bool has_pattern(const frame& f, uint8_t seed) {
    uint32_t k = 0;
    for (const frame* s = &f; s; s = s->next)
        for (uint16_t i = 0; i < s->len; ++i, ++k)
            if (s->owner->data(*s)[i] != uint8_t(seed + k)) return false;
    return true;
}

} // namespace

// ---------------------------------------------------------------------------
TEST(frame_desc, small_and_o1_ownership) {
    static_assert(sizeof(frame) <= 64);
    frame f;
    f.kind = seg_kind::foreign;
    f.domid = 7;
    f.flags = seg_flag::readonly | seg_flag::csum_blank;
    EXPECT_TRUE(f.is_foreign());
    EXPECT_FALSE(f.is_local());
    EXPECT_EQ(f.whose(), 7);
    EXPECT_TRUE(f.readonly());
    frame g;
    g.len = 100;
    f.len = 50;
    f.next = &g;
    EXPECT_EQ(frame_bytes(f), 150u);
    EXPECT_EQ(frame_segments(f), 2u);
}

// The bounce pool needs no hypervisor: double frees and foreign pointers.
TEST(bounce_pool, refuses_double_free_and_foreign_pointers) {
    pool_options o;
    o.buf_size = 2048;
    o.chunk_pages = 2;
    o.initial_chunks = 1;
    auto p = pool::create(o, nullptr);
    ASSERT_TRUE(p.ok()) << p.error();
    pool& bp = **p;
    EXPECT_TRUE(bp.is_bounce());

    std::vector<buffer> got;
    for (int i = 0; i < 4; ++i) {
        auto b = bp.alloc();
        ASSERT_TRUE(b.ok());
        got.push_back(*b);
    }
    EXPECT_EQ(bp.alloc().error(), -ENOBUFS); // bounce pools never grow
    std::set<uint8_t*> addrs;
    for (auto& b : got) addrs.insert(bp.data(b.index));
    EXPECT_EQ(addrs.size(), 4u);

    EXPECT_EQ(bp.free(got[0]), 0);
    EXPECT_EQ(bp.free(got[0]), -EALREADY);
    EXPECT_EQ(bp.free(buffer{1u << 20, got[1].cookie}), -EINVAL);
    EXPECT_EQ(bp.free(buffer{got[1].index, 0}), -EINVAL); // never-issued cookie
    int outside = 0;
    EXPECT_EQ(bp.lookup(&outside).error(), -EINVAL);
    auto lk = bp.lookup(bp.data(got[2].index) + 100);
    ASSERT_TRUE(lk.ok());
    EXPECT_EQ(lk->index, got[2].index);

    frame alien;
    alien.kind = seg_kind::local;
    alien.owner = nullptr;
    EXPECT_EQ(bp.release(alien), -EINVAL);

    auto c = bp.counters();
    EXPECT_EQ(c.double_frees, 1u);
    EXPECT_EQ(c.bad_frees, 2u);
    EXPECT_EQ(c.in_use, 3u);
    // The failed frees changed nothing: the other three are still ours.
    for (size_t i = 1; i < got.size(); ++i) EXPECT_EQ(bp.free(got[i]), 0);
    EXPECT_EQ(bp.counters().in_use, 0u);
    EXPECT_EQ(bp.free_count(), 4u);
}

// ---------------------------------------------------------------------------
// A buffer granted for B is never handed out for C: every buffer of B's pool
// sits in a page whose grant entry names B (and C's names C), no gref and no
// page is shared, and the hypervisor refuses C when it tries B's grants.
TEST_F(pool_test, isolation) {
    auto m = make(opts(2, 8));
    ASSERT_TRUE(m);
    auto pb = m->open_peer(dom_b);
    auto pc = m->open_peer(dom_c);
    ASSERT_TRUE(pb.ok() && pc.ok());

    struct held { pool* p; buffer b; };
    std::vector<held> all;
    std::set<hv::gref_t> grefs_b, grefs_c;
    std::set<uintptr_t> pages_b, pages_c;
    for (pool* p : {*pb, *pc}) {
        for (;;) { // drain the pool up to its quota
            auto b = p->alloc();
            if (!b) {
                EXPECT_EQ(b.error(), -ENOBUFS);
                break;
            }
            all.push_back({p, *b});
            auto g = p->grant_of(b->index);
            ASSERT_TRUE(g.ok());
            grant_entry_v1_t e = entry(*_self, g->gref);
            EXPECT_EQ(e.flags & GTF_type_mask, GTF_permit_access);
            EXPECT_EQ(e.domid, p->peer());
            EXPECT_FALSE(e.flags & GTF_readonly);
            auto page = reinterpret_cast<uintptr_t>(p->data(b->index)) & ~uintptr_t(hv::page_size - 1);
            (p == *pb ? grefs_b : grefs_c).insert(g->gref);
            (p == *pb ? pages_b : pages_c).insert(page);
            // Never another pool's memory.
            pool* other = p == *pb ? *pc : *pb;
            EXPECT_FALSE(other->lookup(p->data(b->index)).ok());
        }
    }
    EXPECT_EQ(grefs_b.size(), 8u);
    EXPECT_EQ(grefs_c.size(), 8u);
    for (auto r : grefs_b) EXPECT_EQ(grefs_c.count(r), 0u);
    for (auto pg : pages_b) EXPECT_EQ(pages_c.count(pg), 0u);
    EXPECT_EQ(grants_to(*_self, dom_b), 8u);
    EXPECT_EQ(grants_to(*_self, dom_c), 8u);

    // The hypervisor agrees: C cannot map B's grant; B can.
    auto cport = _host.domain(dom_c, 0, true);
    auto bport = _host.domain(dom_b, 0, true);
    ASSERT_TRUE(cport && bport);
    auto ctab = cport->open_gnttab();
    auto btab = bport->open_gnttab();
    ASSERT_TRUE(ctab.ok() && btab.ok());
    hv::domid_t granter = self_dom;
    hv::gref_t r = *grefs_b.begin();
    int16_t st = 0;
    auto bad = (*ctab)->map(1, &granter, &r, true, &st);
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(st, GNTST_okay);
    auto good = (*btab)->map(1, &granter, &r, true, &st);
    ASSERT_TRUE(good.ok()) << hv::gntst_name(st);
    EXPECT_EQ((*btab)->unmap(*good), 0);

    for (auto& h : all) EXPECT_EQ(h.p->free(h.b), 0);
}

// Per-peer quotas of pages and grants, and the global grant budget that
// keeps peers together from exhausting our grant table.
TEST_F(pool_test, quota_enforcement) {
    manager_options o = opts(2, 4);
    o.max_grants = 6; // B's quota is 4, so C gets the remaining 2 only
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* b = *m->open_peer(dom_b);
    std::vector<buffer> held;
    for (int i = 0; i < 8; ++i) {
        auto x = b->alloc();
        ASSERT_TRUE(x.ok()) << i;
        held.push_back(*x);
    }
    EXPECT_EQ(b->alloc().error(), -ENOBUFS);
    auto cb = b->counters();
    EXPECT_EQ(cb.pages, 4u);
    EXPECT_EQ(cb.grants, 4u);
    EXPECT_GE(cb.quota_hits, 1u);
    EXPECT_EQ(cb.exhausted, 1u);
    EXPECT_EQ(grants_to(*_self, dom_b), 4u);
    EXPECT_EQ(b->grow(), -ENOBUFS);

    pool* c = *m->open_peer(dom_c);
    for (int i = 0; i < 4; ++i) {
        auto x = c->alloc();
        ASSERT_TRUE(x.ok()) << i;
        held.push_back(*x);
    }
    EXPECT_EQ(c->alloc().error(), -ENOBUFS);
    EXPECT_GE(c->counters().budget_hits, 1u);
    EXPECT_EQ(c->counters().quota_hits, 0u);
    EXPECT_EQ(grants_to(*_self, dom_c), 2u);
    EXPECT_EQ(m->counters().grants_used, 6u);
    EXPECT_EQ(m->grants().used(), 6u);

    for (size_t i = 0; i < 8; ++i) EXPECT_EQ(b->free(held[i]), 0);
    for (size_t i = 8; i < held.size(); ++i) EXPECT_EQ(c->free(held[i]), 0);
}

// Growth on demand and below the low watermark; shrink of idle chunks above
// the high watermark; a chunk the peer still maps is retried, not freed.
TEST_F(pool_test, grow_and_shrink_scripted) {
    manager_options o = opts(1, 8); // 2 buffers per chunk
    o.pool.low_watermark = 1;
    o.pool.high_watermark = 3;
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* p = *m->open_peer(dom_b);
    EXPECT_EQ(p->counters().grows, 1u);
    EXPECT_EQ(grants_to(*_self, dom_b), 1u);

    // Load: 10 buffers in use, the pool grows a chunk at a time.
    std::vector<buffer> held;
    for (int i = 0; i < 10; ++i) held.push_back(*p->alloc());
    EXPECT_EQ(p->counters().grows, 5u);
    EXPECT_EQ(p->counters().pages, 5u);
    EXPECT_EQ(grants_to(*_self, dom_b), 5u);
    // Below the low watermark with room in the quota: maintain() grows.
    EXPECT_EQ(p->maintain(), 0);
    EXPECT_EQ(p->counters().grows, 6u);
    EXPECT_GE(p->free_count(), 1u);

    // Chunks with a buffer in use are never ended: release all but two
    // buffers of the first chunk.
    auto g_keep = p->grant_of(held[0].index);
    ASSERT_TRUE(g_keep.ok());
    for (size_t i = 2; i < held.size(); ++i) EXPECT_EQ(p->free(held[i]), 0);
    EXPECT_EQ(p->maintain(), 0);
    // Free buffers 10 > high 3: idle chunks went away, down to what keeps
    // free_count within [low, high] - but never the chunk still in use.
    auto c = p->counters();
    EXPECT_GE(c.shrinks, 3u);
    EXPECT_LE(c.free_bufs, 3u);
    EXPECT_GE(c.free_bufs, 1u);
    EXPECT_EQ(grants_to(*_self, dom_b), c.grants);
    EXPECT_EQ(entry(*_self, g_keep->gref).domid, dom_b);
    EXPECT_EQ(entry(*_self, g_keep->gref).flags & GTF_type_mask, GTF_permit_access);

    // The peer maps a page of an idle chunk: ending its grant fails with
    // -EBUSY (the peer still maps it), the chunk stays counted and is retried.
    auto bport = _host.domain(dom_b, 0, true);
    ASSERT_TRUE(bport);
    auto btab = bport->open_gnttab();
    ASSERT_TRUE(btab.ok());
    // Make a second chunk idle and find its grant.
    auto extra = p->alloc(); // from whatever chunk
    ASSERT_TRUE(extra.ok());
    std::vector<buffer> more;
    while (p->free_count() > 0) more.push_back(*p->alloc());
    auto fresh = p->alloc(); // forces a new chunk
    ASSERT_TRUE(fresh.ok());
    auto g = p->grant_of(fresh->index);
    ASSERT_TRUE(g.ok());
    hv::domid_t granter = self_dom;
    hv::gref_t ref = g->gref;
    auto map = (*btab)->map(1, &granter, &ref, true);
    ASSERT_TRUE(map.ok());
    EXPECT_EQ(p->free(*fresh), 0);
    uint64_t busy_before = p->counters().unshare_busy;
    EXPECT_EQ(p->shrink(1), 1);
    EXPECT_GT(p->counters().unshare_busy, busy_before);
    EXPECT_EQ(entry(*_self, ref).domid, dom_b); // still granted
    EXPECT_EQ(p->maintain(), 1);               // still waiting
    EXPECT_EQ((*btab)->unmap(*map), 0);
    EXPECT_EQ(p->maintain(), 0);
    EXPECT_NE(entry(*_self, ref).flags & GTF_type_mask, GTF_permit_access);

    EXPECT_EQ(p->free(*extra), 0);
    for (auto& b : more) EXPECT_EQ(p->free(b), 0);
    EXPECT_EQ(p->free(held[0]), 0);
    EXPECT_EQ(p->free(held[1]), 0);
    // All idle: back to the initial chunk plus what the watermarks want.
    EXPECT_EQ(p->maintain(), 0);
    c = p->counters();
    EXPECT_EQ(c.in_use, 0u);
    EXPECT_LE(c.free_bufs, 3u);
    EXPECT_EQ(grants_to(*_self, dom_b), c.grants);
    EXPECT_EQ(m->grants().used(), c.grants);
}

// A buffer handle kept past its release is refused even after its chunk was
// ended and the same index range granted again.
TEST_F(pool_test, stale_handle_after_regrant) {
    manager_options o = opts(1, 2);
    o.pool.initial_chunks = 0;
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* p = *m->open_peer(dom_b);
    auto b = p->alloc();
    ASSERT_TRUE(b.ok());
    buffer old = *b;
    EXPECT_EQ(p->free(old), 0);
    EXPECT_EQ(p->shrink(1), 1);
    EXPECT_EQ(p->counters().chunks, 0u);
    auto b2 = p->alloc(); // regrants the same slot
    ASSERT_TRUE(b2.ok());
    EXPECT_EQ(b2->index, old.index);
    EXPECT_NE(b2->cookie, old.cookie);
    EXPECT_EQ(p->free(old), -EALREADY);
    EXPECT_EQ(p->counters().in_use, 1u);
    EXPECT_EQ(p->free(*b2), 0);
    EXPECT_EQ(p->counters().double_frees, 1u);
}

// The fallback engages exactly when the destination pool is exhausted, and
// stops as soon as it has room again; with bounce exhausted too, the caller
// gets backpressure.
TEST_F(pool_test, fallback_exactly_when_exhausted) {
    manager_options o = opts(2, 2, 2); // B: 4 buffers at most; bounce: 2
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* pa = *m->open_peer(dom_a); // sources live in A's pool
    pool* pb = *m->open_peer(dom_b);

    frame src;
    ASSERT_EQ(fill_source(*pa, src, 1000, 7), 0);
    frame out[4][2];
    for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(m->stage(dom_b, src, out[i], 2), 1) << i;
        EXPECT_EQ(out[i][0].owner, pb);
        EXPECT_EQ(out[i][0].whose(), dom_b);
        EXPECT_TRUE(has_pattern(out[i][0], 7));
        EXPECT_EQ(m->counters().fallbacks, 0u) << i;
    }
    EXPECT_EQ(m->counters().direct, 4u);

    // B's pool is exhausted: bounce.
    frame fb[2][2];
    ASSERT_EQ(m->stage(dom_b, src, fb[0], 2), 1);
    EXPECT_TRUE(fb[0][0].owner->is_bounce());
    EXPECT_EQ(fb[0][0].whose(), dom_b); // waiting for B
    EXPECT_EQ(m->backlog(dom_b), 1u);
    EXPECT_TRUE(has_pattern(fb[0][0], 7));
    EXPECT_EQ(m->counters().fallbacks, 1u);
    ASSERT_EQ(m->stage(dom_b, src, fb[1], 2), 1);
    EXPECT_EQ(m->counters().fallbacks, 2u);

    // Bounce exhausted too: backpressure, the source stays with the caller.
    frame nb[2];
    EXPECT_EQ(m->stage(dom_b, src, nb, 2), -ENOBUFS);
    EXPECT_EQ(m->counters().backpressure, 1u);
    EXPECT_TRUE(has_pattern(src, 7));

    // Restaging waits for room in B's pool...
    frame moved[2][2];
    EXPECT_EQ(m->restage(dom_b, fb[0][0], moved[0], 2), -ENOBUFS);
    EXPECT_EQ(m->counters().backpressure, 1u); // not a new backpressure
    // ...which comes back when B consumes one frame. That room belongs to
    // the backlog: a new frame may not overtake the frames waiting in bounce.
    EXPECT_EQ(m->release(out[0][0]), 0);
    EXPECT_EQ(m->stage(dom_b, src, nb, 2), -ENOBUFS);
    EXPECT_EQ(m->counters().backpressure, 2u);
    ASSERT_EQ(m->restage(dom_b, fb[0][0], moved[0], 2), 1);
    EXPECT_EQ(moved[0][0].owner, pb);
    EXPECT_EQ(moved[0][0].whose(), dom_b);
    EXPECT_TRUE(has_pattern(moved[0][0], 7));
    EXPECT_EQ(fb[0][0].kind, seg_kind::none); // released
    EXPECT_EQ(m->counters().restaged, 1u);
    EXPECT_EQ(m->backlog(dom_b), 1u);
    EXPECT_EQ(m->release(out[1][0]), 0);
    ASSERT_EQ(m->restage(dom_b, fb[1][0], moved[1], 2), 1);
    EXPECT_EQ(m->backlog(dom_b), 0u);
    // Refilled (room, no backlog): the next frame goes straight to B again.
    EXPECT_EQ(m->release(out[2][0]), 0);
    frame again[2];
    ASSERT_EQ(m->stage(dom_b, src, again, 2), 1);
    EXPECT_EQ(again[0].owner, pb);
    EXPECT_EQ(m->counters().fallbacks, 2u);
    EXPECT_EQ(m->counters().direct, 5u);

    // A frame already in B's pool needs nothing.
    EXPECT_EQ(m->stage(dom_b, again[0], nb, 2), 0);

    for (frame* f : {&out[3][0], &moved[0][0], &moved[1][0], &again[0], &src}) EXPECT_EQ(m->release(*f), 0);
    EXPECT_EQ(pb->counters().in_use, 0u);
    EXPECT_EQ(m->bounce()->counters().in_use, 0u);
}

// Scatter-gather: a 9000-byte frame staged into 2 KiB buffers is a chain,
// with checksum and GSO fields on its first segment.
TEST_F(pool_test, stage_chains_jumbo_frames) {
    auto m = make(opts(4, 16));
    ASSERT_TRUE(m);
    pool* pa = *m->open_peer(dom_a);
    ASSERT_TRUE(m->open_peer(dom_b).ok());
    frame src[5];
    uint32_t total = 0;
    for (int i = 0; i < 5; ++i) {
        uint16_t len = i < 4 ? 2048 : 9000 - 4 * 2048;
        ASSERT_EQ(pa->alloc_frame(src[i]), 0);
        src[i].len = len;
        for (uint16_t k = 0; k < len; ++k) pa->data(src[i])[k] = uint8_t(3 + total + k);
        total += len;
        if (i) src[i - 1].next = &src[i];
    }
    src[0].flags = seg_flag::csum_blank;
    src[0].gso = gso_type::tcpv4;
    src[0].gso_size = 1448;
    frame out[8];
    EXPECT_EQ(m->stage(dom_b, src[0], out, 4), -EMSGSIZE);
    ASSERT_EQ(m->stage(dom_b, src[0], out, 8), 5);
    EXPECT_EQ(frame_bytes(out[0]), 9000u);
    EXPECT_EQ(frame_segments(out[0]), 5u);
    EXPECT_TRUE(has_pattern(out[0], 3));
    EXPECT_EQ(out[0].flags & seg_flag::csum_blank, seg_flag::csum_blank);
    EXPECT_EQ(out[0].gso, gso_type::tcpv4);
    EXPECT_EQ(out[0].gso_size, 1448);
    EXPECT_EQ(m->release(out[0]), 0);
    EXPECT_EQ(m->release(src[0]), 0);
    EXPECT_EQ(m->counters().allocs, m->counters().frees);
}

// Foreign frames: grant-copied out of the sender's page; a malformed stamp
// (peer input) is refused with an error, not a crash.
TEST_F(pool_test, foreign_frames_are_grant_copied) {
    auto m = make(opts(2, 8));
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->open_peer(dom_b).ok());
    auto aport = _host.domain(dom_a);
    ASSERT_TRUE(aport);
    auto ashr = aport->open_gntshr();
    ASSERT_TRUE(ashr.ok());
    auto pages = (*ashr)->share(self_dom, 1, false);
    ASSERT_TRUE(pages.ok());
    auto* bytes = static_cast<uint8_t*>(pages->addr);
    for (int i = 0; i < 300; ++i) bytes[100 + i] = uint8_t(9 + i);

    EXPECT_EQ(m->stamp_foreign(dom_a, pages->refs[0], 4000, 200, true).error(), -EINVAL);
    auto f = m->stamp_foreign(dom_a, pages->refs[0], 100, 300, true);
    ASSERT_TRUE(f.ok());
    EXPECT_TRUE(f->is_foreign());
    EXPECT_EQ(f->whose(), dom_a);
    EXPECT_TRUE(f->readonly());
    frame out[2];
    ASSERT_EQ(m->stage(dom_b, *f, out, 2), 1);
    EXPECT_TRUE(has_pattern(out[0], 9));
    EXPECT_EQ(_tab->counters().copy_bytes, 300u);

    // A gref A never granted: the hypervisor refuses the copy; counted.
    auto bogus = m->stamp_foreign(dom_a, pages->refs[0] + 1000, 0, 10, true);
    ASSERT_TRUE(bogus.ok());
    frame out2[2];
    EXPECT_EQ(m->stage(dom_b, *bogus, out2, 2), -EFAULT);
    EXPECT_EQ(m->counters().copy_errors, 1u);
    EXPECT_EQ(m->release(out[0]), 0);
    EXPECT_EQ(m->counters().allocs, m->counters().frees);
    EXPECT_EQ((*ashr)->unshare(*pages), 0);
}

namespace {
// The lossless scenario: a sender domain A hands us frames (foreign, out of
// A's granted pages), we stage them for B, B consumes slower than A sends.
// Each frame carries its sequence number.
struct lossless_rig {
    manager& m;
    pool& pb;
    uint8_t* a_mem;                      // A's granted pages (A writes its frames here)
    std::vector<hv::gref_t> a_refs;
    static constexpr uint32_t slots = 16; // A's in-flight frames (its TX ring)
    static constexpr uint16_t len = 1200;

    frame a_frame(uint32_t slot, uint32_t seq) {
        uint8_t* p = a_mem + size_t(slot) * hv::page_size;
        std::memcpy(p, &seq, sizeof seq);
        for (uint16_t i = sizeof seq; i < len; ++i) p[i] = uint8_t(seq + i);
        return *m.stamp_foreign(dom_a, a_refs[slot], 0, len, true);
    }
    static bool check(const frame& f, uint32_t seq) {
        if (frame_bytes(f) != len || f.next) return false;
        const uint8_t* p = f.owner->data(f);
        uint32_t got;
        std::memcpy(&got, p, sizeof got);
        if (got != seq) return false;
        for (uint16_t i = sizeof seq; i < len; ++i)
            if (p[i] != uint8_t(seq + i)) return false;
        return true;
    }
};
} // namespace

// Producer faster than its consumer, scripted: each round A offers up to 4
// frames, B consumes 1. Every frame is delivered exactly once and in order;
// fallback and backpressure both happen and the counters add up.
TEST_F(pool_test, lossless_fast_producer_slow_consumer) {
    manager_options o = opts(2, 4, 6); // B: 8 buffers, bounce: 6
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* pb = *m->open_peer(dom_b);
    auto aport = _host.domain(dom_a);
    ASSERT_TRUE(aport);
    auto ashr = aport->open_gntshr();
    ASSERT_TRUE(ashr.ok());
    auto apages = (*ashr)->share(self_dom, lossless_rig::slots, false);
    ASSERT_TRUE(apages.ok());
    lossless_rig rig{*m, *pb, static_cast<uint8_t*>(apages->addr), apages->refs};

    constexpr uint32_t total = 400;
    struct queued { frame f; uint32_t seq; };
    std::deque<queued> to_b;               // staged, waiting for B
    uint32_t next_seq = 0, delivered = 0, staged = 0, backpressured = 0;
    bool retry_pending = false;
    frame pending;                         // A's frame that got backpressure
    while (delivered < total) {
        for (int k = 0; k < 4 && next_seq < total; ++k) {
            frame src = retry_pending ? pending : rig.a_frame(next_seq % lossless_rig::slots, next_seq);
            frame out[2];
            int n = m->stage(dom_b, src, out, 2);
            if (n == -ENOBUFS) {
                ++backpressured;
                pending = src;
                retry_pending = true;
                break; // A's slot stays pending: A is throttled, nothing lost
            }
            ASSERT_EQ(n, 1);
            // Source copied: A's slot completes (the foreign segment owns nothing).
            retry_pending = false;
            ++staged;
            to_b.push_back({out[0], next_seq++});
        }
        // B consumes one frame: a bounce frame must first move into B's pool.
        if (to_b.empty()) continue;
        queued& q = to_b.front();
        if (q.f.owner->is_bounce()) {
            frame moved[2];
            // Never starved: frames behind a bounce frame are bounce frames
            // too, so B's pool is free for it once the head is consumed.
            ASSERT_EQ(m->restage(dom_b, q.f, moved, 2), 1) << q.seq;
            q.f = moved[0];
        }
        ASSERT_TRUE(lossless_rig::check(q.f, q.seq)) << q.seq;
        ASSERT_EQ(q.seq, delivered);
        ASSERT_EQ(m->release(q.f), 0);
        to_b.pop_front();
        ++delivered;
    }
    auto c = m->counters();
    EXPECT_EQ(staged, total);
    EXPECT_EQ(c.direct + c.fallbacks, total);
    EXPECT_EQ(c.restaged, c.fallbacks);
    EXPECT_GT(c.fallbacks, 0u);
    EXPECT_GT(c.backpressure, 0u);
    EXPECT_EQ(c.backpressure, backpressured);
    EXPECT_EQ(c.revoked_drops, 0u);
    EXPECT_EQ(pb->counters().in_use, 0u);
    EXPECT_EQ(m->bounce()->counters().in_use, 0u);
    EXPECT_EQ(c.allocs, c.frees);
    EXPECT_EQ((*ashr)->unshare(*apages), 0);
}

// The same with a real producer thread and consumer thread (also the
// ThreadSanitizer workload for stage/restage/release). No assumption about
// speeds: only conservation is asserted.
TEST_F(pool_test, lossless_threads) {
    auto m = make(opts(2, 4, 6));
    ASSERT_TRUE(m);
    pool* pb = *m->open_peer(dom_b);
    pool* pa = *m->open_peer(dom_a);
    constexpr uint32_t total = 3000;
    std::mutex lock; // protects q and consumed
    std::condition_variable cv;
    std::deque<std::pair<frame, uint32_t>> q;
    uint64_t consumed = 0;
    std::atomic<uint32_t> backpressured{0};
    std::thread producer([&] {
        frame src;
        ASSERT_EQ(pa->alloc_frame(src), 0);
        src.len = 64;
        for (uint32_t seq = 0; seq < total;) {
            std::memcpy(pa->data(src), &seq, sizeof seq);
            frame out[2];
            // What the consumer had released before this attempt: a release
            // between a failed stage() and the wait below must count, or the
            // producer waits for one more release while the consumer, with
            // nothing queued, waits for it (both asleep for good).
            uint64_t seen;
            {
                std::lock_guard l(lock);
                seen = consumed;
            }
            int n = m->stage(dom_b, src, out, 2);
            if (n == -ENOBUFS) {
                backpressured.fetch_add(1);
                // Retry once the consumer has released a frame (never busy-poll).
                std::unique_lock l(lock);
                cv.wait(l, [&] { return consumed != seen; });
                continue;
            }
            ASSERT_EQ(n, 1);
            std::lock_guard l(lock);
            q.emplace_back(out[0], seq++);
            cv.notify_all();
        }
        m->release(src);
    });
    uint32_t delivered = 0;
    while (delivered < total) {
        std::unique_lock l(lock);
        cv.wait(l, [&] { return !q.empty(); });
        auto [f, seq] = q.front();
        q.pop_front();
        l.unlock();
        if (f.owner->is_bounce()) {
            frame moved[2];
            ASSERT_EQ(m->restage(dom_b, f, moved, 2), 1) << seq;
            f = moved[0];
        }
        uint32_t got;
        std::memcpy(&got, f.owner->data(f), sizeof got);
        ASSERT_EQ(got, seq);
        ASSERT_EQ(seq, delivered);
        ASSERT_EQ(m->release(f), 0);
        ++delivered;
        l.lock();
        ++consumed;
        cv.notify_all();
    }
    producer.join();
    auto c = m->counters();
    EXPECT_EQ(c.direct + c.fallbacks, total);
    EXPECT_EQ(c.restaged, c.fallbacks);
    EXPECT_EQ(c.backpressure, backpressured.load());
    EXPECT_EQ(pb->counters().in_use, 0u);
    EXPECT_EQ(m->bounce()->counters().in_use, 0u);
    EXPECT_EQ(c.allocs, c.frees);
}

// Teardown with frames in flight: grants of chunks that frames
// still reference stay until the last release and the peer's unmap; nothing
// is sent or copied from a revoked grant; afterwards no grant is left.
TEST_F(pool_test, teardown_with_frames_in_flight) {
    auto m = make(opts(2, 8));
    ASSERT_TRUE(m);
    pool* pb = *m->open_peer(dom_b);
    auto bport = _host.domain(dom_b, 0, true);
    auto aport = _host.domain(dom_a);
    ASSERT_TRUE(bport && aport);

    // In flight towards B: three frames in B's pool, one of them mapped by B.
    frame to_b[3];
    for (auto& f : to_b) ASSERT_EQ(m->alloc_for(dom_b, 500, 0, &f, 1), 1);
    auto g = pb->grant_of(to_b[0].buf);
    ASSERT_TRUE(g.ok());
    auto btab = bport->open_gnttab();
    ASSERT_TRUE(btab.ok());
    hv::domid_t granter = self_dom;
    hv::gref_t ref = g->gref;
    auto map = (*btab)->map(1, &granter, &ref, true);
    ASSERT_TRUE(map.ok());
    // From A: a foreign frame waiting to be staged.
    auto ashr = aport->open_gntshr();
    ASSERT_TRUE(ashr.ok());
    auto apage = (*ashr)->share(self_dom, 1, false);
    ASSERT_TRUE(apage.ok());
    auto fa = m->stamp_foreign(dom_a, apage->refs[0], 0, 100, true);
    ASSERT_TRUE(fa.ok());
    frame from_a = *fa;
    EXPECT_EQ(grants_to(*_self, dom_b), 2u);

    m->teardown_peer(dom_b);
    m->teardown_peer(dom_a);
    EXPECT_EQ(m->find(dom_b), nullptr);
    EXPECT_EQ(pb->alloc().error(), -ESHUTDOWN);
    frame tmp;
    EXPECT_EQ(m->alloc_for(dom_b, 10, 0, &tmp, 1), -ENOLINK);
    // Frames hold the chunk: its grants are still there.
    EXPECT_EQ(m->maintain(), 1);
    EXPECT_EQ(grants_to(*_self, dom_b), 2u);
    EXPECT_EQ(m->open_peer(dom_b).error(), -EBUSY);

    // Nothing goes out of a revoked grant: gate drops (and counts), stage
    // refuses, and the hypervisor saw no copy.
    uint64_t copies = _tab->counters().copy_segments;
    EXPECT_EQ(m->gate(to_b[0]), -EKEYREVOKED);
    EXPECT_EQ(to_b[0].kind, seg_kind::none); // released by the gate
    frame out[2];
    ASSERT_TRUE(m->open_peer(dom_c).ok());
    EXPECT_EQ(m->stage(dom_c, from_a, out, 2), -EKEYREVOKED);
    EXPECT_EQ(m->gate(from_a), -EKEYREVOKED);
    EXPECT_EQ(_tab->counters().copy_segments, copies);
    EXPECT_EQ(m->counters().revoked_drops, 3u);
    // A frame stamped after the revocation is live again (A came back).
    auto fa2 = m->stamp_foreign(dom_a, apage->refs[0], 0, 100, true);
    ASSERT_TRUE(fa2.ok());
    EXPECT_FALSE(m->revoked(*fa2));

    // Last frames released; the peer still maps a page: still no leak, no free.
    EXPECT_EQ(m->release(to_b[1]), 0);
    EXPECT_EQ(m->gate(to_b[2], dom_b), -EKEYREVOKED);
    EXPECT_EQ(m->maintain(), 1);
    EXPECT_EQ(grants_to(*_self, dom_b), 2u);
    EXPECT_GE(m->counters().unshare_busy, 1u);
    EXPECT_EQ((*btab)->unmap(*map), 0);
    EXPECT_EQ(m->maintain(), 0);
    EXPECT_EQ(grants_to(*_self, dom_b), 0u);
    auto c = m->counters();
    EXPECT_EQ(c.pools_draining, 0u);
    EXPECT_EQ(c.allocs, c.frees);
    EXPECT_EQ(c.grants_used, grants_to(*_self, dom_c));

    // B comes back: its pool reopens with fresh grants.
    auto again = m->open_peer(dom_b);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, pb);
    EXPECT_EQ(grants_to(*_self, dom_b), 2u);
    EXPECT_EQ((*ashr)->unshare(*apage), 0);
}

// Concurrent alloc/free from several threads while another thread grows and
// shrinks the pool. Every buffer is held by one thread at a time (an owner
// word per index, and a pattern checked before free); the counters balance.
TEST_F(pool_test, concurrent_alloc_free) {
    manager_options o = opts(1, 32);
    o.pool.low_watermark = 2;
    o.pool.high_watermark = 6;
    auto m = make(o);
    ASSERT_TRUE(m);
    pool* p = *m->open_peer(dom_b);
    constexpr int threads = 4, iters = 4000;
    std::vector<std::atomic<int>> owner(64 * 32);
    for (auto& x : owner) x.store(-1);
    std::atomic<bool> stop{false};
    std::atomic<uint32_t> errors{0};
    std::thread maint([&] {
        while (!stop.load()) {
            p->maintain();
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::vector<buffer> held;
            for (int i = 0; i < iters; ++i) {
                if (held.size() < 6 && (i % 3 != 2 || held.empty())) {
                    auto b = p->alloc();
                    if (!b) {
                        if (b.error() != -ENOBUFS) errors.fetch_add(1);
                        continue;
                    }
                    int expect = -1;
                    if (!owner[b->index].compare_exchange_strong(expect, t)) errors.fetch_add(1);
                    std::memset(p->data(b->index), t + 1, 64);
                    held.push_back(*b);
                } else {
                    buffer b = held.back();
                    held.pop_back();
                    uint8_t* d = p->data(b.index);
                    for (int k = 0; k < 64; ++k)
                        if (d[k] != t + 1) { errors.fetch_add(1); break; }
                    int expect = t;
                    if (!owner[b.index].compare_exchange_strong(expect, -1)) errors.fetch_add(1);
                    if (p->free(b) != 0) errors.fetch_add(1);
                }
            }
            for (auto& b : held) {
                owner[b.index].store(-1);
                if (p->free(b) != 0) errors.fetch_add(1);
            }
        });
    }
    for (auto& t : ts) t.join();
    stop.store(true);
    maint.join();
    EXPECT_EQ(errors.load(), 0u);
    auto c = p->counters();
    EXPECT_EQ(c.allocs, c.frees);
    EXPECT_EQ(c.in_use, 0u);
    EXPECT_EQ(c.double_frees + c.bad_frees, 0u);
    EXPECT_GT(c.grows, 1u);
    p->maintain();
    c = p->counters();
    EXPECT_EQ(c.free_bufs, c.pages * 2);
    EXPECT_EQ(grants_to(*_self, dom_b), c.grants);
}
