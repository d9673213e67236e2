// SPDX-License-Identifier: MIT
// Lifetime of a client's views of other domains (stack/hv/emu/client.hpp,
// "Lifetime of the views"; docs/ARCHITECTURE.md, "The emulated hypervisor:
// lifetime of views"): a guest that dies and is re-created on its domid,
// as zc-vmbench's soak does, costs its backend nothing once its grants are
// unmapped and its channels unbound.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/grant.hpp"

using namespace zc;
using hv::gref_t;

namespace {

constexpr hv::domid_t guest = 5;

int open_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n - 1; // the directory's own fd
}

// Mappings of memfds (guest memory, grant tables, event-channel tables)
// in this process: their count and bytes.
struct memfd_maps {
    size_t count = 0, bytes = 0;
    bool operator==(const memfd_maps&) const = default;
};
memfd_maps memfd_mappings() {
    memfd_maps m;
    std::ifstream f("/proc/self/maps");
    std::string line;
    while (std::getline(f, line)) {
        if (line.find("/memfd:") == std::string::npos) continue;
        unsigned long lo = 0, hi = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
        ++m.count;
        m.bytes += hi - lo;
    }
    return m;
}
std::ostream& operator<<(std::ostream& o, const memfd_maps& m) {
    return o << m.count << " memfd mappings, " << m.bytes << " bytes";
}

// The broker (a thread of this process) closes a dead domain's fds after
// its registry slot says dead: wait, bounded, for the counts to settle.
template <class F, class T> T settle(F measure, const T& want) {
    T got = measure();
    for (int i = 0; i < 500 && !(got == want); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        got = measure();
    }
    return got;
}

class EmuViews : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(host.ok());
        dom0 = host.domain(0);
        ASSERT_TRUE(dom0);
        auto t = dom0->open_gnttab();
        ASSERT_TRUE(t);
        tab = std::move(*t);
        auto e = dom0->open_evtchn();
        ASSERT_TRUE(e);
        ev = std::move(*e);
        cli = hv::emu::client_of(*dom0);
        ASSERT_NE(cli, nullptr);
    }
    void wait_dead(hv::domid_t d) {
        for (int i = 0; i < 500 && cli->alive(d); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ASSERT_FALSE(cli->alive(d));
    }

    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::gnttab> tab;
    std::unique_ptr<hv::evtchn> ev;
    hv::emu::client* cli = nullptr;
};

// A guest that grants dom0 a page and binds a channel to it, which dom0
// maps, copies from and notifies; then the guest dies (its port closes, so
// the broker destroys it) and dom0 unmaps and unbinds, as a backend does
// when it removes the vif. Repeated: dom0's fds and memfd mappings stay at
// what they were before the first guest. Before the views had a lifetime,
// every generation of the guest cost dom0 its memory memfd (and the span
// it maps) and its handle's eventfd.
TEST_F(EmuViews, RecreatedGuestLeavesNoFdsOrMappings) {
    const int fds0 = open_fds();
    const memfd_maps maps0 = memfd_mappings();
    for (int round = 0; round < 12; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        auto g = host.domain(guest);
        ASSERT_TRUE(g);
        auto shr = g->open_gntshr();
        ASSERT_TRUE(shr);
        auto pages = (*shr)->share(0, 1, true);
        ASSERT_TRUE(pages);
        std::memset(pages->addr, 0x40 + round, 64);
        auto gev = g->open_evtchn();
        ASSERT_TRUE(gev);
        auto gport = (*gev)->bind_unbound(0);
        ASSERT_TRUE(gport);

        hv::domid_t d = guest;
        gref_t ref = pages->refs[0];
        int16_t st = -1;
        auto m = tab->map(1, &d, &ref, true, &st);
        ASSERT_TRUE(m) << st;
        EXPECT_EQ(static_cast<uint8_t*>(m->addr)[0], 0x40 + round);
        uint8_t buf[64] = {};
        hv::copy_segment s{};
        s.source.foreign = {ref, 0, guest};
        s.dest.virt = buf;
        s.len = sizeof buf;
        s.flags = GNTCOPY_source_gref;
        ASSERT_EQ(tab->copy(&s, 1), 0);
        EXPECT_EQ(s.status, GNTST_okay);
        EXPECT_EQ(buf[63], 0x40 + round);
        auto port = ev->bind_interdomain(guest, *gport);
        ASSERT_TRUE(port);
        EXPECT_EQ(ev->notify(*port), 0);
        EXPECT_TRUE(test::readable((*gev)->fd(), 5000)) << "the guest got the event";

        // The guest dies with dom0's mapping and binding still in place.
        gev->reset();
        shr->reset();
        g.reset();
        wait_dead(guest);
        s.status = GNTST_okay;
        ASSERT_EQ(tab->copy(&s, 1), 0);
        EXPECT_EQ(s.status, GNTST_bad_domain);
        EXPECT_EQ(ev->notify(*port), 0) << "a dead peer's event goes nowhere";
        // The backend lets go.
        EXPECT_EQ(tab->unmap(*m), 0);
        EXPECT_EQ(ev->unbind(*port), 0);

        EXPECT_EQ(settle(open_fds, fds0), fds0);
        EXPECT_EQ(settle(memfd_mappings, maps0), maps0);
        const auto vs = cli->stats();
        EXPECT_EQ(vs.current + vs.retired + vs.handle_fds, 0u)
            << vs.current << " current, " << vs.retired << " retired views, " << vs.handle_fds << " handle fds";
    }
}

