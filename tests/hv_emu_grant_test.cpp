// SPDX-License-Identifier: MIT
// Emulated grant tables: granting, mapping and grant copy across processes,
// with the GNTST_* code Xen gives for each mistake a buggy or hostile domain
// can make. The test process is dom0 (the mapper/copier); granters are
// forked child processes driven over pipes.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/grant.hpp"

using namespace zc;
using hv::domid_t;
using hv::gref_t;
using hv::page_size;

namespace {

constexpr uint32_t max_refs = 16;

// ---- a granter domain in a child process ------------------------------------

enum class op : uint32_t {
    share,     // a=peer b=count c=writable          -> rc=share index, refs
    fill,      // a=share b=page c=byte              -> rc
    hash,      // a=share b=page c=offset d=len      -> value=fnv1a of the bytes
    unshare,   // a=share                            -> rc
    set_frame, // a=ref b=frame                      (corrupt our own entry)
    set_flags, // a=ref b=flags
    quit,
};

struct cmd {
    op o;
    uint32_t a = 0, b = 0, c = 0, d = 0;
};

struct reply {
    int32_t rc = 0;
    uint32_t value = 0;
    uint32_t count = 0;
    gref_t refs[max_refs] = {};
};

uint32_t fnv1a(const uint8_t* p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
    return h;
}

int serve(test::emu_host& host, domid_t self, test::chan& in, test::chan& out) {
    auto port = host.domain(self);
    reply r;
    r.rc = port ? 0 : -1;
    out.put(r);
    if (!port) return 1;
    auto shr = port->open_gntshr();
    if (!shr) return 2;
    auto* cli = hv::emu::client_of(*port);
    std::vector<hv::shared_pages> shares;
    for (;;) {
        cmd c;
        if (!in.get(c, 60000)) return 3;
        reply rep;
        switch (c.o) {
        case op::share: {
            auto s = (*shr)->share(domid_t(c.a), c.b, c.c != 0);
            if (!s) {
                rep.rc = s.error();
                break;
            }
            rep.rc = int32_t(shares.size());
            rep.count = s->count;
            for (uint32_t i = 0; i < s->count && i < max_refs; ++i) rep.refs[i] = s->refs[i];
            shares.push_back(std::move(*s));
            break;
        }
        case op::fill:
            std::memset(static_cast<uint8_t*>(shares.at(c.a).addr) + size_t{c.b} * page_size, int(c.c),
                        page_size);
            break;
        case op::hash:
            rep.value = fnv1a(static_cast<uint8_t*>(shares.at(c.a).addr) + size_t{c.b} * page_size + c.c, c.d);
            break;
        case op::unshare:
            rep.rc = (*shr)->unshare(shares.at(c.a));
            break;
        case op::set_frame:
            __atomic_store_n(&cli->self_view().gnttab[c.a].frame, c.b, __ATOMIC_SEQ_CST);
            break;
        case op::set_flags:
            __atomic_store_n(&cli->self_view().gnttab[c.a].flags, uint16_t(c.b), __ATOMIC_SEQ_CST);
            break;
        case op::quit:
            out.put(rep);
            return 0;
        }
        out.put(rep);
    }
}

class granter {
public:
    granter(test::emu_host& host, domid_t d) : _dom(d) {
        _pid = test::spawn([&] { return serve(host, d, _in, _out); });
        reply r;
        _up = _pid > 0 && _out.get(r) && r.rc == 0;
    }
    ~granter() {
        if (_pid > 0 && !_exited) quit();
    }
    bool up() const { return _up; }
    domid_t dom() const { return _dom; }

