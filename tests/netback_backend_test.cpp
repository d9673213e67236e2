// SPDX-License-Identifier: MIT
// zc-netback's control plane against a frontend scripted through xenstore:
// the keys and states Linux xen-netfront writes, and the ones a buggy or
// hostile frontend writes.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <poll.h>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

#include "capture_stderr.hpp"
#include "common/log.hpp"
#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "ring/netif_ring.hpp"
#include "ring/zc_direct.hpp"

using namespace zc;
using namespace zc::netback;

namespace {

struct rig {
    test::emu_host host;
    std::unique_ptr<hv::port> dom0, guest;
    std::unique_ptr<hv::xs> xs0, xsg;
    std::unique_ptr<backend> be;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<hv::evtchn> ev;
    hv::shared_pages rings;
    std::vector<hv::shared_pages> old_rings;
    hv::domid_t fe = 1;

    explicit rig(backend_options o = {}) {
        dom0 = host.domain(0);
        guest = host.domain(fe);
        if (!dom0 || !guest) return;
        xs0 = std::move(*hv::xs::open(dom0->xenstore_path()));
        xsg = std::move(*hv::xs::open(guest->xenstore_path()));
        std::string why;
        auto b = backend::create(*dom0, o, &why);
        EXPECT_TRUE(b) << why;
        if (b) be = std::move(*b);
        shr = std::move(*guest->open_gntshr());
        ev = std::move(*guest->open_evtchn());
    }
    ~rig() {
        be.reset();
        if (shr && rings.count) shr->unshare(rings);
        for (auto& o : old_rings)
            if (shr && o.count) shr->unshare(o);
    }

    std::string fe_dir(uint32_t devid = 0) { return frontend_dir(fe, devid); }
    std::string be_dir(uint32_t devid = 0) { return backend_dir(0, fe, devid); }

    // Run the backend until `cond` holds (bounded: 5 s).
    bool until(const std::function<bool()>& cond) {
        for (int i = 0; i < 500; i++) {
            if (cond()) return true;
            pollfd p{be->fd(), POLLIN, 0};
            ::poll(&p, 1, 10);
            be->process();
        }
        return cond();
    }
    std::string be_key(const std::string& k, uint32_t devid = 0) {
        auto v = xs0->read(be_dir(devid) + "/" + k);
        return v ? *v : "";
    }
    bool be_state_is(int s, uint32_t devid = 0) { return be_key("state", devid) == std::to_string(s); }

    // What xen-netfront's setup_netfront() and talk_to_netback() do: two
    // shared ring pages, an event channel, the keys.
    void frontend_keys(bool rx_copy = true, int queues = 0, bool fresh_rings = false) {
        if (fresh_rings && rings.count) {
            // A restarted netfront: new ring pages, new grant references
            // (the old pages stay granted until the backend lets them go).
            old_rings.push_back(std::move(rings));
            rings = {};
        }
        if (!rings.count) {
            auto p = shr->share(0, 2, true);
            ASSERT_TRUE(p);
            rings = std::move(*p);
            ring::tx_front_ring().init(rings.addr); // SHARED_RING_INIT
            ring::rx_front_ring().init(static_cast<uint8_t*>(rings.addr) + hv::page_size);
        }
        auto port = ev->bind_unbound(0);
        ASSERT_TRUE(port);
        std::string d = fe_dir();
        if (queues > 0) {
            xsg->write(d + "/multi-queue-num-queues", std::to_string(queues));
            d += "/queue-0";
        }
        xsg->write(d + "/tx-ring-ref", std::to_string(rings.refs[0]));
        xsg->write(d + "/rx-ring-ref", std::to_string(rings.refs[1]));
        xsg->write(d + "/event-channel", std::to_string(*port));
        if (rx_copy) xsg->write(fe_dir() + "/request-rx-copy", "1");
        xsg->write(fe_dir() + "/feature-rx-notify", "1");
        xsg->write(fe_dir() + "/feature-sg", "1");
        xsg->write(fe_dir() + "/feature-gso-tcpv4", "1");
    }
    void fe_state(int s) { xsg->write(fe_dir() + "/state", std::to_string(s)); }
};

TEST(NetbackToolstack, MacParsing) {
    mac_addr m{};
    EXPECT_TRUE(parse_mac("00:16:3e:0a:0B:ff", m, 0));
    EXPECT_EQ(m, (mac_addr{0x00, 0x16, 0x3e, 0x0a, 0x0b, 0xff}));
    EXPECT_EQ(to_string(m), "00:16:3e:0a:0b:ff");
    for (const char* bad : {"", "00:16:3e:0a:0b", "00:16:3e:0a:0b:fg", "00-16-3e-0a-0b-ff", "00:16:3e:0a:0b:ff:"})
        EXPECT_FALSE(parse_mac(bad, m, 0)) << bad;
}

TEST(NetbackToolstack, CreatesBothDirectoriesWithPermissions) {
    rig r;
    ASSERT_TRUE(r.be);
    std::string why;
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, &why), 0) << why;
    EXPECT_EQ(vif_create(*r.xs0, s, &why), -EEXIST);
    EXPECT_EQ(*r.xs0->read(r.fe_dir() + "/backend"), r.be_dir());
    EXPECT_EQ(*r.xs0->read(r.be_dir() + "/frontend"), r.fe_dir());
    // The guest owns its frontend directory and can read the backend's.
    EXPECT_EQ(r.xsg->write(r.fe_dir() + "/probe", "x"), 0);
    EXPECT_TRUE(r.xsg->read(r.be_dir() + "/mac"));
    EXPECT_EQ(r.xsg->write(r.be_dir() + "/state", "4"), -EACCES) << "a guest must not write the backend's state";
    s.frontend = 0;
    EXPECT_EQ(vif_create(*r.xs0, s, &why), -EINVAL);
}

