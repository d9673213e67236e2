// SPDX-License-Identifier: MIT
// The emulated hypervisor as an isolation boundary between domains
// (docs/ARCHITECTURE.md, "Trust boundaries"; hv/emu/broker.hpp, "Who gets
// what"): a hostile guest process tries to hang, read or break another
// domain and gets an error, while the others keep working. Whatever could
// hang or crash on a broken emulation runs in a child process that the test
// reaps with a bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <functional>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/fdpass.hpp"
#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/proto.hpp"

extern "C" {
#include <xen/grant_table.h>
}

using namespace zc;
using hv::domid_t;
using hv::gref_t;

namespace {

constexpr uint8_t pattern = 0x5a;

// What a guest child tells the test: the gref of the page it shared, filled
// with `pattern`; rc < 0 if it could not.
struct shared_msg {
    int32_t rc = -1;
    gref_t ref = 0;
};

// A guest domain in a child process: shares one page with `peer`, fills it,
// runs `hostile` on its own client (its return value goes back as rc when
// negative), reports, then waits for `quit` (or the test's end).
pid_t spawn_guest(test::emu_host& host, domid_t self, domid_t peer, test::chan& out, test::chan& quit,
                  const std::function<int(hv::emu::client&, gref_t)>& hostile) {
    return test::spawn([&, self, peer] {
        shared_msg m;
        auto port = host.domain(self);
        if (!port) {
            out.put(m);
            return 1;
        }
        auto shr = port->open_gntshr();
        if (!shr) {
            out.put(m);
            return 1;
        }
        auto s = (*shr)->share(peer, 1, true);
        if (!s) {
            out.put(m);
            return 2;
        }
        std::memset(s->addr, pattern, hv::page_size);
        m.ref = s->refs[0];
        m.rc = hostile ? hostile(*hv::emu::client_of(*port), m.ref) : 0;
        out.put(m);
        int q = 0;
        quit.get(q, 60000);
        return 0;
    });
}

// dom0 (the caller's gnttab) copies the first 64 bytes of (d, ref): the
// status, and whether the bytes were `pattern`.
int16_t copy_from(hv::gnttab& tab, domid_t d, gref_t ref, bool* same) {
    uint8_t buf[64] = {};
    hv::copy_segment seg{};
    seg.source.foreign = {ref, 0, d};
    seg.dest.virt = buf;
    seg.len = sizeof buf;
    seg.flags = GNTCOPY_source_gref;
    if (tab.copy(&seg, 1) != 0) return -9999;
    *same = true;
    for (uint8_t b : buf) *same = *same && b == pattern;
    return seg.status;
}

// Xen's hypervisor state is not guest memory: a guest that sets the lock
// word of its own grants' active entries (it used to have the active table
// mapped read-write) holds nothing that dom0's grant copy waits for.
TEST(EmuIsolation, GuestHoldingItsActiveLockCannotHangTheCopier) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto tab = dom0->open_gnttab();
    ASSERT_TRUE(tab);
    test::chan out, quit;
    pid_t guest = spawn_guest(host, 1, 0, out, quit, [](hv::emu::client& c, gref_t ref) {
        // Every writable active table the guest can reach, locked for good.
        hv::emu::active_entry* act = c.self_view().active;
        if (!act) return 0; // none at all: nothing to lock
        act[ref].lock.store(1);
        return 0;
    });
    shared_msg m;
    ASSERT_TRUE(out.get(m));
    ASSERT_EQ(m.rc, 0);
    // The copier runs in a child: on a broken emulation it spins forever.
    pid_t copier = test::spawn([&] {
        bool same = false;
        const int16_t st = copy_from(**tab, 1, m.ref, &same);
        if (st != GNTST_okay) return 10;
        return same ? 0 : 11;
    });
    EXPECT_EQ(test::reap(copier), 0) << "dom0's copy from the guest's grant must complete";
    quit.put(1);
    EXPECT_EQ(test::reap(guest), 0);
}

