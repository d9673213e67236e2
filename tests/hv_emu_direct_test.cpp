// SPDX-License-Identifier: MIT
// An unprivileged domain maps and grant-copies another domain's grant to it,
// as Xen allows (GNTTABOP_map_grant_ref / GNTTABOP_copy by the domain the
// entry names), validated by the broker (stack/hv/emu/foreign.hpp): Xen's
// GNTST_* codes, GTF_readonly honoured, the granter unable to end access
// while the grant is mapped, and the mapper given no page of the granter
// that is not granted to it. docs/ARCHITECTURE.md, "The emulated
// hypervisor's authentication".
#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/emu_port.hpp"
#include "hv/emu/layout.hpp"

extern "C" {
#include <xen/grant_table.h>
}

using namespace zc;
using hv::domid_t;
using hv::gref_t;
using hv::page_size;

namespace {

constexpr domid_t S = 1, D = 2, E = 3;

// S (the sender), D (the receiver) and E (a third guest), unprivileged
// domains of this process; dom0 is not involved.
class EmuDirect : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(host.ok());
        s = host.domain(S);
        d = host.domain(D);
        e = host.domain(E);
        ASSERT_TRUE(s && d && e);
        auto sh = s->open_gntshr();
        auto dt = d->open_gnttab();
        ASSERT_TRUE(sh && dt);
        shr = std::move(*sh);
        dtab = std::move(*dt);
    }
    void TearDown() override {
        for (auto& p : shares)
            if (p.addr) {
                EXPECT_EQ(shr->unshare(p), 0);
            }
    }
    // S's exportable share (a region of its own) of `n` pages to `peer`,
    // page i filled with `fill + i`.
    hv::shared_pages& share(domid_t peer, uint32_t n, bool writable, uint8_t fill) {
        auto p = shr->share_exportable(peer, n, writable);
        EXPECT_TRUE(p) << std::strerror(-p.error());
        shares.push_back(p ? std::move(*p) : hv::shared_pages{});
        hv::shared_pages& r = shares.back();
        for (uint32_t i = 0; i < r.count; ++i)
            std::memset(static_cast<uint8_t*>(r.addr) + i * page_size, fill + i, page_size);
        return r;
    }
    // D maps `n` grants of `granter`; statuses in st.
    result<hv::mapping> map(const hv::shared_pages& p, bool writable, int16_t* st,
                                domid_t granter = S) {
        std::vector<domid_t> doms(p.refs.size(), granter);
        return dtab->map(uint32_t(p.refs.size()), doms.data(), p.refs.data(), writable, st);
    }
    // One grant-copy segment by D: (granter, ref) -> buf, or buf -> (granter, ref).
    int16_t copy(gref_t ref, void* buf, uint16_t len, bool into_grant, domid_t granter = S) {
        hv::copy_segment seg{};
        if (into_grant) {
            seg.source.virt = buf;
            seg.dest.foreign = {ref, 0, granter};
            seg.flags = GNTCOPY_dest_gref;
        } else {
            seg.source.foreign = {ref, 0, granter};
            seg.dest.virt = buf;
            seg.flags = GNTCOPY_source_gref;
        }
        seg.len = len;
        EXPECT_EQ(dtab->copy(&seg, 1), 0);
        return seg.status;
    }
    uint16_t flags_of(gref_t ref) {
        return __atomic_load_n(&hv::emu::client_of(*s)->self_view().gnttab[ref].flags, __ATOMIC_ACQUIRE);
    }

    test::emu_host host;
    std::unique_ptr<hv::port> s, d, e;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<hv::gnttab> dtab;
    std::vector<hv::shared_pages> shares;
};

bool all_bytes(const void* p, size_t n, uint8_t v) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i)
        if (b[i] != v) return false;
    return true;
}

} // namespace