TEST(NetbackBackend, ProbeOffersFeaturesAndWaits) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    // xen-netfront refuses a backend without feature-rx-copy (-ENODEV).
    EXPECT_EQ(r.be_key("feature-rx-copy"), "1");
    EXPECT_EQ(r.be_key("feature-rx-flip"), "0");
    EXPECT_EQ(r.be_key("feature-sg"), "1");
    EXPECT_EQ(r.be_key("feature-gso-tcpv4"), "1");
    EXPECT_EQ(r.be_key("feature-gso-tcpv6"), "1");
    EXPECT_EQ(r.be_key("feature-ipv6-csum-offload"), "1");
    EXPECT_EQ(r.be_key("feature-split-event-channels"), "1");
    EXPECT_EQ(r.be_key("multi-queue-max-queues"), "4");
    EXPECT_EQ(r.be_key("hotplug-status"), "connected");
}

TEST(NetbackBackend, ConnectsWhenFrontendConnects) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys();
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << r.be_key("error");
    auto vifs = r.be->dp().vifs();
    ASSERT_EQ(vifs.size(), 1u);
    EXPECT_EQ(vifs[0].frontend, r.fe);
    EXPECT_EQ(vifs[0].queues, 1u);
    EXPECT_EQ(vifs[0].mac, default_mac(r.fe, 0));

    // Closing and Closed tear the vif down; Initialising again re-probes.
    r.fe_state(XenbusStateClosing);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    EXPECT_TRUE(r.be->dp().vifs().empty());
    r.fe_state(XenbusStateClosed);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosed); }));
    r.fe_state(XenbusStateInitialising);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys();
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << r.be_key("error");
    EXPECT_EQ(r.be->dp().vifs().size(), 1u);
}

TEST(NetbackBackend, RefusesFrontendWithoutRxCopy) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys(false);
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    EXPECT_NE(r.be_key("error").find("rx-copy"), std::string::npos) << r.be_key("error");
    EXPECT_TRUE(r.be->dp().vifs().empty());
}

TEST(NetbackBackend, RefusesTooManyQueues) {
    backend_options o;
    o.max_queues = 2;
    rig r(o);
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys(true, 3);
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    EXPECT_NE(r.be_key("error").find("exceeding the maximum of 2"), std::string::npos) << r.be_key("error");
}