    reply call(cmd c) {
        reply r;
        r.rc = -9999;
        if (!_in.put(c) || !_out.get(r)) ADD_FAILURE() << "granter d" << _dom << " did not answer";
        return r;
    }
    // Share `count` pages with `peer`: the share index and its refs.
    reply share(domid_t peer, uint32_t count, bool writable) {
        return call({op::share, peer, count, writable ? 1u : 0u});
    }
    void fill(int share, uint32_t page, uint8_t byte) { call({op::fill, uint32_t(share), page, byte}); }
    uint32_t hash(int share, uint32_t page, uint32_t off, uint32_t len) {
        return call({op::hash, uint32_t(share), page, off, len}).value;
    }
    int unshare(int share) { return call({op::unshare, uint32_t(share)}).rc; }
    void set_frame(gref_t ref, uint32_t frame) { call({op::set_frame, ref, frame}); }
    void set_flags(gref_t ref, uint16_t flags) { call({op::set_flags, ref, flags}); }
    // Ends the process (and so the domain); returns its exit code.
    int quit() {
        call({op::quit});
        _exited = true;
        return test::reap(_pid);
    }

private:
    domid_t _dom;
    test::chan _in, _out;
    pid_t _pid = -1;
    bool _up = false;
    bool _exited = false;
};

// ---- fixture: the test process is dom0 ---------------------------------------------

class EmuGrant : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(host.ok());
        dom0 = host.domain(0);
        ASSERT_TRUE(dom0);
        auto t = dom0->open_gnttab();
        ASSERT_TRUE(t);
        tab = std::move(*t);
        cli = hv::emu::client_of(*dom0);
        ASSERT_NE(cli, nullptr);
    }

    // The granter's entry, as the hypervisor sees it.
    grant_entry_v1_t& entry(domid_t d, gref_t ref) {
        auto v = cli->view(d);
        EXPECT_TRUE(v);
        return (*v)->gnttab[ref];
    }
    uint16_t flags(domid_t d, gref_t ref) { return __atomic_load_n(&entry(d, ref).flags, __ATOMIC_SEQ_CST); }
    const hv::emu::domain_view& view(domid_t d) { return **cli->view(d); }

    // One mapping of (d, ref), status out.
    result<hv::mapping> map1(domid_t d, gref_t ref, bool writable, int16_t* st) {
        return tab->map(1, &d, &ref, writable, st);
    }

    static hv::copy_segment gref_to_local(domid_t d, gref_t ref, uint16_t off, void* to, uint16_t len) {
        hv::copy_segment s{};
        s.source.foreign = {ref, off, d};
        s.dest.virt = to;
        s.len = len;
        s.flags = GNTCOPY_source_gref;
        return s;
    }
    static hv::copy_segment local_to_gref(const void* from, domid_t d, gref_t ref, uint16_t off, uint16_t len) {
        hv::copy_segment s{};
        s.source.virt = const_cast<void*>(from);
        s.dest.foreign = {ref, off, d};
        s.len = len;
        s.flags = GNTCOPY_dest_gref;
        return s;
    }
    static hv::copy_segment gref_to_gref(domid_t sd, gref_t sref, uint16_t soff, domid_t dd, gref_t dref,
                                         uint16_t doff, uint16_t len) {
        hv::copy_segment s{};
        s.source.foreign = {sref, soff, sd};
        s.dest.foreign = {dref, doff, dd};
        s.len = len;
        s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
        return s;
    }

    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::gnttab> tab;
    hv::emu::client* cli = nullptr;
};

constexpr uint16_t held = GTF_reading | GTF_writing;

// ---- granting ------------------------------------------------------------------------

TEST_F(EmuGrant, ShareWritesEntriesAsLinuxDoes) {
    auto shr = dom0->open_gntshr();
    ASSERT_TRUE(shr);
    auto rw = (*shr)->share(3, 4, true);
    ASSERT_TRUE(rw);
    auto ro = (*shr)->share(3, 2, false);
    ASSERT_TRUE(ro);
    const auto& self = cli->self_view();
    for (auto* p : {&*rw, &*ro}) {
        ASSERT_EQ(p->refs.size(), p->count);
        EXPECT_EQ(p->peer, 3);
        const size_t first = (static_cast<uint8_t*>(p->addr) - self.mem) / page_size;
        EXPECT_EQ((static_cast<uint8_t*>(p->addr) - self.mem) % page_size, 0u);
        for (uint32_t i = 0; i < p->count; ++i) {
            const grant_entry_v1_t& e = self.gnttab[p->refs[i]];
            EXPECT_GE(p->refs[i], uint32_t{GNTTAB_NR_RESERVED_ENTRIES});
            EXPECT_EQ(e.flags, GTF_permit_access | (p->writable ? 0 : GTF_readonly));
            EXPECT_EQ(e.domid, 3);
            EXPECT_EQ(e.frame, first + i) << "pages are contiguous";
        }
    }
    EXPECT_EQ((*shr)->counters().shares, 6u);
    EXPECT_EQ((*shr)->unshare(*rw), 0);
    EXPECT_EQ((*shr)->counters().unshares, 4u);
    EXPECT_EQ(rw->addr, nullptr) << "unshare resets the region";
    EXPECT_EQ((*shr)->unshare(*rw), -EINVAL) << "double unshare";
    for (gref_t r : ro->refs) EXPECT_EQ(self.gnttab[r].flags, GTF_permit_access | GTF_readonly);
}

TEST_F(EmuGrant, ShareErrors) {
    auto shr = dom0->open_gntshr();
    ASSERT_TRUE(shr);
    EXPECT_EQ((*shr)->share(3, 0, true).error(), -EINVAL);
    EXPECT_EQ((*shr)->share(0, 1, true).error(), -EINVAL) << "ourselves";
    EXPECT_EQ((*shr)->share(hv::domid_self, 1, true).error(), -EINVAL);
    EXPECT_EQ((*shr)->share(hv::domid_invalid, 1, true).error(), -EINVAL);
    const uint32_t pages = cli->self_view().mem_pages;
    EXPECT_EQ((*shr)->share(3, pages + 1, true).error(), -ENOMEM);
    // Nothing leaked by the failures: the whole memory can still be shared.
    auto all = (*shr)->share(3, pages, false);
    ASSERT_TRUE(all);
    EXPECT_EQ((*shr)->share(3, 1, false).error(), -ENOMEM);
    EXPECT_EQ((*shr)->unshare(*all), 0);
}

