// SPDX-License-Identifier: MIT
// Our netfront on the direct path (docs/ARCHITECTURE.md, "Direct path
// (guest to guest)"; ring/zc_direct.hpp) behind the real zc-netback on the
// emulated host (control plane and data path in dom0, vifs created as the
// toolstack does): negotiation and the peers lookup, a descriptor arriving
// with its headers, the receiver taking the payload from the sender's grant
// itself (grant copy and a read-only mapping), its release completing the
// sender's request, refusals the sender falls back from, and a netfront
// without the option keeping today's path.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <vector>

extern "C" {
#include <xen/grant_table.h>
#include <xen/io/netif.h>
}

#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "netback_host.hpp"
#include "ring/zc_direct.hpp"

using namespace zc;
namespace zd = zc::ring::zc_direct;

namespace {

constexpr int wait_ms = 10000;
constexpr size_t hdr_len = 42; // Ethernet + IPv4 + UDP

struct guest {
    hv::domid_t dom = 0;
    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::gntshr> shr; // the application's pool grants (not the netfront's)
    std::unique_ptr<link::netfront> nf;
};

struct rig {
    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    test::served_backend be;
    std::vector<std::unique_ptr<guest>> guests;

    rig() {
        dom0 = host.domain(0);
        if (!dom0) return;
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return;
        xs0 = std::move(*x);
        (void)be.start(*dom0);
    }
    ~rig() {
        for (auto& g : guests) g->nf.reset(); // disconnect before the backend goes
        be.stop();
    }
    bool ok() const { return bool(be); }

    // A guest with a vif (xl network-attach), connected; `direct`: the
    // netfront asks for the direct path.
    guest* add(hv::domid_t d, bool direct) {
        auto g = std::make_unique<guest>();
        g->dom = d;
        g->port = host.domain(d);
        if (!g->port) return nullptr;
        auto s = g->port->open_gntshr();
        EXPECT_TRUE(s);
        if (!s) return nullptr;
        g->shr = std::move(*s);
        netback::vif_spec spec;
        spec.frontend = d;
        std::string why;
        EXPECT_EQ(netback::vif_create(*xs0, spec, &why), 0) << why;
        link::netfront_options o;
        o.zc_direct = direct;
        auto nf = link::netfront::connect(*g->port, o, &why);
        EXPECT_TRUE(nf) << why;
        if (!nf) return nullptr;
        g->nf = std::move(*nf);
        guests.push_back(std::move(g));
        return guests.back().get();
    }

    netback::vif_info vif(hv::domid_t fe) {
        for (auto& v : be->dp().vifs())
            if (v.frontend == fe) return v;
        ADD_FAILURE() << "no vif for d" << fe;
        return {};
    }

    // Until pred() holds, processing every guest's events (bounded).
    bool until(const std::function<bool()>& pred) {
        for (int i = 0; i < wait_ms / 10; i++) {
            for (auto& g : guests)
                if (g->nf) (void)g->nf->process_events();
            if (pred()) return true;
            for (auto& g : guests)
                if (g->nf) (void)g->nf->wait(i < 10 ? 1 : 10);
        }
        return pred();
    }
};

std::vector<uint8_t> headers(const link::mac_addr& dst, const link::mac_addr& src, uint32_t seed) {
    std::vector<uint8_t> h(hdr_len);
    std::memcpy(h.data(), dst.data(), 6);
    std::memcpy(h.data() + 6, src.data(), 6);
    h[12] = 0x88; // local experimental ethertype: nothing to check beyond L2
    h[13] = 0xb5;
    for (size_t i = 14; i < h.size(); i++) h[i] = uint8_t(seed + i);
    return h;
}

// A payload page granted read-only to `to` alone (exportable: the emulated
// hypervisor lets another guest map or copy it, as Xen does), with a pattern.
hv::shared_pages payload_page(guest& from, hv::domid_t to) {
    auto p = from.shr->share_exportable(to, 1, false);
    EXPECT_TRUE(p) << std::strerror(-p.error());
    if (!p) return {};
    for (uint32_t i = 0; i < hv::page_size; i++) static_cast<uint8_t*>(p->addr)[i] = uint8_t(i * 7 + to);
    return std::move(*p);
}

// One frame received (bounded wait); empty when none came.
std::vector<uint8_t> recv_one(rig& r, link::netfront& nf, link::rx_info* info) {
    std::vector<uint8_t> buf(4096);
    result<size_t> got = err(-EAGAIN);
    r.until([&] {
        got = nf.recv(buf.data(), buf.size(), 0, info);
        return bool(got);
    });
    if (!got) return {};
    buf.resize(*got);
    return buf;
}

// The sender's completions, once `n` have come.
std::vector<link::tx_done> reap(rig& r, link::netfront& nf, size_t n) {
    std::vector<link::tx_done> out;
    r.until([&] {
        link::tx_done d[16];
        uint32_t k = nf.tx_reap_granted(d, 16);
        out.insert(out.end(), d, d + k);
        return out.size() >= n;
    });
    return out;
}

TEST(NetfrontDirect, NegotiationAndPeersLookup) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    guest* b = r.add(2, true);
    guest* c = r.add(3, false);
    ASSERT_TRUE(a && b && c);
    EXPECT_TRUE(a->nf->zc_direct());
    EXPECT_TRUE(b->nf->zc_direct());
    EXPECT_FALSE(c->nf->zc_direct());
    EXPECT_TRUE(r.vif(1).zc_direct);
    EXPECT_FALSE(r.vif(3).zc_direct);
    // The option off writes none of the keys.
    EXPECT_FALSE(r.xs0->read(c->nf->frontend_path() + "/" + zd::key_feature));
    EXPECT_FALSE(r.xs0->read(c->nf->frontend_path() + "/" + zd::key_release_ring));
    EXPECT_EQ(*r.xs0->read(a->nf->frontend_path() + "/" + zd::key_feature), "1");