// A guest that lives on while its frontend restarts (a new event-channel
// handle each time, as a netfront reloaded in a new process of the domain
// has): dom0 notifies it each time, then both sides close. dom0 keeps no
// eventfd per dead handle: a handle no port of the guest is bound to any
// more is let go by the next sweep (dom0's unbind).
TEST_F(EmuViews, ClosedHandlesOfALiveGuestLeaveNoEventfds) {
    auto g = host.domain(guest);
    ASSERT_TRUE(g);
    const int fds0 = open_fds();
    for (int round = 0; round < 10; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        auto gev = g->open_evtchn();
        ASSERT_TRUE(gev);
        auto gport = (*gev)->bind_unbound(0);
        ASSERT_TRUE(gport);
        auto port = ev->bind_interdomain(guest, *gport);
        ASSERT_TRUE(port);
        EXPECT_EQ(ev->notify(*port), 0);
        EXPECT_TRUE(test::readable((*gev)->fd(), 5000)) << "the guest got the event";
        gev->reset(); // the frontend's process goes: its handle and ports
        EXPECT_EQ(ev->unbind(*port), 0);
        EXPECT_EQ(cli->stats().handle_fds, 0u);
        EXPECT_EQ(settle(open_fds, fds0), fds0);
    }
    EXPECT_EQ(cli->stats().current, 1u) << "the live guest's view stays";
}

// A view in use is not freed under its user: a mapping of a dead guest's
// grant keeps the view (the unpin writes its active table) until unmapped,
// and a re-created guest gets a fresh view meanwhile.
TEST_F(EmuViews, MappingHoldsTheViewOfADeadGuest) {
    auto g = host.domain(guest);
    ASSERT_TRUE(g);
    auto shr = g->open_gntshr();
    ASSERT_TRUE(shr);
    auto pages = (*shr)->share(0, 1, false);
    ASSERT_TRUE(pages);
    hv::domid_t d = guest;
    gref_t ref = pages->refs[0];
    int16_t st = -1;
    auto m = tab->map(1, &d, &ref, false, &st);
    ASSERT_TRUE(m) << st;
    shr->reset();
    g.reset();
    wait_dead(guest);
    cli->sweep();
    EXPECT_EQ(cli->stats().retired, 1u) << "retired, but held by the mapping";
    auto g2 = host.domain(guest);
    ASSERT_TRUE(g2);
    auto v2 = cli->view(guest);
    ASSERT_TRUE(v2);
    EXPECT_EQ(cli->stats().current, 1u);
    EXPECT_EQ(tab->unmap(*m), 0);
    EXPECT_EQ(cli->stats().retired, 0u) << "freed by the unmap";
    EXPECT_EQ((*v2)->dom, guest) << "the new guest's view is untouched";
    EXPECT_TRUE(cli->alive(guest));
}