TEST_F(EmuGrant, FullGrantTableIsENOSPC) {
    // More memory than grant entries, so that refs run out first.
    auto big = host.domain(4, 40000);
    ASSERT_TRUE(big);
    auto* c = hv::emu::client_of(*big);
    const uint32_t usable = c->self_view().nr_grefs - GNTTAB_NR_RESERVED_ENTRIES;
    ASSERT_GT(c->self_view().mem_pages, usable);
    auto shr = big->open_gntshr();
    ASSERT_TRUE(shr);
    EXPECT_EQ((*shr)->share(0, usable + 1, true).error(), -ENOSPC);
    auto one = (*shr)->share(0, 1, true);
    ASSERT_TRUE(one) << "the failed share leaked no refs";
    EXPECT_EQ((*shr)->unshare(*one), 0);
}

TEST_F(EmuGrant, SharedPagesAreZeroedOnReuse) {
    auto shr = dom0->open_gntshr();
    ASSERT_TRUE(shr);
    auto a = (*shr)->share(3, 2, true);
    ASSERT_TRUE(a);
    void* addr = a->addr;
    std::memset(addr, 0xEE, 2 * page_size);
    ASSERT_EQ((*shr)->unshare(*a), 0);
    auto b = (*shr)->share(3, 2, true);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->addr, addr) << "first fit reuses the frames";
    const auto* p = static_cast<const uint8_t*>(b->addr);
    EXPECT_EQ(std::count(p, p + 2 * page_size, 0), long(2 * page_size));
}

TEST(EmuFrameAllocator, ContiguousFirstFitAndRefs) {
    hv::emu::frame_allocator fa(200, 64);
    EXPECT_EQ(fa.alloc_frames(0).error(), -EINVAL);
    EXPECT_EQ(*fa.alloc_frames(10), 0u);
    EXPECT_EQ(*fa.alloc_frames(100), 10u);
    fa.free_frames(0, 10);
    EXPECT_EQ(*fa.alloc_frames(20), 110u) << "the 10-frame hole is too small";
    EXPECT_EQ(*fa.alloc_frames(10), 0u) << "first fit";
    EXPECT_EQ(fa.free_frames_count(), 70u);
    EXPECT_EQ(fa.alloc_frames(71).error(), -ENOMEM);
    EXPECT_EQ(*fa.alloc_frames(70), 130u) << "runs to the last frame";
    EXPECT_EQ(fa.alloc_frames(1).error(), -ENOMEM);

    gref_t refs[56];
    ASSERT_EQ(fa.alloc_refs(56, refs), 0);
    std::sort(refs, refs + 56);
    for (uint32_t i = 0; i < 56; ++i) EXPECT_EQ(refs[i], GNTTAB_NR_RESERVED_ENTRIES + i);
    gref_t one;
    EXPECT_EQ(fa.alloc_refs(1, &one), -ENOSPC);
    fa.free_refs(refs + 3, 1);
    ASSERT_EQ(fa.alloc_refs(1, &one), 0);
    EXPECT_EQ(one, refs[3]);
}

TEST(EmuFrameAllocator, ThreadsNeverGetOverlappingFrames) {
    constexpr uint32_t pages = 1000;
    hv::emu::frame_allocator fa(pages, 64);
    std::vector<std::atomic<int>> owner(pages);
    std::atomic<bool> overlap{false};
    auto worker = [&](int id) {
        for (int i = 0; i < 2000; ++i) {
            const uint32_t n = 1 + (i * 7 + id) % 13;
            auto f = fa.alloc_frames(n);
            if (!f) continue;
            for (uint32_t k = *f; k < *f + n; ++k)
                if (owner[k].exchange(id) != 0) overlap = true;
            for (uint32_t k = *f; k < *f + n; ++k) owner[k].store(0);
            fa.free_frames(*f, n);
        }
    };
    std::thread t1(worker, 1), t2(worker, 2), t3(worker, 3);
    t1.join();
    t2.join();
    t3.join();
    EXPECT_FALSE(overlap);
    EXPECT_EQ(fa.free_frames_count(), pages);
}

// ---- mapping -----------------------------------------------------------------------------