TEST_F(EmuDirect, ReceiverMapsSendersGrantReadOnlyAndReadsItInPlace) {
    auto& p = share(D, 3, false, 0x40);
    int16_t st[3] = {-1, -1, -1};
    auto m = map(p, false, st);
    ASSERT_TRUE(m) << std::strerror(-m.error()) << " " << hv::gntst_name(st[0]);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(st[i], GNTST_okay);
    const auto* in = static_cast<const uint8_t*>(m->addr);
    for (uint32_t i = 0; i < 3; ++i)
        EXPECT_TRUE(all_bytes(in + i * page_size, page_size, uint8_t(0x40 + i))) << "page " << i;
    // The same memory, not a copy: S's later write shows in D's mapping.
    static_cast<uint8_t*>(p.addr)[page_size + 7] = 0xee;
    EXPECT_EQ(in[page_size + 7], 0xee);
    // Read-only: the mapping cannot be made writable.
    EXPECT_EQ(::mprotect(m->addr, page_size, PROT_READ | PROT_WRITE), -1);
    EXPECT_EQ(errno, EACCES);
    EXPECT_TRUE(flags_of(p.refs[0]) & GTF_reading);
    EXPECT_FALSE(flags_of(p.refs[0]) & GTF_writing);
    // And one grant copy takes the bytes too.
    uint8_t buf[100] = {};
    EXPECT_EQ(copy(p.refs[2], buf, sizeof buf, false), GNTST_okay);
    EXPECT_TRUE(all_bytes(buf, sizeof buf, 0x42));
    EXPECT_EQ(dtab->counters().maps, 3u);
    EXPECT_EQ(dtab->unmap(*m), 0);
    EXPECT_FALSE(flags_of(p.refs[0]) & GTF_reading) << "the last pin gone, GTF_reading is cleared";
    // D still has none of S's memory or tables.
    EXPECT_EQ(hv::emu::client_of(*d)->view(S).error(), -EPERM);
}

TEST_F(EmuDirect, WritableGrantMapsWritableAndCopiesBothWays) {
    auto& p = share(D, 1, true, 0x10);
    int16_t st = -1;
    auto m = map(p, true, &st);
    ASSERT_TRUE(m) << hv::gntst_name(st);
    static_cast<uint8_t*>(m->addr)[5] = 0x77;
    EXPECT_EQ(static_cast<uint8_t*>(p.addr)[5], 0x77) << "D's write reaches S's page";
    EXPECT_TRUE(flags_of(p.refs[0]) & GTF_writing);
    EXPECT_EQ(dtab->unmap(*m), 0);
    EXPECT_FALSE(flags_of(p.refs[0]) & (GTF_reading | GTF_writing));
    uint8_t buf[64];
    std::memset(buf, 0x99, sizeof buf);
    EXPECT_EQ(copy(p.refs[0], buf, sizeof buf, true), GNTST_okay);
    EXPECT_TRUE(all_bytes(p.addr, sizeof buf, 0x99));
}

TEST_F(EmuDirect, GrantsNotNamingTheMapperAreRefusedWithXensCodes) {
    auto& toE = share(E, 1, false, 0x20);
    int16_t st = -1;
    // Xen's _set_status_v1: an entry whose domid is not the caller's is
    // GNTST_general_error, for map and copy alike.
    EXPECT_FALSE(map(toE, false, &st));
    EXPECT_EQ(st, GNTST_general_error);
    uint8_t buf[16] = {};
    EXPECT_EQ(copy(toE.refs[0], buf, sizeof buf, false), GNTST_general_error);
    EXPECT_TRUE(all_bytes(buf, sizeof buf, 0)) << "nothing of E's grant reached D";
    EXPECT_FALSE(flags_of(toE.refs[0]) & GTF_reading);
    // Past the table: GNTST_bad_gntref; a ref S never granted: general_error.
    const gref_t past = hv::emu::default_nr_grefs, unused = 5;
    const domid_t from = S;
    EXPECT_FALSE(dtab->map(1, &from, &past, false, &st));
    EXPECT_EQ(st, GNTST_bad_gntref);
    EXPECT_EQ(copy(past, buf, sizeof buf, false), GNTST_bad_gntref);
    EXPECT_FALSE(dtab->map(1, &from, &unused, false, &st));
    EXPECT_EQ(st, GNTST_general_error);
    // No such domain: GNTST_bad_domain.
    const domid_t nobody = 9;
    EXPECT_FALSE(dtab->map(1, &nobody, &toE.refs[0], false, &st));
    EXPECT_EQ(st, GNTST_bad_domain);
    EXPECT_EQ(copy(toE.refs[0], buf, sizeof buf, false, nobody), GNTST_bad_domain);
    // E, whom the grant names, maps it.
    auto et = e->open_gnttab();
    ASSERT_TRUE(et);
    auto m = (*et)->map(1, &from, &toE.refs[0], false, &st);
    ASSERT_TRUE(m) << hv::gntst_name(st);
    EXPECT_TRUE(all_bytes(m->addr, page_size, 0x20));
    EXPECT_EQ((*et)->unmap(*m), 0);
}