// A copy in flight when its granter dies and a new domain takes the domid:
// the copier found the old view, and another thread (here the test) fetches
// the new one, which retires the old. The old view must outlive the copy
// (its memory is read, its active table written by the release), and be
// freed as soon as the copy's read section closes. Without the read
// section, the fetch unmapped the old view under the copy (SIGSEGV).
TEST_F(EmuViews, ViewInUseByACopyIsNotFreedUnderIt) {
    auto g = host.domain(guest);
    ASSERT_TRUE(g);
    auto shr = g->open_gntshr();
    ASSERT_TRUE(shr);
    auto pages = (*shr)->share(0, 1, false);
    ASSERT_TRUE(pages);
    std::memset(pages->addr, 0x5a, 128);
    struct gate {
        std::promise<void> in_copy, go;
        std::shared_future<void> go_f = go.get_future().share();
    } gt;
    hv::emu::test_hooks::set_copy_hook(
        [](void* arg) noexcept {
            auto* p = static_cast<gate*>(arg);
            p->in_copy.set_value();
            (void)p->go_f.wait_for(std::chrono::seconds(20));
        },
        &gt);
    uint8_t buf[128] = {};
    hv::copy_segment s{};
    s.source.foreign = {pages->refs[0], 0, guest};
    s.dest.virt = buf;
    s.len = sizeof buf;
    s.flags = GNTCOPY_source_gref;
    auto copier = std::async(std::launch::async, [&] { return tab->copy(&s, 1); });
    ASSERT_EQ(gt.in_copy.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
    hv::emu::test_hooks::set_copy_hook(nullptr, nullptr); // this copy only
    shr->reset();
    g.reset();
    wait_dead(guest);
    auto g2 = host.domain(guest);
    ASSERT_TRUE(g2);
    ASSERT_TRUE(cli->view(guest)); // the new generation: the old view is retired
    EXPECT_EQ(cli->stats().retired, 1u) << "retired, not freed: a copy is using it";
    gt.go.set_value();
    EXPECT_EQ(copier.get(), 0);
    EXPECT_EQ(s.status, GNTST_okay);
    EXPECT_EQ(buf[127], 0x5a);
    EXPECT_EQ(cli->stats().retired, 0u) << "freed when the copy's read section closed";
    EXPECT_EQ(cli->stats().current, 1u);
}

// Copies and notifications from another thread while the granter dies and
// is re-created over and over: every copy either succeeds or fails with a
// Xen code, never touches a freed view (ASan/TSan runs of this test), and
// nothing is left afterwards.
TEST_F(EmuViews, CopyWhileGranterIsRecreated) {
    const int fds0 = open_fds();
    std::atomic<bool> stop{false};
    std::atomic<uint32_t> ok{0}, failed{0};
    std::atomic<gref_t> ref{0};
    std::thread copier([&] {
        uint8_t buf[128];
        while (!stop.load()) {
            const gref_t r = ref.load();
            if (r == 0) {
                std::this_thread::yield();
                continue;
            }
            hv::copy_segment s{};
            s.source.foreign = {r, 0, guest};
            s.dest.virt = buf;
            s.len = sizeof buf;
            s.flags = GNTCOPY_source_gref;
            if (tab->copy(&s, 1) != 0) ++failed;
            else if (s.status == GNTST_okay) ++ok;
            else if (s.status == GNTST_bad_domain || s.status == GNTST_general_error) ++failed;
            else ADD_FAILURE() << "status " << s.status;
        }
    });
    for (int round = 0; round < 20; ++round) {
        auto g = host.domain(guest);
        ASSERT_TRUE(g);
        auto shr = g->open_gntshr();
        ASSERT_TRUE(shr);
        auto pages = (*shr)->share(0, 1, false);
        ASSERT_TRUE(pages);
        ref.store(pages->refs[0]);
        const uint32_t before = ok.load();
        for (int i = 0; i < 500 && ok.load() == before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        shr->reset();
        g.reset();
        wait_dead(guest);
    }
    stop = true;
    copier.join();
    EXPECT_GT(ok.load(), 0u);
    cli->sweep();
    EXPECT_EQ(settle(open_fds, fds0), fds0);
    const auto vs = cli->stats();
    EXPECT_EQ(vs.current + vs.retired, 0u) << vs.current << " current, " << vs.retired << " retired";
}

} // namespace