TEST_F(EmuGrant, MapReadWriteUnmapAcrossProcesses) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 3, true);
    ASSERT_GE(s.rc, 0);
    for (uint32_t i = 0; i < 3; ++i) g.fill(s.rc, i, uint8_t(0x10 + i));

    const domid_t doms[3] = {1, 1, 1};
    int16_t st[3] = {99, 99, 99};
    auto m = tab->map(3, doms, s.refs, true, st);
    ASSERT_TRUE(m) << m.error();
    EXPECT_EQ(m->count, 3u);
    EXPECT_TRUE(m->writable);
    for (uint32_t i = 0; i < 3; ++i) {
        EXPECT_EQ(st[i], GNTST_okay);
        const auto* p = static_cast<const uint8_t*>(m->addr) + i * page_size;
        EXPECT_EQ(p[0], 0x10 + i);
        EXPECT_EQ(p[page_size - 1], 0x10 + i);
        EXPECT_EQ(flags(1, s.refs[i]), GTF_permit_access | held) << "Xen marks a writable map";
    }
    // Writes land in the granter's memory.
    std::memset(static_cast<uint8_t*>(m->addr) + page_size, 0xA5, page_size);
    std::vector<uint8_t> expect(page_size, 0xA5);
    EXPECT_EQ(g.hash(s.rc, 1, 0, page_size), fnv1a(expect.data(), page_size));
    EXPECT_EQ(tab->counters().maps, 3u);

    // A mapped grant cannot be ended, and the failed attempt changes nothing.
    EXPECT_EQ(g.unshare(s.rc), -EBUSY);
    for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(flags(1, s.refs[i]), GTF_permit_access | held);

    hv::mapping copy_of_m = *m;
    EXPECT_EQ(tab->unmap(*m), 0);
    EXPECT_EQ(m->addr, nullptr);
    EXPECT_EQ(tab->unmap(copy_of_m), -EINVAL) << "double unmap";
    EXPECT_EQ(tab->counters().unmaps, 3u);
    for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(flags(1, s.refs[i]), GTF_permit_access) << "last pin clears";
    EXPECT_EQ(g.unshare(s.rc), 0);
    for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(flags(1, s.refs[i]), 0);
    EXPECT_EQ(g.quit(), 0);
}

TEST_F(EmuGrant, ReadOnlyMapsAndPinUpgrade) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply rw = g.share(0, 1, true);
    reply ro = g.share(0, 1, false);
    ASSERT_GE(rw.rc, 0);
    ASSERT_GE(ro.rc, 0);
    g.fill(ro.rc, 0, 0x42);
    int16_t st = 99;

    // Write-mapping a read-only grant: Xen "Attempt to write-pin a r/o grant entry".
    EXPECT_EQ(map1(1, ro.refs[0], true, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_general_error);
    EXPECT_EQ(flags(1, ro.refs[0]), GTF_permit_access | GTF_readonly) << "nothing left set";
    auto r = map1(1, ro.refs[0], false, &st);
    ASSERT_TRUE(r);
    EXPECT_EQ(st, GNTST_okay);
    EXPECT_EQ(static_cast<const uint8_t*>(r->addr)[5], 0x42);
    EXPECT_EQ(flags(1, ro.refs[0]), GTF_permit_access | GTF_readonly | GTF_reading);

    // A read-only map of a writable grant sets only GTF_reading; a second,
    // writable map of the same grant adds GTF_writing; each unmap clears
    // what its last pin held.
    auto a = map1(1, rw.refs[0], false, &st);
    ASSERT_TRUE(a);
    EXPECT_EQ(flags(1, rw.refs[0]), GTF_permit_access | GTF_reading);
    auto b = map1(1, rw.refs[0], true, &st);
    ASSERT_TRUE(b);
    EXPECT_EQ(flags(1, rw.refs[0]), GTF_permit_access | held);
    EXPECT_EQ(tab->unmap(*b), 0);
    EXPECT_EQ(flags(1, rw.refs[0]), GTF_permit_access | GTF_reading);
    EXPECT_EQ(tab->unmap(*a), 0);
    EXPECT_EQ(flags(1, rw.refs[0]), GTF_permit_access);
    EXPECT_EQ(tab->unmap(*r), 0);
    EXPECT_EQ(g.unshare(ro.rc), 0);
    EXPECT_EQ(g.unshare(rw.rc), 0);
}

TEST_F(EmuGrant, UnshareIsAllOrNothing) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 3, true);
    ASSERT_GE(s.rc, 0);
    int16_t st = 99;
    auto last = map1(1, s.refs[2], true, &st);
    ASSERT_TRUE(last);
    EXPECT_EQ(g.unshare(s.rc), -EBUSY);
    // Pages 0 and 1 were ended, then re-granted when page 2 was found busy.
    EXPECT_EQ(flags(1, s.refs[0]), GTF_permit_access);
    EXPECT_EQ(flags(1, s.refs[1]), GTF_permit_access);
    EXPECT_EQ(entry(1, s.refs[0]).domid, 0);
    auto first = map1(1, s.refs[0], true, &st);
    ASSERT_TRUE(first) << "still granted after the failed unshare";
    EXPECT_EQ(tab->unmap(*first), 0);
    EXPECT_EQ(tab->unmap(*last), 0);
    EXPECT_EQ(g.unshare(s.rc), 0);
    EXPECT_EQ(flags(1, s.refs[0]), 0);
}