    ASSERT_TRUE(r.until([&] {
        auto ab = a->nf->peer_domid(b->nf->mac());
        auto ba = b->nf->peer_domid(a->nf->mac());
        return ab && *ab == 2 && ba && *ba == 1;
    }));
    auto ac = a->nf->peer_domid(c->nf->mac());
    ASSERT_FALSE(ac);
    EXPECT_EQ(ac.error(), -ENOENT); // c is not on the extension
    auto ca = c->nf->peer_domid(a->nf->mac());
    ASSERT_FALSE(ca);
    EXPECT_EQ(ca.error(), -EOPNOTSUPP);
    EXPECT_EQ(c->nf->send_direct(headers(a->nf->mac(), c->nf->mac(), 1).data(), hdr_len, 1, 0, 0, 100, 1),
              -EOPNOTSUPP);

    // b leaves: a's lookup follows the watch.
    ASSERT_EQ(b->nf->disconnect(), 0);
    EXPECT_FALSE(b->nf->zc_direct());
    EXPECT_TRUE(r.until([&] { return !a->nf->peer_domid(b->nf->mac()); }));
    EXPECT_EQ(b->nf->grant_counters().shares, b->nf->grant_counters().unshares) << "the release ring's grant ended";
}

// A direct frame: headers in a TX slot, the payload in a's grant to b; b
// gets the descriptor, takes the payload itself, releases, and only then
// a's request completes.
TEST(NetfrontDirect, DescriptorPayloadAndRelease) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    guest* b = r.add(2, true);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(r.until([&] { return bool(a->nf->peer_domid(b->nf->mac())); }));
    const hv::domid_t dest = *a->nf->peer_domid(b->nf->mac());
    ASSERT_EQ(dest, 2);
    hv::shared_pages pg = payload_page(*a, dest);
    ASSERT_EQ(pg.count, 1u);
    const auto h = headers(b->nf->mac(), a->nf->mac(), 5);
    ASSERT_EQ(a->nf->send_direct(h.data(), h.size(), dest, pg.refs[0], 100, 1000, 77), 0);

    link::rx_info info;
    auto got = recv_one(r, *b->nf, &info);
    EXPECT_EQ(got, h) << "the headers, and only them";
    ASSERT_TRUE(info.direct);
    EXPECT_EQ(info.desc.domid, 1);
    EXPECT_EQ(info.desc.gref, pg.refs[0]);
    EXPECT_EQ(info.desc.offset, 100);
    EXPECT_EQ(info.desc.len, 1000);
    EXPECT_EQ(info.extras, 2u);
    const uint8_t* want = static_cast<const uint8_t*>(pg.addr) + 100;

    // One grant copy, as b's own domain, from a's grant.
    auto t = b->port->open_gnttab();
    ASSERT_TRUE(t);
    std::vector<uint8_t> buf(info.desc.len);
    hv::copy_segment seg{};
    seg.source.foreign = {info.desc.gref, info.desc.offset, info.desc.domid};
    seg.dest.virt = buf.data();
    seg.flags = GNTCOPY_source_gref;
    seg.len = info.desc.len;
    ASSERT_EQ((*t)->copy(&seg, 1), 0);
    EXPECT_EQ(seg.status, GNTST_okay);
    EXPECT_EQ(std::memcmp(buf.data(), want, buf.size()), 0);
    // Or a read-only mapping (the persistent way); a writable one is refused.
    auto m = (*t)->map(1, &info.desc.domid, &info.desc.gref, false);
    ASSERT_TRUE(m) << std::strerror(-m.error());
    EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(m->addr) + info.desc.offset, want, info.desc.len), 0);
    EXPECT_EQ((*t)->unmap(*m), 0);
    EXPECT_FALSE((*t)->map(1, &info.desc.domid, &info.desc.gref, true));

    // Not completed before the release: zc-netback holds it for b.
    EXPECT_EQ(r.vif(2).direct_outstanding, 1u);
    link::tx_done d[4];
    EXPECT_EQ(a->nf->tx_reap_granted(d, 4), 0u);
    auto rel = b->nf->release_direct(&info.desc.cookie, 1);
    ASSERT_TRUE(rel);
    EXPECT_EQ(*rel, 1u);
    auto done = reap(r, *a->nf, 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].cookie, 77u);
    EXPECT_EQ(done[0].status, NETIF_RSP_OKAY);
    EXPECT_TRUE(r.until([&] { return r.vif(2).direct_outstanding == 0; }));
    EXPECT_EQ(r.vif(1).stats.direct_frames, 1u);
    EXPECT_EQ(r.vif(2).stats.direct_releases, 1u);
    EXPECT_EQ(a->nf->stats().tx_direct, 1u);
    EXPECT_EQ(a->nf->stats().tx_direct_refused, 0u);
    EXPECT_EQ(b->nf->stats().rx_direct, 1u);
    EXPECT_EQ(b->nf->direct_bad_releases(), 0u);

    // The same cookie again completes nothing and is answered an error.
    ASSERT_TRUE(b->nf->release_direct(&info.desc.cookie, 1));
    EXPECT_TRUE(r.until([&] { return b->nf->direct_bad_releases() == 1; }));
    EXPECT_EQ(r.vif(2).stats.direct_bad_releases, 1u);
    EXPECT_EQ(a->nf->tx_reap_granted(d, 4), 0u);
    EXPECT_EQ(a->shr->unshare(pg), 0) << "nobody holds the payload page any more";
}