TEST(NetbackBackend, GarbageRingRefsAreRefusedNotTrusted) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys();
    r.xsg->write(r.fe_dir() + "/tx-ring-ref", "12abc");
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    EXPECT_TRUE(r.be->dp().vifs().empty());
    // A well-formed number that is not a grant for us: the map fails.
    r.fe_state(XenbusStateClosed);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosed); }));
    r.fe_state(XenbusStateInitialising);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.xsg->write(r.fe_dir() + "/tx-ring-ref", "4000");
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    EXPECT_FALSE(r.be_key("error").empty());
}

TEST(NetbackBackend, FrontendDeathRemovesTheVif) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    auto xs0 = std::move(*hv::xs::open(dom0->xenstore_path()));
    std::string why;
    auto be = backend::create(*dom0, {}, &why);
    ASSERT_TRUE(be) << why;
    test::chan ready;
    pid_t pid = test::spawn([&]() -> int {
        auto g = host.domain(2);
        if (!g) return 10;
        auto xsg = hv::xs::open(g->xenstore_path());
        auto shr = g->open_gntshr();
        auto ev = g->open_evtchn();
        if (!xsg || !shr || !ev) return 11;
        auto rings = (*shr)->share(0, 2, true);
        if (!rings) return 12;
        ring::tx_front_ring().init(rings->addr); // SHARED_RING_INIT
        ring::rx_front_ring().init(static_cast<uint8_t*>(rings->addr) + hv::page_size);
        auto port = (*ev)->bind_unbound(0);
        int go;
        if (!port || !ready.get(go)) return 13;
        std::string d = frontend_dir(2, 0);
        (*xsg)->write(d + "/tx-ring-ref", std::to_string(rings->refs[0]));
        (*xsg)->write(d + "/rx-ring-ref", std::to_string(rings->refs[1]));
        (*xsg)->write(d + "/event-channel", std::to_string(*port));
        (*xsg)->write(d + "/request-rx-copy", "1");
        (*xsg)->write(d + "/state", "4");
        ::pause();
        return 0;
    });
    vif_spec s;
    s.frontend = 2;
    // The child must exist as a domain before its directories are made.
    auto* cli = hv::emu::client_of(*dom0);
    for (int i = 0; i < 500 && !cli->alive(2); i++) ::usleep(10000);
    ASSERT_EQ(vif_create(*xs0, s, &why), 0) << why;
    ready.put(1);
    auto until = [&](const std::function<bool()>& c) {
        for (int i = 0; i < 500 && !c(); i++) {
            pollfd p{(*be)->fd(), POLLIN, 0};
            ::poll(&p, 1, 10);
            (*be)->process();
        }
        return c();
    };
    ASSERT_TRUE(until([&] { return (*be)->dp().vifs().size() == 1; }));
    ::kill(pid, SIGKILL);
    test::reap(pid);
    ASSERT_TRUE(until([&] { return (*be)->dp().vifs().empty(); })) << "vif not torn down after the guest died";
    EXPECT_TRUE(until([&] { return !xs0->read(backend_dir(0, 2, 0)); })) << "backend directory left behind";
    EXPECT_TRUE((*be)->devices().empty());
}

// ---- Hardening: the XenbusState transitions Linux netfront really uses ----

// Connect rig `r`'s frontend (devid 0) and wait for Connected.
void connect_frontend(rig& r) {
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys();
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << r.be_key("error");
    ASSERT_EQ(r.be->dp().vifs().size(), 1u);
}

// Linux xen-netback frontend_changed(Initialising) while Connected:
// set_backend_state(InitWait) disconnects (rings unmapped, channels
// unbound) and the next Connected maps the rings the frontend publishes now.
TEST(NetbackHardening, Item10_InitialisingAfterConnectedReconnects) {
    rig r;
    ASSERT_TRUE(r.be);
    ASSERT_NO_FATAL_FAILURE(connect_frontend(r));
    const auto before = r.be->dp().hv_counters();
    EXPECT_EQ(before.maps, 2u) << "one TX and one RX ring page";

    r.fe_state(XenbusStateInitialising);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }))
        << "backend state " << r.be_key("state");
    EXPECT_TRUE(r.be->dp().vifs().empty()) << "old rings still served";
    EXPECT_EQ(r.be->dp().hv_counters().unmaps, 2u) << "old rings still mapped";
    // The old pages are the guest's again: it can end their grants.
    EXPECT_EQ(r.shr->unshare(r.rings), 0);

    r.frontend_keys(true, 0, true);
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << r.be_key("error");
    EXPECT_EQ(r.be->dp().vifs().size(), 1u);
    EXPECT_EQ(r.be->dp().hv_counters().maps, 4u) << "the new rings were not mapped";
    EXPECT_EQ(r.be_key("error"), "");
}

