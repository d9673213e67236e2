// SPDX-License-Identifier: MIT
// Event channels of the emulated hypervisor, across processes.
#include <gtest/gtest.h>

#include "emu_host.hpp"

using namespace zc;
using zc::test::chan;

namespace {

// Child: dom1 allocates a port for dom0, sends it, waits for one event,
// answers with a notify, then waits for "done".
TEST(EmuEvtchn, NotifyRoundTripAcrossProcesses) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    chan to_parent, to_child;
    pid_t pid = test::spawn([&]() -> int {
        auto me = host.domain(1);
        if (!me) return 10;
        auto ev = me->open_evtchn();
        if (!ev) return 11;
        auto port = (*ev)->bind_unbound(0);
        if (!port) return 12;
        to_parent.put(uint32_t(*port));
        if (!test::readable((*ev)->fd(), 10000)) return 13;
        auto p = (*ev)->pending();
        if (!p || *p != *port) return 14;
        // Delivered ports are masked until unmask, as with Linux's evtchn driver.
        if ((*ev)->unmask(*p) != 0) return 15;
        if ((*ev)->notify(*port) != 0) return 16;
        int done;
        if (!to_child.get(done)) return 17;
        return 0;
    });
    uint32_t rport = 0;
    ASSERT_TRUE(to_parent.get(rport));
    auto ev = dom0->open_evtchn();
    ASSERT_TRUE(ev);
    auto local = (*ev)->bind_interdomain(1, rport);
    ASSERT_TRUE(local) << local.error();
    EXPECT_FALSE(test::readable((*ev)->fd(), 0)) << "nothing sent yet";
    ASSERT_EQ((*ev)->notify(*local), 0);
    ASSERT_TRUE(test::readable((*ev)->fd(), 10000)) << "no answer from dom1";
    auto got = (*ev)->pending();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, *local);
    EXPECT_EQ((*ev)->pending().error(), -EAGAIN) << "an event is delivered once";
    EXPECT_EQ((*ev)->counters().notifies, 1u);
    to_child.put(1);
    EXPECT_EQ(test::reap(pid), 0);
}

TEST(EmuEvtchn, MaskedPortHoldsEventUntilUnmask) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto a = host.domain(1);
    auto b = host.domain(2);
    ASSERT_TRUE(a && b);
    auto ea = a->open_evtchn();
    auto eb = b->open_evtchn();
    ASSERT_TRUE(ea && eb);
    auto pa = (*ea)->bind_unbound(2);
    ASSERT_TRUE(pa);
    auto pb = (*eb)->bind_interdomain(1, *pa);
    ASSERT_TRUE(pb);

    ASSERT_EQ((*eb)->notify(*pb), 0);
    ASSERT_TRUE(test::readable((*ea)->fd(), 1000));
    ASSERT_EQ(*(*ea)->pending(), *pa);
    // Now masked: a second notify must not wake the handle.
    ASSERT_EQ((*eb)->notify(*pb), 0);
    EXPECT_FALSE(test::readable((*ea)->fd(), 50));
    EXPECT_EQ((*ea)->pending().error(), -EAGAIN);
    // Unmask delivers the event that arrived while masked.
    ASSERT_EQ((*ea)->unmask(*pa), 0);
    ASSERT_TRUE(test::readable((*ea)->fd(), 1000));
    EXPECT_EQ(*(*ea)->pending(), *pa);
}

TEST(EmuEvtchn, BindValidation) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto a = host.domain(1);
    auto b = host.domain(2);
    auto c = host.domain(3);
    ASSERT_TRUE(a && b && c);
    auto ea = a->open_evtchn();
    auto eb = b->open_evtchn();
    auto ec = c->open_evtchn();
    ASSERT_TRUE(ea && eb && ec);
    auto pa = (*ea)->bind_unbound(2); // reserved for dom2 only
    ASSERT_TRUE(pa);
    EXPECT_EQ((*ec)->bind_interdomain(1, *pa).error(), -EINVAL) << "dom3 may not bind a port meant for dom2";
    EXPECT_EQ((*eb)->bind_interdomain(1, 4095).error(), -EINVAL) << "unallocated remote port";
    EXPECT_EQ((*eb)->bind_interdomain(1, 0).error(), -EINVAL) << "port 0 is reserved";
    EXPECT_EQ((*eb)->bind_interdomain(9, 1).error(), -ESRCH) << "no such domain";
    EXPECT_EQ((*eb)->notify(*pa), -EINVAL) << "dom2's handle does not own dom1's port";
    EXPECT_EQ((*ea)->notify(0), -EINVAL);
    EXPECT_EQ((*ea)->notify(100000), -EINVAL) << "port beyond the 2-level ABI";
    auto pb = (*eb)->bind_interdomain(1, *pa);
    ASSERT_TRUE(pb);
    EXPECT_EQ((*eb)->bind_interdomain(1, *pa).error(), -EINVAL) << "a port binds once";
    EXPECT_EQ((*eb)->unbind(*pb), 0);
    EXPECT_EQ((*eb)->unbind(*pb), -EINVAL) << "double unbind";
}