// A frame to a MAC that is not a direct peer is refused at once; the
// sender sends it again on today's path and it arrives whole. The peer
// without the option exchanges ordinary frames as before.
TEST(NetfrontDirect, NonPeerRefusedAndFallback) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    guest* c = r.add(3, false);
    ASSERT_TRUE(a && c);
    ASSERT_FALSE(a->nf->peer_domid(c->nf->mac()));
    hv::shared_pages pg = payload_page(*a, 3);
    ASSERT_EQ(pg.count, 1u);
    const auto h = headers(c->nf->mac(), a->nf->mac(), 9);
    ASSERT_EQ(a->nf->send_direct(h.data(), h.size(), 3, pg.refs[0], 0, 600, 5), 0);
    auto done = reap(r, *a->nf, 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].cookie, 5u);
    EXPECT_EQ(done[0].status, NETIF_RSP_ERROR);
    EXPECT_EQ(a->nf->stats().tx_direct_refused, 1u);
    EXPECT_EQ(r.vif(1).stats.direct_errors, 1u);

    // Fallback: the same frame on the ordinary path.
    std::vector<uint8_t> whole(h);
    const uint8_t* p = static_cast<const uint8_t*>(pg.addr);
    whole.insert(whole.end(), p, p + 600);
    ASSERT_EQ(a->nf->send(whole.data(), whole.size()), 0);
    link::rx_info info;
    EXPECT_EQ(recv_one(r, *c->nf, &info), whole);
    EXPECT_FALSE(info.direct);
    EXPECT_EQ(info.extras, 0u);
    // And back, ordinary both ways.
    auto back = headers(a->nf->mac(), c->nf->mac(), 11);
    back.resize(300, 0x5a);
    ASSERT_EQ(c->nf->send(back.data(), back.size()), 0);
    EXPECT_EQ(recv_one(r, *a->nf, &info), back);
    EXPECT_FALSE(info.direct);
    EXPECT_EQ(c->nf->stats().rx_errors, 0u);
    EXPECT_EQ(a->shr->unshare(pg), 0);
}