// A frontend restarting in a loop (netfront reloaded, resume): each time the
// backend lets the old rings go (the guest can end their grants) and maps
// the new ones; at the end every mapping is undone.
TEST(NetbackHardening, Item10_ReconnectLoopReturnsToBaseline) {
    rig r;
    ASSERT_TRUE(r.be);
    ASSERT_NO_FATAL_FAILURE(connect_frontend(r));
    for (int i = 0; i < 30; ++i) {
        r.fe_state(XenbusStateInitialising);
        ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); })) << i;
        ASSERT_TRUE(r.be->dp().vifs().empty()) << i;
        r.frontend_keys(true, 0, true);
        ASSERT_EQ(r.shr->unshare(r.old_rings.back()), 0) << "round " << i << ": old rings still mapped";
        r.old_rings.pop_back();
        r.fe_state(XenbusStateConnected);
        ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << i << " " << r.be_key("error");
    }
    r.fe_state(XenbusStateClosed);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosed); }));
    const auto c = r.be->dp().hv_counters();
    EXPECT_EQ(c.maps, 62u);
    EXPECT_EQ(c.unmaps, c.maps);
    EXPECT_EQ(r.be->dp().bounce_in_use(), 0u);
}

// xennet_xdp_set(): Reconfiguring, wait for the backend's Reconfigured, then
// Connected again. The vif stays connected throughout (Linux answers
// Reconfigured from frontend_changed and keeps the rings).
TEST(NetbackHardening, Item10_ReconfiguringStaysConnected) {
    rig r;
    ASSERT_TRUE(r.be);
    ASSERT_NO_FATAL_FAILURE(connect_frontend(r));
    r.fe_state(XenbusStateReconfiguring);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateReconfigured); }))
        << "backend state " << r.be_key("state");
    EXPECT_EQ(r.be->dp().vifs().size(), 1u);
    r.fe_state(XenbusStateConnected);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateConnected); })) << "backend state " << r.be_key("state");
    EXPECT_EQ(r.be->dp().vifs().size(), 1u);
    EXPECT_EQ(r.be->dp().hv_counters().unmaps, 0u) << "the rings were torn down";
}

// A state number outside the enum: xenbus_dev_fatal and Closing, not a crash
// and not a silent Closed.
TEST(NetbackHardening, Item10_StateOutOfRangeIsFatal) {
    rig r;
    ASSERT_TRUE(r.be);
    ASSERT_NO_FATAL_FAILURE(connect_frontend(r));
    r.xsg->write(r.fe_dir() + "/state", "4000000000");
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); })) << "backend state " << r.be_key("state");
    EXPECT_TRUE(r.be->dp().vifs().empty());
    EXPECT_EQ(r.be_key("error"), "saw state 4000000000 at frontend");
}

// The toolstack's mtu (libxl writes it into the frontend directory, read-only
// to the guest) is what the data path limits non-GSO frames to; without
// the key there is no limit.
TEST(NetbackHardening, Item7_ToolstackMtuReachesTheDatapath) {
    rig r;
    ASSERT_TRUE(r.be);
    ASSERT_NO_FATAL_FAILURE(connect_frontend(r));
    EXPECT_EQ(r.be->dp().vifs()[0].mtu, 1500u);
    EXPECT_EQ(r.xsg->write(r.fe_dir() + "/mtu", "65535"), -EACCES) << "the guest must not raise its own mtu";
    vif_spec s;
    s.frontend = r.fe;
    s.devid = 1;
    s.mtu = 0;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    EXPECT_FALSE(r.xs0->read(frontend_dir(r.fe, 1) + "/mtu"));
    s.devid = 2;
    s.mtu = 67;
    EXPECT_EQ(vif_create(*r.xs0, s, nullptr), -EINVAL);
}