TEST_F(EmuGrant, MapErrorsGetXensStatus) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply ok = g.share(0, 2, true);
    reply other = g.share(5, 1, true); // granted to somebody else
    ASSERT_GE(ok.rc, 0);
    ASSERT_GE(other.rc, 0);
    const uint32_t nr = view(1).nr_grefs;
    int16_t st = 99;

    EXPECT_EQ(map1(1, nr, false, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_bad_gntref);
    EXPECT_EQ(map1(1, 0xFFFFFFFFu, false, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_bad_gntref);
    EXPECT_EQ(map1(1, nr - 1, false, &st).error(), -EINVAL) << "never granted";
    EXPECT_EQ(st, GNTST_general_error);
    EXPECT_EQ(map1(1, other.refs[0], false, &st).error(), -EINVAL) << "wrong domid";
    EXPECT_EQ(st, GNTST_general_error);
    EXPECT_EQ(flags(1, other.refs[0]), GTF_permit_access);
    EXPECT_EQ(map1(77, ok.refs[0], false, &st).error(), -EINVAL) << "no such domain";
    EXPECT_EQ(st, GNTST_bad_domain);
    EXPECT_EQ(map1(hv::domid_self, ok.refs[0], false, &st).error(), -EINVAL)
        << "map_grant_ref has no DOMID_SELF";
    EXPECT_EQ(st, GNTST_bad_domain);
    EXPECT_EQ(map1(5000, ok.refs[0], false, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_bad_domain);

    // A v1 entry with GTF_sub_page cannot be mapped (Xen adds it to the mask).
    g.set_flags(ok.refs[1], GTF_permit_access | GTF_sub_page);
    EXPECT_EQ(map1(1, ok.refs[1], false, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_general_error);
    g.set_flags(ok.refs[1], GTF_permit_access);

    // The granter points its entry outside its memory.
    g.set_frame(ok.refs[1], view(1).mem_pages + 5);
    EXPECT_EQ(map1(1, ok.refs[1], true, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_bad_page);
    EXPECT_EQ(flags(1, ok.refs[1]), GTF_permit_access) << "flags set for validation are cleared";

    // A mixed batch: every op gets its own status, and nothing stays mapped
    // or pinned, not even the good ones.
    const domid_t doms[5] = {1, 1, 77, 1, 1};
    const gref_t refs[5] = {ok.refs[0], nr + 3, ok.refs[0], other.refs[0], ok.refs[1]};
    int16_t sts[5] = {99, 99, 99, 99, 99};
    EXPECT_EQ(tab->map(5, doms, refs, true, sts).error(), -EINVAL);
    EXPECT_EQ(sts[0], GNTST_okay);
    EXPECT_EQ(sts[1], GNTST_bad_gntref);
    EXPECT_EQ(sts[2], GNTST_bad_domain);
    EXPECT_EQ(sts[3], GNTST_general_error);
    EXPECT_EQ(sts[4], GNTST_bad_page);
    EXPECT_EQ(flags(1, ok.refs[0]), GTF_permit_access);
    EXPECT_EQ(view(1).active[ok.refs[0]].writers, 0u);
    EXPECT_EQ(tab->map(5, doms, refs, true).error(), -EINVAL) << "status is optional";
    EXPECT_EQ(tab->counters().maps, 0u);
    EXPECT_EQ(g.unshare(ok.rc), 0) << "no pin was left behind";

    EXPECT_EQ(tab->map(0, doms, refs, true).error(), -EINVAL);
    hv::mapping bogus{reinterpret_cast<void*>(0x10000), 1, false};
    EXPECT_EQ(tab->unmap(bogus), -EINVAL);
}

// A domain that pins a grant owns the active entry until it unpins, whatever
// the granter writes into the entry meanwhile (Xen: act->domid check).
// dom2 is a privileged driver domain: only those may map other domains'
// grants in the emulation (hv/emu/broker.hpp).
TEST_F(EmuGrant, PinnedEntryRefusesOtherDomain) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    auto dom2 = host.domain(2, 0, true);
    ASSERT_TRUE(dom2);
    auto tab2 = dom2->open_gnttab();
    ASSERT_TRUE(tab2);
    reply s = g.share(2, 1, true);
    ASSERT_GE(s.rc, 0);
    const domid_t d1 = 1;
    int16_t st = 99;
    auto m2 = (*tab2)->map(1, &d1, s.refs, false, &st);
    ASSERT_TRUE(m2);
    // The granter re-points the live entry at dom0.
    __atomic_store_n(&entry(1, s.refs[0]).domid, domid_t{0}, __ATOMIC_SEQ_CST);
    EXPECT_EQ(map1(1, s.refs[0], false, &st).error(), -EINVAL);
    EXPECT_EQ(st, GNTST_general_error);
    EXPECT_EQ((*tab2)->unmap(*m2), 0);
    auto m0 = map1(1, s.refs[0], false, &st);
    ASSERT_TRUE(m0) << "once unpinned, the entry's domid counts again";
    EXPECT_EQ(tab->unmap(*m0), 0);
}

// ---- grant copy --------------------------------------------------------------------------

TEST_F(EmuGrant, CopyLocalGrefAndGrefToGref) {
    granter src(host, 1), dst(host, 2);
    ASSERT_TRUE(src.up());
    ASSERT_TRUE(dst.up());
    reply s = src.share(0, 1, false); // read-only is enough to copy from
    reply d = dst.share(0, 1, true);
    ASSERT_GE(s.rc, 0);
    ASSERT_GE(d.rc, 0);
    src.fill(s.rc, 0, 0x5A);

    // gref -> local
    std::vector<uint8_t> buf(3 * page_size, 0);
    hv::copy_segment seg = gref_to_local(1, s.refs[0], 50, buf.data(), 100);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(std::count(buf.begin(), buf.begin() + 100, 0x5A), 100);
    EXPECT_EQ(buf[100], 0);

    // local -> gref, the local side crossing a page boundary
    // 96 bytes before the first page boundary at least 96 bytes into buf (a
    // boundary closer to buf's start would put the write before buf).
    uint8_t* unaligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 96 + page_size - 1) &
                                                    ~uintptr_t(page_size - 1)) - 96;
    for (int i = 0; i < 1000; ++i) unaligned[i] = uint8_t(i * 13);
    seg = local_to_gref(unaligned, 2, d.refs[0], 7, 1000);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(dst.hash(d.rc, 0, 7, 1000), fnv1a(unaligned, 1000));

    // gref -> gref between two other domains: the single VM-to-VM copy.
    seg = gref_to_gref(1, s.refs[0], 0, 2, d.refs[0], 1096, 3000);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    std::vector<uint8_t> expect(3000, 0x5A);
    EXPECT_EQ(dst.hash(d.rc, 0, 1096, 3000), fnv1a(expect.data(), 3000));
    EXPECT_EQ(dst.hash(d.rc, 0, 7, 1000), fnv1a(unaligned, 1000)) << "untouched";

    // Whole pages, several segments per grant in one batch.
    hv::copy_segment batch[4] = {
        gref_to_gref(1, s.refs[0], 0, 2, d.refs[0], 0, 2048),
        gref_to_gref(1, s.refs[0], 2048, 2, d.refs[0], 2048, 2048),
        gref_to_local(1, s.refs[0], 0, buf.data(), 4096),
        local_to_gref(buf.data(), 2, d.refs[0], 0, 0), // empty: nothing to do
    };
    ASSERT_EQ(tab->copy(batch, 4), 0);
    for (auto& b : batch) EXPECT_EQ(b.status, GNTST_okay);
    std::vector<uint8_t> page(page_size, 0x5A);
    EXPECT_EQ(dst.hash(d.rc, 0, 0, page_size), fnv1a(page.data(), page_size));

    // Nothing stays held after a batch.
    EXPECT_EQ(flags(1, s.refs[0]), GTF_permit_access | GTF_readonly);
    EXPECT_EQ(flags(2, d.refs[0]), GTF_permit_access);
    EXPECT_EQ(src.unshare(s.rc), 0);
    EXPECT_EQ(dst.unshare(d.rc), 0);

    auto c = tab->counters();
    EXPECT_EQ(c.copy_batches, 4u);
    EXPECT_EQ(c.copy_segments, 7u);
    EXPECT_EQ(c.copy_bytes, 100u + 1000 + 3000 + 2048 + 2048 + 4096);
    EXPECT_EQ(c.copy_errors, 0u);
}

TEST_F(EmuGrant, CopyErrorsGetXensStatusPerSegment) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply rw = g.share(0, 2, true);
    reply ro = g.share(0, 1, false);
    reply other = g.share(5, 1, true);
    ASSERT_GE(rw.rc, 0);
    ASSERT_GE(ro.rc, 0);
    ASSERT_GE(other.rc, 0);
    const uint32_t nr = view(1).nr_grefs;
    g.set_frame(rw.refs[1], view(1).mem_pages); // one past the end
    uint8_t local[page_size];
    std::memset(local, 0x33, sizeof local);

    std::vector<hv::copy_segment> segs;
    std::vector<int16_t> want;
    auto add = [&](hv::copy_segment s, int16_t w) {
        s.status = 99;
        segs.push_back(s);
        want.push_back(w);
    };
    hv::copy_segment s = gref_to_local(1, ro.refs[0], 0, local, 10);
    s.flags |= 0x4;
    add(s, GNTST_bad_copy_arg); // unknown flag bit
    s = gref_to_local(1, ro.refs[0], 0, local, 10);
    s.flags = 0;
    s.source.virt = local + 100;
    add(s, GNTST_bad_copy_arg);                                             // local -> local
    add(gref_to_local(1, ro.refs[0], 4000, local, 97), GNTST_bad_copy_arg);   // crosses the source page
    add(local_to_gref(local, 1, rw.refs[0], 4095, 2), GNTST_bad_copy_arg);    // crosses the dest page
    add(local_to_gref(local, 1, rw.refs[0], 0, 64), GNTST_okay);
    add(local_to_gref(local, 77, rw.refs[0], 0, 10), GNTST_bad_domain);
    add(gref_to_gref(77, ro.refs[0], 0, 1, nr, 0, 10), GNTST_bad_domain);    // domains before grefs
    add(gref_to_local(1, nr, 0, local, 10), GNTST_bad_gntref);
    add(gref_to_local(1, nr - 1, 0, local, 10), GNTST_general_error);         // never granted
    add(gref_to_local(1, other.refs[0], 0, local, 10), GNTST_general_error);  // granted to d5
    add(local_to_gref(local, 1, ro.refs[0], 0, 10), GNTST_general_error);     // into a r/o grant
    add(gref_to_gref(1, rw.refs[0], 0, 1, ro.refs[0], 0, 10), GNTST_general_error);
    add(gref_to_local(1, rw.refs[1], 0, local, 10), GNTST_bad_page);
    add(local_to_gref(nullptr, 1, rw.refs[0], 0, 10), GNTST_bad_copy_arg);    // as the real port (Xen lab)
    add(gref_to_local(1, rw.refs[0], 0, nullptr, 0), GNTST_bad_copy_arg);     // even when empty
    add(gref_to_local(1, nr, 0, local, 0), GNTST_okay);                       // empty: no hypercall
    add(gref_to_local(1, rw.refs[0], 100, local + 200, 16), GNTST_okay);
    add(gref_to_local(hv::domid_self, nr, 0, local, 10), GNTST_bad_gntref); // DOMID_SELF is us (dom0)

    ASSERT_EQ(tab->copy(segs.data(), uint32_t(segs.size())), 0);
    uint32_t bad = 0;
    for (size_t i = 0; i < segs.size(); ++i) {
        EXPECT_EQ(segs[i].status, want[i]) << "segment " << i << ": " << hv::gntst_name(segs[i].status)
                                            << " want " << hv::gntst_name(want[i]);
        bad += want[i] != GNTST_okay;
    }
    std::vector<uint8_t> expect(64, 0x33);
    EXPECT_EQ(g.hash(rw.rc, 0, 0, 64), fnv1a(expect.data(), 64)) << "good segments went through";
    EXPECT_EQ(g.hash(ro.rc, 0, 0, 10), fnv1a(std::vector<uint8_t>(10, 0).data(), 10)) << "r/o untouched";

    auto c = tab->counters();
    EXPECT_EQ(c.copy_batches, 1u);
    EXPECT_EQ(c.copy_segments, segs.size());
    EXPECT_EQ(c.copy_errors, bad);
    EXPECT_EQ(c.copy_bytes, 64u + 16);
    // No grant is left held by the failures.
    EXPECT_EQ(flags(1, rw.refs[0]), GTF_permit_access);
    EXPECT_EQ(flags(1, ro.refs[0]), GTF_permit_access | GTF_readonly);
    EXPECT_EQ(g.unshare(ro.rc), 0);
    EXPECT_EQ(g.unshare(other.rc), 0);
    EXPECT_EQ(tab->copy(nullptr, 1), -EINVAL);
    EXPECT_EQ(tab->copy(nullptr, 0), 0);
}