// A receiver that asks recv() for no rx_info cannot see the descriptor:
// the netfront gives the payload back at once, the sender completes.
TEST(NetfrontDirect, DescriptorNobodyTakesIsReleased) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    guest* b = r.add(2, true);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(r.until([&] { return bool(a->nf->peer_domid(b->nf->mac())); }));
    hv::shared_pages pg = payload_page(*a, 2);
    const auto h = headers(b->nf->mac(), a->nf->mac(), 3);
    ASSERT_EQ(a->nf->send_direct(h.data(), h.size(), 2, pg.refs[0], 0, 64, 9), 0);
    // The frame is not handed over; a plain frame after it is.
    auto plain = headers(b->nf->mac(), a->nf->mac(), 4);
    plain.resize(200, 1);
    ASSERT_EQ(a->nf->send(plain.data(), plain.size()), 0);
    EXPECT_EQ(recv_one(r, *b->nf, nullptr), plain);
    EXPECT_EQ(b->nf->stats().rx_direct_dropped, 1u);
    auto done = reap(r, *a->nf, 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].cookie, 9u);
    EXPECT_EQ(done[0].status, NETIF_RSP_OKAY);
    EXPECT_EQ(r.vif(2).stats.direct_releases, 1u);
    EXPECT_EQ(a->shr->unshare(pg), 0);
}

// Teardown both ways: the receiver leaving with a descriptor held
// completes the sender's request (it gets its buffer back); the sender
// leaving voids its cookies, so the receiver's late release matches
// nothing.
TEST(NetfrontDirect, TeardownBothWays) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    guest* b = r.add(2, true);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(r.until([&] { return a->nf->peer_domid(b->nf->mac()) && b->nf->peer_domid(a->nf->mac()); }));
    hv::shared_pages ab = payload_page(*a, 2), ba = payload_page(*b, 1);
    const auto h = headers(b->nf->mac(), a->nf->mac(), 1);
    ASSERT_EQ(a->nf->send_direct(h.data(), h.size(), 2, ab.refs[0], 0, 500, 21), 0);
    link::rx_info info;
    ASSERT_EQ(recv_one(r, *b->nf, &info), h);
    ASSERT_TRUE(info.direct);
    // b -> a, held by a.
    const auto h2 = headers(a->nf->mac(), b->nf->mac(), 2);
    ASSERT_EQ(b->nf->send_direct(h2.data(), h2.size(), 1, ba.refs[0], 0, 500, 22), 0);
    link::rx_info info2;
    ASSERT_EQ(recv_one(r, *a->nf, &info2), h2);
    ASSERT_TRUE(info2.direct);

    // b leaves holding a's descriptor: a's request completes.
    ASSERT_EQ(b->nf->disconnect(), 0);
    auto done = reap(r, *a->nf, 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].cookie, 21u);
    EXPECT_EQ(done[0].status, NETIF_RSP_OKAY);
    EXPECT_EQ(b->nf->grant_counters().shares, b->nf->grant_counters().unshares);
    // b's own request to a died with b's rings; a's late release of it is
    // answered an error and completes nothing.
    ASSERT_TRUE(a->nf->release_direct(&info2.desc.cookie, 1));
    EXPECT_TRUE(r.until([&] { return a->nf->direct_bad_releases() == 1; }));
    EXPECT_EQ(a->shr->unshare(ab), 0);
    EXPECT_EQ(b->shr->unshare(ba), 0);
}

// Argument checks of the new calls.
TEST(NetfrontDirect, BadArguments) {
    rig r;
    ASSERT_TRUE(r.ok());
    guest* a = r.add(1, true);
    ASSERT_TRUE(a);
    auto h = headers(a->nf->mac(), a->nf->mac(), 1);
    h.resize(200);
    EXPECT_EQ(a->nf->send_direct(h.data(), 13, 2, 0, 0, 10, 1), -EINVAL);
    EXPECT_EQ(a->nf->send_direct(h.data(), 129, 2, 0, 0, 10, 1), -EINVAL) << "more than the header copy reads";
    EXPECT_EQ(a->nf->send_direct(h.data(), 42, 2, 0, 0, 0, 1), -EINVAL);
    EXPECT_EQ(a->nf->send_direct(h.data(), 42, 2, 0, 4000, 100, 1), -EMSGSIZE);
    EXPECT_EQ(a->nf->send_direct(nullptr, 42, 2, 0, 0, 10, 1), -EINVAL);
    EXPECT_EQ(a->nf->send_direct(h.data(), 42, 2, 0, 0, 10, 1, 5), -EINVAL);
    auto rel = a->nf->release_direct(nullptr, 1);
    ASSERT_FALSE(rel);
    EXPECT_EQ(rel.error(), -EINVAL);
    ASSERT_EQ(a->nf->disconnect(), 0);
    EXPECT_EQ(a->nf->send_direct(h.data(), 42, 2, 0, 0, 10, 1), -EOPNOTSUPP);
    uint16_t ck = 0;
    EXPECT_FALSE(a->nf->release_direct(&ck, 1));
}

} // namespace