// ---- Hardening: logs and backend/error carry sanitised frontend strings ----

using test::capture_stderr;
using test::count_of;

TEST(NetbackHardening, Item9_FrontendStringsAreSanitisedInLogsAndErrorKey) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
    r.frontend_keys();
    // A forged log line, a terminal escape and a lot of padding.
    const std::string evil = "7\nzcnet[1] error netback: FORGED\x1b[2J" + std::string(1500, 'A');
    ASSERT_EQ(r.xsg->write(r.fe_dir() + "/multi-queue-num-queues", evil), 0); // within xenstored's 2 KiB quota
    std::string out = capture_stderr([&] {
        r.fe_state(XenbusStateConnected);
        ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
    });
    const std::string err = r.be_key("error");
    EXPECT_NE(err.find("multi-queue-num-queues"), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_EQ(err.find('\x1b'), std::string::npos) << err;
    EXPECT_LE(err.size(), 256u) << "backend/error is not bounded";
    EXPECT_NE(err.find("\\x0a"), std::string::npos) << "the newline is not shown escaped: " << err;
    EXPECT_NE(out.find("connect failed"), std::string::npos) << out;
    EXPECT_EQ(out.find("\nzcnet[1] error netback: FORGED"), std::string::npos) << "forged log line: " << out;
    EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
    EXPECT_LE(out.size(), 1024u) << "the frontend's 1.5 KB string went into the log";
}

TEST(NetbackHardening, Item9_LogWriteEscapesControlCharacters) {
    std::string out = capture_stderr([] { ZC_LOG(error, "t", "a%sb", "\n\r\x1b\x7f"); });
    EXPECT_EQ(count_of(out, "\n"), 1u) << out;
    EXPECT_NE(out.find("a\\x0a\\x0d\\x1b\\x7fb\n"), std::string::npos) << out;
    EXPECT_EQ(log::sanitize("ok-1:2", 64), "ok-1:2");
    EXPECT_EQ(log::sanitize("a\tb\xff", 64), "a\\x09b\\xff");
    EXPECT_EQ(log::sanitize(log::sanitize("a\tb", 64), 64), "a\\x09b");
    EXPECT_EQ(log::sanitize(std::string(100, 'x'), 10), "xxxxxxx...");
}

// One frontend cycling its state as fast as it can: the lines about it are
// rate-limited, and a line about another vif still gets out.
TEST(NetbackHardening, Item9_ControlPlaneLogIsRateLimitedPerVif) {
    rig r;
    ASSERT_TRUE(r.be);
    vif_spec s;
    s.frontend = r.fe;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    s.devid = 1;
    ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait) && r.be_state_is(XenbusStateInitWait, 1); }));
    r.frontend_keys();
    r.xsg->write(r.fe_dir() + "/multi-queue-num-queues", "junk");
    std::string out = capture_stderr([&] {
        // Each round: connect fails (a warn line), Closed, Initialising.
        for (int i = 0; i < 200; ++i) {
            r.fe_state(XenbusStateConnected);
            ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing); }));
            r.fe_state(XenbusStateClosed);
            ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosed); }));
            r.fe_state(XenbusStateInitialising);
            ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateInitWait); }));
        }
        // The quiet vif's first failure is still logged.
        r.xsg->write(frontend_dir(r.fe, 1) + "/state", "4");
        ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing, 1); }));
    });
    const size_t noisy = count_of(out, "vif 1/0:"), quiet = count_of(out, "vif 1/1: connect failed");
    EXPECT_LT(noisy, 200u) << "200 failed connects, as many lines";
    EXPECT_GE(noisy, 1u);
    EXPECT_EQ(quiet, 1u) << "the noisy vif silenced the line about another";
}