TEST_F(EmuDirect, ReadOnlyGrantRefusesWritableMapAndCopyInto) {
    auto& p = share(D, 1, false, 0x30);
    int16_t st = -1;
    // Xen: "Attempt to write-pin a r/o grant entry", GNTST_general_error.
    EXPECT_FALSE(map(p, true, &st));
    EXPECT_EQ(st, GNTST_general_error);
    uint8_t buf[32];
    std::memset(buf, 0xab, sizeof buf);
    EXPECT_EQ(copy(p.refs[0], buf, sizeof buf, true), GNTST_general_error);
    EXPECT_TRUE(all_bytes(p.addr, page_size, 0x30)) << "S's read-only page is unchanged";
    EXPECT_FALSE(flags_of(p.refs[0]) & (GTF_reading | GTF_writing)) << "nothing left pinned";
    // A read-only map of it still works.
    auto m = map(p, false, &st);
    ASSERT_TRUE(m) << hv::gntst_name(st);
    EXPECT_EQ(dtab->unmap(*m), 0);
}

TEST_F(EmuDirect, GranterCannotEndAccessWhileMappedAndCanAfterUnmap) {
    auto& p = share(D, 2, false, 0x50);
    const gref_t ref = p.refs[0];
    int16_t st[2];
    auto m = map(p, false, st);
    ASSERT_TRUE(m);
    EXPECT_EQ(shr->unshare(p), -EBUSY) << "end_foreign_access fails while D maps it";
    EXPECT_TRUE(all_bytes(m->addr, page_size, 0x50)) << "and D's mapping is untouched";
    EXPECT_EQ(dtab->unmap(*m), 0);
    EXPECT_EQ(shr->unshare(p), 0);
    // Revoked: the refs are D's no more (a new share may reuse them).
    uint8_t buf[8];
    EXPECT_EQ(copy(ref, buf, sizeof buf, false), GNTST_general_error);
    shares.clear();
}

TEST_F(EmuDirect, RevokedAndReusedRegionIsNotReachedThroughOldGrants) {
    auto& p = share(D, 1, false, 0x60);
    const gref_t old = p.refs[0];
    int16_t st;
    auto m = map(p, false, &st);
    ASSERT_TRUE(m);
    EXPECT_EQ(dtab->unmap(*m), 0);
    EXPECT_EQ(shr->unshare(p), 0);
    shares.clear();
    // S's next share (to E) takes the same ref and region slot: fresh memory,
    // a new generation, not D's.
    auto& q = share(E, 1, false, 0x61);
    ASSERT_EQ(q.refs[0], old);
    EXPECT_FALSE(map(q, false, &st));
    EXPECT_EQ(st, GNTST_general_error);
    uint8_t buf[8] = {};
    EXPECT_EQ(copy(old, buf, sizeof buf, false), GNTST_general_error);
    EXPECT_TRUE(all_bytes(buf, sizeof buf, 0));
}