// The bound on the lock: whoever leaves an active entry locked (a privileged
// mapper process that died in the middle, say) makes the operation fail with
// GNTST_general_error instead of hanging the next caller.
TEST(EmuIsolation, StuckActiveLockFailsTheCopyInsteadOfHanging) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto tab = dom0->open_gnttab();
    ASSERT_TRUE(tab);
    auto* cli = hv::emu::client_of(*dom0);
    test::chan out, quit;
    pid_t guest = spawn_guest(host, 1, 0, out, quit, nullptr);
    shared_msg m;
    ASSERT_TRUE(out.get(m));
    ASSERT_EQ(m.rc, 0);
    auto v = cli->view(1);
    ASSERT_TRUE(v);
    (*v)->active[m.ref].lock.store(1); // dom0 is privileged: it has the shared table
    pid_t copier = test::spawn([&] {
        bool same = false;
        return copy_from(**tab, 1, m.ref, &same) == GNTST_general_error ? 0 : 10;
    });
    EXPECT_EQ(test::reap(copier), 0) << "a stuck lock fails the copy";
    (*v)->active[m.ref].lock.store(0);
    bool same = false;
    EXPECT_EQ(copy_from(**tab, 1, m.ref, &same), GNTST_okay) << "and nothing else is left behind";
    EXPECT_TRUE(same);
    // The broker, releasing a dead domain's pins, does not hang on it either.
    (*v)->active[m.ref].lock.store(1);
    pid_t dies = test::spawn([&] { return host.domain(3) ? 0 : 1; });
    EXPECT_EQ(test::reap(dies), 0);
    pid_t asks = test::spawn([&] {
        auto c = hv::emu::client::connect_admin(host.sock(), nullptr, host.admin_token());
        if (!c) return 1;
        for (int i = 0; i < 100; ++i) {
            auto ids = (*c)->list_domains();
            if (!ids) return 2;
            if (std::find(ids->begin(), ids->end(), domid_t{3}) == ids->end()) return 0;
            ::usleep(50000);
        }
        return 3;
    });
    EXPECT_EQ(test::reap(asks, 60000), 0) << "the broker keeps serving";
    (*v)->active[m.ref].lock.store(0);
    quit.put(1);
    EXPECT_EQ(test::reap(guest), 0);
}

// A raw connection that has not said hello is nobody: get_domain (which
// used to hand out every domain's memory, grant and active tables) is
// refused, and so are the administrative ops without the admin token.
TEST(EmuIsolation, GetDomainWithoutHelloIsRefused) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, host.sock().c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    auto ask = [&](hv::emu::proto::op code, uint32_t a, int* nfds) {
        hv::emu::proto::request r{};
        r.magic = hv::emu::proto::magic;
        r.code = code;
        r.a = a;
        EXPECT_EQ(fdpass::send(fd, &r, sizeof r, nullptr, 0), long(sizeof r));
        char buf[hv::emu::proto::max_reply];
        int fds[hv::emu::proto::max_fds];
        *nfds = hv::emu::proto::max_fds;
        long n = fdpass::recv(fd, buf, sizeof buf, fds, nfds);
        for (int i = 0; i < *nfds; ++i) ::close(fds[i]);
        hv::emu::proto::reply_header h{};
        if (n < long(sizeof h)) return -9999;
        std::memcpy(&h, buf, sizeof h);
        return h.rc;
    };
    int nfds = -1;
    EXPECT_EQ(ask(hv::emu::proto::op::get_domain, 0, &nfds), -ENOTCONN);
    EXPECT_EQ(nfds, 0) << "no descriptor of dom0 leaves the broker";
    EXPECT_EQ(ask(hv::emu::proto::op::get_evtchn, 0, &nfds), -ENOTCONN);
    EXPECT_EQ(nfds, 0);
    EXPECT_EQ(ask(hv::emu::proto::op::list_domains, 0, &nfds), -EACCES);
    EXPECT_EQ(ask(hv::emu::proto::op::shutdown, 0, &nfds), -EACCES);
    ::close(fd);
    auto still = host.domain(1);
    EXPECT_TRUE(still) << "the broker still serves";
}

// Creating a domain takes the admin token; attaching takes that domain's own
// token (or the admin token); one domain's token opens no other domain.
TEST(EmuIsolation, CreateAndAttachNeedTheRightToken) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    hv::emu::connect_options o;
    o.sock = host.sock();
    o.dom = 1;
    o.token = std::string(64, '0');
    std::string why;
    EXPECT_EQ(hv::emu::client::connect(o, &why).error(), -EACCES) << why;
    o.token = host.admin_token();
    auto a = hv::emu::client::connect(o, &why);
    ASSERT_TRUE(a) << why;
    o.dom = 2;
    auto b = hv::emu::client::connect(o, &why);
    ASSERT_TRUE(b) << why;
    o.attach = true;
    o.dom = 1;
    o.token = (*b)->domain_token();
    EXPECT_EQ(hv::emu::client::connect(o, &why).error(), -EACCES) << "dom2's token does not open dom1";
    o.token = (*a)->domain_token();
    auto a2 = hv::emu::client::connect(o, &why);
    ASSERT_TRUE(a2) << why;
    EXPECT_EQ((*a2)->self(), 1);
    o.attach = false;
    o.dom = 3;
    EXPECT_EQ(hv::emu::client::connect(o, &why).error(), -EACCES) << "a domain's token creates no domain";
    o.privileged = true;
    EXPECT_EQ(hv::emu::client::connect(o, &why).error(), -EACCES) << "nor a privileged one";
}