// The direct path's negotiation (ring/zc_direct.hpp): offered to every
// frontend; taken by one that writes the key and its release ring; each
// vif on it is told the others' configured MACs and domains, as vifs come
// and go. Three vifs of one guest: devid 0 and 1 on it, devid 2 writes the
// key without a release ring (the ordinary path).
TEST(NetbackBackend, DirectPathNegotiationAndPeers) {
    rig r;
    ASSERT_TRUE(r.be);
    namespace zd = ring::zc_direct;
    for (uint32_t devid = 0; devid < 3; ++devid) {
        vif_spec s;
        s.frontend = r.fe;
        s.devid = devid;
        ASSERT_EQ(vif_create(*r.xs0, s, nullptr), 0);
    }
    ASSERT_TRUE(r.until([&] {
        return r.be_state_is(XenbusStateInitWait) && r.be_state_is(XenbusStateInitWait, 1) &&
               r.be_state_is(XenbusStateInitWait, 2);
    }));
    EXPECT_EQ(r.be_key(zd::key_feature), "1");
    std::vector<hv::shared_pages> pages; // devid 1 and 2's rings, the release rings
    auto share = [&](uint32_t n) {
        auto p = r.shr->share(0, n, true);
        EXPECT_TRUE(p);
        pages.push_back(p ? std::move(*p) : hv::shared_pages{});
        return pages.back().refs;
    };
    r.frontend_keys();
    for (uint32_t devid = 1; devid < 3; ++devid) {
        auto refs = share(2);
        ASSERT_EQ(refs.size(), 2u);
        ring::tx_front_ring().init(pages.back().addr);
        ring::rx_front_ring().init(static_cast<uint8_t*>(pages.back().addr) + hv::page_size);
        auto port = r.ev->bind_unbound(0);
        ASSERT_TRUE(port);
        const std::string d = frontend_dir(r.fe, devid);
        r.xsg->write(d + "/tx-ring-ref", std::to_string(refs[0]));
        r.xsg->write(d + "/rx-ring-ref", std::to_string(refs[1]));
        r.xsg->write(d + "/event-channel", std::to_string(*port));
        r.xsg->write(d + "/request-rx-copy", "1");
    }
    for (uint32_t devid = 0; devid < 3; ++devid) {
        const std::string d = frontend_dir(r.fe, devid);
        r.xsg->write(d + "/" + zd::key_feature, "1");
        if (devid == 2) continue;
        auto ref = share(1);
        ASSERT_EQ(ref.size(), 1u);
        zd::release_front_ring().init(pages.back().addr);
        r.xsg->write(d + "/" + zd::key_release_ring, std::to_string(ref[0]));
    }
    for (uint32_t devid = 0; devid < 3; ++devid) r.xsg->write(frontend_dir(r.fe, devid) + "/state", "4");
    ASSERT_TRUE(r.until([&] {
        return r.be_state_is(XenbusStateConnected) && r.be_state_is(XenbusStateConnected, 1) &&
               r.be_state_is(XenbusStateConnected, 2);
    })) << r.be_key("error");
    for (auto& v : r.be->dp().vifs()) EXPECT_EQ(v.zc_direct, v.devid != 2) << "devid " << v.devid;
    auto peers = [&](uint32_t devid) {
        std::map<std::string, std::string> m;
        const std::string dir = r.be_dir(devid) + "/" + zd::key_peers;
        auto names = r.xsg->directory(dir); // the guest can read it
        if (names)
            for (auto& n : *names) m[n] = r.be_key(std::string(zd::key_peers) + "/" + n, devid);
        return m;
    };
    const std::string fe = std::to_string(r.fe);
    auto key = [&](uint32_t devid) { return zd::peer_key(default_mac(r.fe, devid).b.data()); };
    EXPECT_EQ(key(1), "00-16-3e-00-01-01");
    EXPECT_EQ(peers(0), (std::map<std::string, std::string>{{key(1), fe}}));
    EXPECT_EQ(peers(1), (std::map<std::string, std::string>{{key(0), fe}}));
    EXPECT_TRUE(peers(2).empty());
    // devid 1 leaves: gone from devid 0's peers, its own directory removed.
    r.xsg->write(frontend_dir(r.fe, 1) + "/state", "5");
    ASSERT_TRUE(r.until([&] { return r.be_state_is(XenbusStateClosing, 1); }));
    EXPECT_TRUE(peers(0).empty());
    EXPECT_FALSE(r.xs0->read(r.be_dir(1) + "/" + zd::key_peers));
    r.be.reset();
    for (auto& p : pages) r.shr->unshare(p);
}

} // namespace