// During a copy the source grant holds GTF_reading and the destination
// GTF_writing, so the granter cannot end access under it.
struct copy_probe {
    granter* g;
    int share;
    domid_t dom;
    gref_t ref;
    const hv::emu::domain_view* v;
    int calls = 0;
    uint16_t flags_seen = 0;
    int unshare_rc = 0;
};

void probe(void* arg) noexcept {
    auto* p = static_cast<copy_probe*>(arg);
    ++p->calls;
    p->flags_seen = __atomic_load_n(&p->v->gnttab[p->ref].flags, __ATOMIC_SEQ_CST);
    p->unshare_rc = p->g->unshare(p->share);
}

TEST_F(EmuGrant, CopyHoldsGrantAgainstUnshare) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 1, true);
    ASSERT_GE(s.rc, 0);
    uint8_t local[256] = {};
    copy_probe p{&g, s.rc, 1, s.refs[0], &view(1)};
    hv::emu::test_hooks::set_copy_hook(probe, &p);

    hv::copy_segment seg = gref_to_local(1, s.refs[0], 0, local, sizeof local);
    EXPECT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(p.calls, 1);
    EXPECT_EQ(p.flags_seen, GTF_permit_access | GTF_reading);
    EXPECT_EQ(p.unshare_rc, -EBUSY);

    seg = local_to_gref(local, 1, s.refs[0], 0, sizeof local);
    EXPECT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(p.flags_seen, GTF_permit_access | held);
    EXPECT_EQ(p.unshare_rc, -EBUSY);
    hv::emu::test_hooks::set_copy_hook(nullptr, nullptr);

    EXPECT_EQ(flags(1, s.refs[0]), GTF_permit_access);
    EXPECT_EQ(g.unshare(s.rc), 0);
    // After the grant is ended, copies fail as Xen's would.
    seg = local_to_gref(local, 1, s.refs[0], 0, 16);
    EXPECT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_general_error);
}