// What D receives is only pages granted to it: a grant in S's base memory,
// or in a region some page of which is not D's, is refused
// (GNTST_permission_denied: the emulation cannot hand out a single page of
// a memfd); the fd D gets is exactly the region, read-only for a read-only
// pin.
TEST_F(EmuDirect, ReceiverNeverGetsPagesNotGrantedToIt) {
    auto secret = shr->share(D, 1, false); // base memory, granted to D
    ASSERT_TRUE(secret);
    std::memset(secret->addr, 0x5e, page_size);
    int16_t st = -1;
    const domid_t from = S;
    EXPECT_FALSE(dtab->map(1, &from, &secret->refs[0], false, &st));
    EXPECT_EQ(st, GNTST_permission_denied);
    uint8_t buf[16] = {};
    EXPECT_EQ(copy(secret->refs[0], buf, sizeof buf, false), GNTST_permission_denied);
    EXPECT_TRUE(all_bytes(buf, sizeof buf, 0));
    EXPECT_FALSE(flags_of(secret->refs[0]) & GTF_reading) << "the refused pin was released";
    EXPECT_EQ(shr->unshare(*secret), 0);

    // A region of two pages, the second re-granted by S to E: D's grant of
    // the first would show D the second.
    auto& mixed = share(D, 2, false, 0x70);
    auto* ent = hv::emu::client_of(*s)->self_view().gnttab;
    __atomic_store_n(&ent[mixed.refs[1]].domid, E, __ATOMIC_RELEASE);
    EXPECT_FALSE(dtab->map(1, &from, &mixed.refs[0], false, &st));
    EXPECT_EQ(st, GNTST_permission_denied);
    EXPECT_EQ(copy(mixed.refs[0], buf, sizeof buf, false), GNTST_permission_denied);
    __atomic_store_n(&ent[mixed.refs[1]].domid, D, __ATOMIC_RELEASE);

    // The wire: the fd is the region's 3 pages and nothing else, read-only.
    auto& pool = share(D, 3, false, 0x80);
    auto* dc = hv::emu::client_of(*d);
    auto fp = dc->grant_pin(S, pool.refs[1], true, true);
    ASSERT_EQ(fp.status, GNTST_okay);
    struct stat sb{};
    ASSERT_EQ(::fstat(fp.fd, &sb), 0);
    EXPECT_EQ(sb.st_size, off_t(3 * page_size));
    EXPECT_EQ(::fcntl(fp.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    EXPECT_EQ(fp.offset, page_size);
    EXPECT_EQ(::mmap(nullptr, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fp.fd, 0), MAP_FAILED);
    EXPECT_EQ(errno, EACCES);
    ::close(fp.fd);
    EXPECT_EQ(dc->grant_unpin(S, fp.gen, pool.refs[1], true), 0);
    EXPECT_EQ(dc->grant_unpin(S, fp.gen, pool.refs[1], true), -EINVAL) << "a pin D does not hold";
    EXPECT_FALSE(flags_of(pool.refs[1]) & GTF_reading);
    // Unpinning what it never pinned releases nobody else's pin: E's.
    auto& toE = share(E, 1, false, 0x90);
    auto et = e->open_gnttab();
    ASSERT_TRUE(et);
    auto em = (*et)->map(1, &from, &toE.refs[0], false, &st);
    ASSERT_TRUE(em);
    EXPECT_EQ(dc->grant_unpin(S, fp.gen, toE.refs[0], true), -EINVAL);
    EXPECT_TRUE(flags_of(toE.refs[0]) & GTF_reading);
    EXPECT_EQ((*et)->unmap(*em), 0);
}

// D dies holding a mapping: its pins go (Xen gnttab_release_mappings), so
// S can end access. D runs in a child process the test kills.
TEST_F(EmuDirect, MapperDeathReleasesItsMappings) {
    constexpr domid_t D2 = 4; // a receiver of its own, in a child process
    auto& p = share(D2, 2, false, 0xa0);
    test::chan out;
    const std::vector<gref_t> refs = p.refs;
    pid_t child = test::spawn([&] {
        auto port = host.domain(D2);
        if (!port) return 1;
        auto t = port->open_gnttab();
        if (!t) return 2;
        const domid_t doms[2] = {S, S};
        int16_t st[2];
        auto m = (*t)->map(2, doms, refs.data(), false, st);
        int ok = m && all_bytes(m->addr, page_size, 0xa0) ? 1 : 0;
        out.put(ok);
        ::pause(); // until killed, mapping held
        return 0;
    });
    int ok = 0;
    ASSERT_TRUE(out.get(ok));
    ASSERT_EQ(ok, 1);
    EXPECT_TRUE(flags_of(refs[0]) & GTF_reading);
    EXPECT_EQ(shr->unshare(p), -EBUSY);
    ::kill(child, SIGKILL);
    EXPECT_EQ(test::reap(child), -1);
    // The broker notices the connection close and destroys D.
    int rc = -1;
    for (int i = 0; i < 500 && rc != 0; ++i) {
        rc = shr->unshare(p);
        if (rc) ::usleep(10000);
    }
    EXPECT_EQ(rc, 0) << "S ends access once D is gone";
    EXPECT_FALSE(flags_of(refs[0]) & (GTF_reading | GTF_writing));
    shares.clear();
}

// S dies while D maps its pages: D's mapping stays (a dying Xen domain's
// pages live until the last mapping goes), new maps get GNTST_bad_domain,
// and D's unmap touches nothing of the next domain behind the domid.
TEST_F(EmuDirect, GranterDeathKeepsTheMappingAndUnmapIsClean) {
    auto& p = share(D, 1, false, 0xb0);
    const gref_t ref = p.refs[0];
    int16_t st;
    auto m = map(p, false, &st);
    ASSERT_TRUE(m);
    shares.clear();
    shr.reset();
    s.reset(); // S's only connection closes: the broker destroys S
    auto* dc = hv::emu::client_of(*d);
    for (int i = 0; i < 500 && dc->alive(S); ++i) ::usleep(10000);
    ASSERT_FALSE(dc->alive(S));
    EXPECT_TRUE(all_bytes(m->addr, page_size, 0xb0));
    const domid_t from = S;
    EXPECT_FALSE(dtab->map(1, &from, &ref, false, &st));
    EXPECT_EQ(st, GNTST_bad_domain);
    // A new S behind the same domid grants the same ref to D.
    s = host.domain(S);
    ASSERT_TRUE(s);
    auto sh = s->open_gntshr();
    ASSERT_TRUE(sh);
    shr = std::move(*sh);
    auto& q = share(D, 1, false, 0xb1);
    ASSERT_EQ(q.refs[0], ref);
    auto m2 = map(q, false, &st);
    ASSERT_TRUE(m2) << hv::gntst_name(st);
    EXPECT_EQ(dtab->unmap(*m), 0) << "the old mapping goes";
    EXPECT_TRUE(flags_of(ref) & GTF_reading) << "and the new S's pin stays";
    EXPECT_TRUE(all_bytes(m2->addr, page_size, 0xb1));
    EXPECT_EQ(dtab->unmap(*m2), 0);
    EXPECT_FALSE(flags_of(ref) & GTF_reading);
}

// The receiver's one copy: a batch from S's grants into its own memory,
// consecutive segments of one grant sharing one pin; every pin is gone
// after the batch. (A gref destination of D's own must name D, as on Xen:
// D's grant to E is GNTST_general_error even for D.)
TEST_F(EmuDirect, BatchCopiesFromSendersGrants) {
    auto& p = share(D, 2, false, 0xc0);
    std::vector<uint8_t> pool(page_size, 0);
    hv::copy_segment segs[3]{};
    const uint16_t lens[3] = {100, 200, 300};
    const gref_t from[3] = {p.refs[0], p.refs[0], p.refs[1]};
    size_t at = 0;
    for (int i = 0; i < 3; ++i) {
        segs[i].source.foreign = {from[i], uint16_t(i * 10), S};
        segs[i].dest.virt = pool.data() + at;
        segs[i].len = lens[i];
        segs[i].flags = GNTCOPY_source_gref;
        at += lens[i];
    }
    ASSERT_EQ(dtab->copy(segs, 3), 0);
    for (auto& sg : segs) EXPECT_EQ(sg.status, GNTST_okay) << hv::gntst_name(sg.status);
    EXPECT_TRUE(all_bytes(pool.data(), 300, 0xc0));
    EXPECT_TRUE(all_bytes(pool.data() + 300, 300, 0xc1));
    EXPECT_TRUE(all_bytes(pool.data() + 600, page_size - 600, 0));
    EXPECT_EQ(dtab->counters().copy_bytes, 600u);
    EXPECT_FALSE(flags_of(p.refs[0]) & GTF_reading);
    EXPECT_FALSE(flags_of(p.refs[1]) & GTF_reading);
    EXPECT_EQ(shr->unshare(p), 0) << "no pin left behind";
    shares.clear();

    auto dsh = d->open_gntshr();
    ASSERT_TRUE(dsh);
    auto own = (*dsh)->share(E, 1, true);
    ASSERT_TRUE(own);
    hv::copy_segment seg{};
    seg.source.virt = pool.data();
    seg.dest.foreign = {own->refs[0], 0, DOMID_SELF};
    seg.len = 10;
    seg.flags = GNTCOPY_dest_gref;
    ASSERT_EQ(dtab->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_general_error);
    EXPECT_EQ((*dsh)->unshare(*own), 0);
}

// A share granted to E and, with grant_also, read-only to D too (a zc
// socket's pool on the direct path, docs/ARCHITECTURE.md "Direct path"):
// D maps it read-only (never writable), cannot have it ended under its
// mapping, and after end_also maps nothing; a second extra domain, the
// share's own peer or ourselves are refused; unshare ends both sets.
TEST_F(EmuDirect, GrantAlsoLendsAShareToASecondDomainReadOnly) {
    hv::shared_pages& p = share(E, 2, false, 0x40);
    // Granted to E only: D is refused.
    int16_t st[2] = {};
    EXPECT_FALSE(map(p, false, st));
    auto refs = shr->grant_also(p, D, false);
    ASSERT_TRUE(refs) << refs.error();
    ASSERT_EQ(refs->size(), 2u);
    EXPECT_EQ(shr->grant_also(p, D, false).error(), -EINVAL); // one extra domain
    EXPECT_EQ(shr->grant_also(p, E, false).error(), -EINVAL);
    EXPECT_EQ(shr->grant_also(p, S, false).error(), -EINVAL);
    hv::shared_pages as_d = p;
    as_d.refs = *refs;
    EXPECT_FALSE(map(as_d, true, st)); // read-only to D
    EXPECT_EQ(st[0], GNTST_general_error);
    auto m = map(as_d, false, st);
    ASSERT_TRUE(m);
    EXPECT_EQ(static_cast<const uint8_t*>(m->addr)[page_size + 5], 0x41);
    // Mapped: neither the extra grants nor the share can be ended.
    EXPECT_EQ(shr->end_also(p), -EBUSY);
    hv::shared_pages copy_of = p;
    EXPECT_EQ(shr->unshare(copy_of), -EBUSY);
    EXPECT_EQ(dtab->unmap(*m), 0);
    EXPECT_EQ(shr->end_also(p), 0);
    EXPECT_EQ(shr->end_also(p), -EINVAL);
    EXPECT_FALSE(map(as_d, false, st)); // ended
    // Again, then unshare ends both sets (TearDown's unshare).
    ASSERT_TRUE(shr->grant_also(p, D, false));
}