// A peer that dies leaves our end unbound (Xen's evtchn_close): notify is a
// silent no-op, and nothing crashes.
TEST(EmuEvtchn, PeerDeathUnbindsOurEnd) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto ev = dom0->open_evtchn();
    ASSERT_TRUE(ev);
    auto port = (*ev)->bind_unbound(4);
    ASSERT_TRUE(port);
    chan bound;
    pid_t pid = test::spawn([&]() -> int {
        auto me = host.domain(4);
        if (!me) return 10;
        auto e = me->open_evtchn();
        if (!e) return 11;
        auto p = (*e)->bind_interdomain(0, *port);
        if (!p) return 12;
        bound.put(1);
        (*e)->notify(*p);
        ::pause(); // until killed
        return 0;
    });
    int one;
    ASSERT_TRUE(bound.get(one));
    ASSERT_TRUE(test::readable((*ev)->fd(), 5000));
    EXPECT_EQ(*(*ev)->pending(), *port);
    auto* cli = hv::emu::client_of(*dom0);
    ASSERT_NE(cli, nullptr);
    EXPECT_EQ(cli->self_view().bindings[*port].state.load(), hv::emu::ecs_interdomain);
    ::kill(pid, SIGKILL);
    EXPECT_EQ(test::reap(pid), -1);
    // The broker notices the death asynchronously; bounded wait.
    for (int i = 0; i < 500 && cli->alive(4); i++) ::usleep(10000);
    EXPECT_FALSE(cli->alive(4));
    for (int i = 0; i < 500 && cli->self_view().bindings[*port].state.load() != hv::emu::ecs_unbound; i++)
        ::usleep(10000);
    EXPECT_EQ(cli->self_view().bindings[*port].state.load(), hv::emu::ecs_unbound);
    EXPECT_EQ((*ev)->notify(*port), 0);
}

// A domain destroyed and created again under the same domid (a guest's
// stack service killed and restarted) gets new event-channel handles with
// the same numbers as the dead one's. A notifier that already sent to the
// old incarnation must reach the new one's handle, not the dead eventfd:
// otherwise every event to the new domain is lost and it only sees its
// rings when it polls them on a timer.
TEST(EmuEvtchn, NotifyReachesARecreatedDomain) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto ev = dom0->open_evtchn();
    ASSERT_TRUE(ev);
    auto* cli = hv::emu::client_of(*dom0);
    ASSERT_NE(cli, nullptr);
    for (int incarnation = 0; incarnation < 2; incarnation++) {
        SCOPED_TRACE(incarnation);
        auto guest = host.domain(5);
        ASSERT_TRUE(guest);
        auto gev = guest->open_evtchn();
        ASSERT_TRUE(gev);
        auto gport = (*gev)->bind_unbound(0);
        ASSERT_TRUE(gport);
        auto local = (*ev)->bind_interdomain(5, *gport);
        ASSERT_TRUE(local) << local.error();
        ASSERT_EQ((*ev)->notify(*local), 0);
        EXPECT_TRUE(test::readable((*gev)->fd(), 5000)) << "the event went to another handle";
        auto p = (*gev)->pending();
        ASSERT_TRUE(p);
        EXPECT_EQ(*p, *gport);
        EXPECT_EQ((*ev)->unbind(*local), 0);
        // The domain ends with its last connection (asynchronously).
        gev->reset();
        guest.reset();
        for (int i = 0; i < 500 && cli->alive(5); i++) ::usleep(10000);
        ASSERT_FALSE(cli->alive(5));
    }
}

} // namespace