// A copy from a v1 entry with GTF_sub_page still works: Xen only adds
// GTF_sub_page to the type mask for maps.
TEST_F(EmuGrant, SubPageFlagBlocksMapNotCopy) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 1, true);
    ASSERT_GE(s.rc, 0);
    g.fill(s.rc, 0, 0x77);
    g.set_flags(s.refs[0], GTF_permit_access | GTF_sub_page);
    uint8_t local[8] = {};
    hv::copy_segment seg = gref_to_local(1, s.refs[0], 0, local, 8);
    EXPECT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(local[7], 0x77);
    int16_t st = 99;
    EXPECT_FALSE(map1(1, s.refs[0], false, &st));
    EXPECT_EQ(st, GNTST_general_error);
}

// Threads of one mapper copying through the same grants: the pin counts and
// flags come back to rest exactly (active-entry lock, cmpxchg on the entry).
TEST_F(EmuGrant, ConcurrentCopiesLeaveNoPins) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 2, true);
    ASSERT_GE(s.rc, 0);
    std::atomic<int> bad{0};
    auto worker = [&](int id) {
        uint8_t local[512];
        std::memset(local, id, sizeof local);
        for (int i = 0; i < 2000; ++i) {
            hv::copy_segment segs[3] = {
                local_to_gref(local, 1, s.refs[0], uint16_t(id * 512), 512),
                gref_to_gref(1, s.refs[0], uint16_t(id * 512), 1, s.refs[1], uint16_t(id * 512), 512),
                gref_to_local(1, s.refs[1], uint16_t(id * 512), local, 512),
            };
            if (tab->copy(segs, 3) != 0) ++bad;
            for (auto& x : segs) bad += x.status != GNTST_okay;
            bad += local[0] != id || local[511] != id;
        }
    };
    std::thread t1(worker, 1), t2(worker, 2), t3(worker, 3);
    t1.join();
    t2.join();
    t3.join();
    EXPECT_EQ(bad.load(), 0);
    for (gref_t r : {s.refs[0], s.refs[1]}) {
        EXPECT_EQ(flags(1, r), GTF_permit_access);
        EXPECT_EQ(view(1).active[r].readers, 0u);
        EXPECT_EQ(view(1).active[r].writers, 0u);
    }
    EXPECT_EQ(tab->counters().copy_segments, 3u * 3 * 2000);
    EXPECT_EQ(g.unshare(s.rc), 0);
}

