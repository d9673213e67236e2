// SPDX-License-Identifier: MIT
// Step 1 of the Xen lab: the real-Xen hypervisor port in dom0 against two
// live domUs, each running zc-xenlab-peer (peer.c), which granted pages and
// offered an event channel through xenstore. The expected GNTST_* codes are
// those the emulated port is tested for (hv_emu_grant_test.cpp); where Xen
// and the emulation disagree, the emulation is wrong.
//
// Needs XENLAB_A and XENLAB_B (the two domids); skips without them, so it is
// harmless in an ordinary test run.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <sstream>
#include <string>
#include <vector>

#include "hv/hv.hpp"
#include "hv/xen/xen_port.hpp"
#include "hv/xs.hpp"

namespace {

using namespace zc::hv;

uint64_t fnv1a(const unsigned char* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// What one peer published (see peer.c).
struct peer_info {
    domid_t dom = 0;
    gref_t rw[2] = {};
    gref_t ro = 0, other = 0, ended = 0;
    evtchn_port_t port = 0;
};

constexpr gref_t huge_ref = 0xFFFFF; // past any grant table Xen 4.17 lets a domain grow

class HvXenLab : public ::testing::Test {
protected:
    void SetUp() override {
        const char* a = std::getenv("XENLAB_A");
        const char* b = std::getenv("XENLAB_B");
        if (!a || !b) GTEST_SKIP() << "XENLAB_A/XENLAB_B unset: runs in the Xen lab's dom0 only";
        std::string why;
        auto p = xen::open_port(&why);
        ASSERT_TRUE(p.ok()) << why;
        _port = std::move(p.value());
        auto x = xs::open("");
        ASSERT_TRUE(x.ok()) << std::strerror(-x.error());
        _xs = std::move(x.value());
        _a = load(domid_t(std::atoi(a)));
        _b = load(domid_t(std::atoi(b)));
        auto t = _port->open_gnttab();
        ASSERT_TRUE(t.ok());
        _tab = std::move(t.value());
    }

    std::string rd(domid_t d, const char* key) {
        auto v = _xs->read("/local/domain/" + std::to_string(d) + "/data/xenlab/" + key);
        EXPECT_TRUE(v.ok()) << "dom" << d << " " << key << ": " << std::strerror(-v.error());
        return v.ok() ? *v : std::string();
    }

    peer_info load(domid_t d) {
        peer_info p;
        p.dom = d;
        EXPECT_EQ(rd(d, "ready"), "1");
        std::istringstream(rd(d, "rw")) >> p.rw[0] >> p.rw[1];
        p.ro = gref_t(std::stoul(rd(d, "ro")));
        p.other = gref_t(std::stoul(rd(d, "other")));
        p.ended = gref_t(std::stoul(rd(d, "ended")));
        p.port = evtchn_port_t(std::stoul(rd(d, "port")));
        return p;
    }

    static unsigned char fill(const peer_info& p, int page) { return (unsigned char)(0x10 * p.dom + page); }

    std::unique_ptr<port> _port;
    std::unique_ptr<xs> _xs;
    std::unique_ptr<gnttab> _tab;
    peer_info _a, _b;
};

copy_segment seg_gref_to_local(domid_t d, gref_t r, uint16_t off, void* dst, uint16_t len) {
    copy_segment s{};
    s.source.foreign = {r, off, d};
    s.dest.virt = dst;
    s.len = len;
    s.flags = GNTCOPY_source_gref;
    s.status = 99;
    return s;
}

copy_segment seg_local_to_gref(const void* src, domid_t d, gref_t r, uint16_t off, uint16_t len) {
    copy_segment s{};
    s.source.virt = const_cast<void*>(src);
    s.dest.foreign = {r, off, d};
    s.len = len;
    s.flags = GNTCOPY_dest_gref;
    s.status = 99;
    return s;
}

copy_segment seg_gref_to_gref(domid_t sd, gref_t sr, uint16_t so, domid_t dd, gref_t dr, uint16_t doff,
                              uint16_t len) {
    copy_segment s{};
    s.source.foreign = {sr, so, sd};
    s.dest.foreign = {dr, doff, dd};
    s.len = len;
    s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
    s.status = 99;
    return s;
}

TEST_F(HvXenLab, MapSeesTheGuestsBytesAndWritesThrough) {
    for (const peer_info* p : {&_a, &_b}) {
        auto m = _tab->map(1, &p->dom, &p->rw[0], true);
        ASSERT_TRUE(m.ok()) << "dom" << p->dom << ": " << std::strerror(-m.error());
        auto* bytes = static_cast<unsigned char*>(m->addr);
        EXPECT_EQ(bytes[0], fill(*p, 0));
        EXPECT_EQ(bytes[4095], fill(*p, 0));
        bytes[100] = 0x5A; // seen by the next test's copy
        EXPECT_EQ(_tab->unmap(*m), 0);

        auto r = _tab->map(1, &p->dom, &p->ro, false);
        ASSERT_TRUE(r.ok()) << std::strerror(-r.error());
        EXPECT_EQ(static_cast<unsigned char*>(r->addr)[7], fill(*p, 2));
        EXPECT_EQ(_tab->unmap(*r), 0);
    }
    EXPECT_EQ(_tab->counters().maps, 4u);
    EXPECT_EQ(_tab->counters().unmaps, 4u);
}

TEST_F(HvXenLab, MapErrors) {
    // gntdev hides Xen's per-op status: every page of a failed batch reads
    // GNTST_general_error (see hv.hpp).
    struct bad {
        domid_t dom;
        gref_t ref;
        bool writable;
        const char* why;
    } cases[] = {
        {_a.dom, _a.ro, true, "writable map of a read-only grant"},
        {_a.dom, _a.other, false, "granted to another domain"},
        {_a.dom, _a.ended, false, "access ended"},
        {_a.dom, huge_ref, false, "ref past the table"},
        {77, _a.rw[0], false, "no such domain"},
    };
    for (const bad& c : cases) {
        int16_t st = 99;
        auto m = _tab->map(1, &c.dom, &c.ref, c.writable, &st);
        EXPECT_FALSE(m.ok()) << c.why;
        EXPECT_EQ(st, GNTST_general_error) << c.why;
        if (m.ok()) _tab->unmap(*m);
    }
    // A batch with one bad grant maps nothing.
    const domid_t doms[2] = {_a.dom, _a.dom};
    const gref_t refs[2] = {_a.rw[0], _a.other};
    EXPECT_FALSE(_tab->map(2, doms, refs, false).ok());
    EXPECT_EQ(_tab->counters().maps, 0u);
}

TEST_F(HvXenLab, GrefToGrefCopyBetweenTwoGuests) {
    // A's rw page 1 (0x10*A+1) into B's rw page 1 at offset 0, and A's rw
    // page 0 (0x10*A, byte 100 now 0x5A from the map test) into B at 2048.
    copy_segment segs[] = {
        seg_gref_to_gref(_a.dom, _a.rw[1], 0, _b.dom, _b.rw[1], 0, 2048),
        seg_gref_to_gref(_a.dom, _a.rw[0], 0, _b.dom, _b.rw[1], 2048, 2048),
    };
    ASSERT_EQ(_tab->copy(segs, 2), 0);
    EXPECT_EQ(segs[0].status, GNTST_okay) << gntst_name(segs[0].status);
    EXPECT_EQ(segs[1].status, GNTST_okay) << gntst_name(segs[1].status);
    EXPECT_EQ(_tab->counters().copy_batches, 1u);
    EXPECT_EQ(_tab->counters().copy_bytes, 4096u);

    // Read B's page back by copy (never mapped by dom0 in between).
    alignas(4096) static unsigned char got[4096];
    copy_segment back = seg_gref_to_local(_b.dom, _b.rw[1], 0, got, 4096);
    ASSERT_EQ(_tab->copy(&back, 1), 0);
    ASSERT_EQ(back.status, GNTST_okay);
    std::vector<unsigned char> want(4096, fill(_a, 1));
    std::memset(want.data() + 2048, fill(_a, 0), 2048);
    want[2048 + 100] = 0x5A;
    EXPECT_EQ(std::memcmp(got, want.data(), 4096), 0);
}

TEST_F(HvXenLab, CopyErrorsGetXensStatusPerSegment) {
    alignas(4096) static unsigned char local[4096];
    std::memset(local, 0x33, sizeof local);
    const domid_t a = _a.dom;
    std::vector<copy_segment> segs;
    std::vector<int16_t> want;
    auto add = [&](copy_segment s, int16_t w) {
        segs.push_back(s);
        want.push_back(w);
    };
    add(seg_gref_to_local(a, _a.ro, 4000, local, 97), GNTST_bad_copy_arg);      // crosses the source page
    add(seg_local_to_gref(local, a, _a.rw[0], 4095, 2), GNTST_bad_copy_arg);    // crosses the dest page
    add(seg_local_to_gref(local, a, _a.rw[0], 200, 64), GNTST_okay);
    add(seg_local_to_gref(local, 77, _a.rw[0], 0, 10), GNTST_bad_domain);
    add(seg_gref_to_gref(77, _a.ro, 0, a, huge_ref, 0, 10), GNTST_bad_domain);  // domains before grefs
    add(seg_gref_to_local(a, huge_ref, 0, local, 10), GNTST_bad_gntref);
    add(seg_gref_to_local(a, _a.ended, 0, local, 10), GNTST_general_error);     // access ended
    add(seg_gref_to_local(a, _a.other, 0, local, 10), GNTST_general_error);     // granted to B
    add(seg_local_to_gref(local, a, _a.ro, 0, 10), GNTST_general_error);        // into a r/o grant
    add(seg_gref_to_gref(a, _a.rw[0], 0, a, _a.ro, 0, 10), GNTST_general_error);
    add(seg_gref_to_local(a, _a.rw[0], 100, local + 2000, 16), GNTST_okay);
    add(seg_gref_to_local(domid_self, huge_ref, 0, local, 10), GNTST_bad_gntref); // DOMID_SELF is dom0
    // A null local side: gntdev would fail the whole ioctl with -EFAULT; the
    // port refuses the segment alone, whatever its length.
    add(seg_local_to_gref(nullptr, a, _a.rw[0], 0, 10), GNTST_bad_copy_arg);
    add(seg_gref_to_local(a, _a.rw[0], 0, nullptr, 0), GNTST_bad_copy_arg);
    // An empty segment reaches no hypercall: nothing about its grant is checked.
    add(seg_gref_to_local(a, huge_ref, 0, local, 0), GNTST_okay);

    ASSERT_EQ(_tab->copy(segs.data(), uint32_t(segs.size())), 0);
    for (size_t i = 0; i < segs.size(); ++i)
        EXPECT_EQ(segs[i].status, want[i]) << "segment " << i << ": " << gntst_name(segs[i].status)
                                           << " want " << gntst_name(want[i]);
    EXPECT_EQ(local[2000], 0x5A) << "byte 100 of A's page 0, written through the map";
    EXPECT_EQ(local[2001], fill(_a, 0));
}

// dom0 binds to A's unbound port, notifies; A answers by writing the hash
// of its rw page 1 into xenstore (dom0 sees it through a watch) and
// notifying back.
TEST_F(HvXenLab, EventChannelAndWatchAcrossDomains) {
    for (const peer_info* p : {&_b, &_a}) {
        auto ev = _port->open_evtchn();
        ASSERT_TRUE(ev.ok());
        auto local = (*ev)->bind_interdomain(p->dom, p->port);
        ASSERT_TRUE(local.ok()) << std::strerror(-local.error());
        const std::string dir = "/local/domain/" + std::to_string(p->dom) + "/data/xenlab";
        ASSERT_EQ(_xs->watch(dir, "lab"), 0);

        // The page's expected contents, read by copy.
        alignas(4096) static unsigned char page[4096];
        copy_segment s = seg_gref_to_local(p->dom, p->rw[1], 0, page, 4096);
        ASSERT_EQ(_tab->copy(&s, 1), 0);
        ASSERT_EQ(s.status, GNTST_okay);
        char want[17];
        std::snprintf(want, sizeof want, "%016llx", (unsigned long long)fnv1a(page, 4096));

        ASSERT_EQ((*ev)->notify(*local), 0);
        bool got_event = false, got_hash = false;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while ((!got_event || !got_hash) && std::chrono::steady_clock::now() < deadline) {
            pollfd pfd[2] = {{(*ev)->fd(), POLLIN, 0}, {_xs->fileno(), POLLIN, 0}};
            ::poll(pfd, 2, 1000);
            if (auto e = (*ev)->pending(); e.ok()) {
                EXPECT_EQ(*e, *local);
                EXPECT_EQ((*ev)->unmask(*e), 0);
                got_event = true;
            }
            while (auto w = _xs->read_watch()) {
                if (w->path == dir + "/hash1") got_hash = true;
            }
        }
        EXPECT_TRUE(got_event) << "no event back from dom" << p->dom;
        EXPECT_TRUE(got_hash) << "no watch event for dom" << p->dom << "'s hash1";
        EXPECT_EQ(rd(p->dom, "hash1"), want);
        EXPECT_EQ(_xs->unwatch(dir, "lab"), 0);
        EXPECT_EQ((*ev)->unbind(*local), 0);
    }
}

} // namespace