// An unprivileged guest gets no other guest's memory, grant table or active
// table, so it cannot map or copy what is not granted to it through the
// hypervisor; it can still notify (event-channel tables only). dom0 keeps
// copying from the same guest.
TEST(EmuIsolation, GuestCannotGetAnotherGuestsMemory) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto tab = dom0->open_gnttab();
    ASSERT_TRUE(tab);
    test::chan out1, quit1, out2, quit2;
    // Guest 1 grants its page to guest 2 and to nobody else.
    pid_t victim = spawn_guest(host, 1, 2, out1, quit1, nullptr);
    shared_msg m1;
    ASSERT_TRUE(out1.get(m1));
    ASSERT_EQ(m1.rc, 0);
    const gref_t ref = m1.ref;
    pid_t hostile = spawn_guest(host, 2, 0, out2, quit2, [ref](hv::emu::client& c, gref_t) {
        auto v = c.view(1);
        if (v || v.error() != -EPERM) return -10; // guest 1's memory and tables
        auto e = c.evtchn_view(1);
        if (!e || !(*e)->bindings || !(*e)->bitmaps) return -11;
        if ((*e)->mem || (*e)->mem_fd >= 0 || (*e)->gnttab || (*e)->active) return -12;
        auto self = c.view(2);
        if (!self || !(*self)->mem) return -13; // its own, of course
        return 0;
    });
    shared_msg m2;
    ASSERT_TRUE(out2.get(m2));
    EXPECT_EQ(m2.rc, 0) << "-10: got guest 1's memory; -11/-12: event-channel view wrong; -13: own view";
    // Through the grant interface: the grant names guest 2, but its page is
    // in guest 1's base memory, which the broker never hands to another
    // guest (hv/emu/foreign.hpp): permission_denied.
    pid_t mapper = test::spawn([&] {
        hv::emu::connect_options o; // another process of guest 2
        o.sock = host.sock();
        o.dom = 2;
        o.attach = true;
        o.token = host.admin_token();
        auto p = hv::emu::open_port(o, nullptr);
        if (!p) return 1;
        auto t = (*p)->open_gnttab();
        if (!t) return 2;
        const domid_t d1 = 1;
        int16_t st = 0;
        auto m = (*t)->map(1, &d1, &ref, false, &st);
        if (m || st != GNTST_permission_denied) return 3;
        bool same = false;
        if (copy_from(**t, 1, ref, &same) != GNTST_permission_denied) return 4;
        return 0;
    });
    EXPECT_EQ(test::reap(mapper), 0);
    // dom0 still reads guest 1 (the grant is for dom2, so the copy is
    // refused as Xen refuses it, but the domain is reachable).
    bool same = false;
    EXPECT_EQ(copy_from(**tab, 1, ref, &same), GNTST_general_error);
    auto v1 = hv::emu::client_of(*dom0)->view(1);
    ASSERT_TRUE(v1) << "dom0 is privileged";
    EXPECT_NE((*v1)->mem, nullptr);
    quit1.put(1);
    quit2.put(1);
    EXPECT_EQ(test::reap(victim), 0);
    EXPECT_EQ(test::reap(hostile), 0);
}

// Guest memory is sealed against shrink and grow: a guest cannot truncate
// its memory under dom0's mapping (dom0 would take SIGBUS), nor add seals
// that would refuse dom0's writable mappings.
TEST(EmuIsolation, MemoryCannotBeTruncated) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto tab = dom0->open_gnttab();
    ASSERT_TRUE(tab);
    test::chan out, quit, out2, quit2;
    pid_t guest = spawn_guest(host, 1, 0, out, quit, nullptr);
    shared_msg m;
    ASSERT_TRUE(out.get(m));
    ASSERT_EQ(m.rc, 0);
    bool same = false;
    ASSERT_EQ(copy_from(**tab, 1, m.ref, &same), GNTST_okay); // dom0 has guest 1 mapped
    ASSERT_TRUE(same);
    // A second process of guest 1 (it has the memfd of its own memory) tries
    // every way to change its size or seals.
    pid_t hostile = test::spawn([&] {
        hv::emu::connect_options o;
        o.sock = host.sock();
        o.dom = 1;
        o.attach = true;
        o.token = host.admin_token();
        auto c = hv::emu::client::connect(o, nullptr);
        if (!c) return 1;
        const int fd = (*c)->self_view().mem_fd;
        if (fd < 0) return 2;
        if (::ftruncate(fd, 0) == 0 || errno != EPERM) return 3;
        if (::ftruncate(fd, off_t(hv::page_size)) == 0 || errno != EPERM) return 4;
        if (::ftruncate(fd, off_t(1) << 40) == 0 || errno != EPERM) return 5;
        if (::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0 || errno != EPERM) return 6;
        return 0;
    });
    EXPECT_EQ(test::reap(hostile), 0) << "3..5: the memory could be resized; 6: resealed";
    // dom0, in a child so that a SIGBUS on a broken emulation fails the test
    // instead of killing it, still copies from the guest's page.
    pid_t reader = test::spawn([&] {
        bool s = false;
        return copy_from(**tab, 1, m.ref, &s) == GNTST_okay ? 0 : 10;
    });
    EXPECT_EQ(test::reap(reader), 0);
    quit.put(1);
    EXPECT_EQ(test::reap(guest), 0);
}

} // namespace