// ---- domain death ------------------------------------------------------------------------

TEST_F(EmuGrant, DeadDomainsGrantsAreBadDomainButMappingsLive) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(0, 2, true);
    ASSERT_GE(s.rc, 0);
    g.fill(s.rc, 0, 0x61);
    g.fill(s.rc, 1, 0x62);
    int16_t st = 99;
    auto m = map1(1, s.refs[0], false, &st);
    ASSERT_TRUE(m);
    uint8_t local[16] = {};
    hv::copy_segment seg = gref_to_local(1, s.refs[1], 0, local, 16);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    ASSERT_EQ(seg.status, GNTST_okay) << "the view of d1 is now cached";

    EXPECT_EQ(g.quit(), 0);
    for (int i = 0; i < 500 && cli->alive(1); ++i) ::usleep(10000);
    ASSERT_FALSE(cli->alive(1));

    EXPECT_FALSE(map1(1, s.refs[1], false, &st));
    EXPECT_EQ(st, GNTST_bad_domain);
    seg = gref_to_local(1, s.refs[1], 0, local, 16);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_bad_domain);
    seg = local_to_gref(local, 1, s.refs[1], 0, 16);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_bad_domain);

    // The dying domain's page lives on under the existing mapping.
    EXPECT_EQ(static_cast<const uint8_t*>(m->addr)[100], 0x61);
    EXPECT_EQ(tab->unmap(*m), 0);

    // A new domain under the same domid has its own, fresh grant table.
    granter again(host, 1);
    ASSERT_TRUE(again.up());
    seg = gref_to_local(1, s.refs[1], 0, local, 16);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_general_error) << "old ref means nothing in the new domain";
    reply s2 = again.share(0, 1, true);
    ASSERT_GE(s2.rc, 0);
    again.fill(s2.rc, 0, 0x99);
    seg = gref_to_local(1, s2.refs[0], 0, local, 16);
    ASSERT_EQ(tab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(local[0], 0x99);
}

// The broker drops the pins of a mapper that dies (Xen's
// gnttab_release_mappings), so the granter can end access again.
TEST_F(EmuGrant, DeadMappersPinsAreReleased) {
    granter g(host, 1);
    ASSERT_TRUE(g.up());
    reply s = g.share(2, 1, true);
    ASSERT_GE(s.rc, 0);
    test::chan ready;
    pid_t mapper = test::spawn([&] {
        auto d2 = host.domain(2, 0, true); // a driver domain, as above
        if (!d2) return 1;
        auto t = d2->open_gnttab();
        if (!t) return 2;
        const domid_t d1 = 1;
        auto m = (*t)->map(1, &d1, s.refs, true);
        if (!m) return 3;
        ready.put(1);
        ::pause(); // killed while holding the mapping
        return 0;
    });
    int one = 0;
    ASSERT_TRUE(ready.get(one));
    EXPECT_EQ(flags(1, s.refs[0]), GTF_permit_access | held);
    EXPECT_EQ(g.unshare(s.rc), -EBUSY);
    ::kill(mapper, SIGKILL);
    EXPECT_EQ(test::reap(mapper), -1);
    int rc = -EBUSY;
    for (int i = 0; i < 500 && (rc = g.unshare(s.rc)) == -EBUSY; ++i) ::usleep(10000);
    EXPECT_EQ(rc, 0);
}

} // namespace
