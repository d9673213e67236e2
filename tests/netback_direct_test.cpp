// SPDX-License-Identifier: MIT
// zc-netback's direct path (docs/ARCHITECTURE.md, "Direct path (guest to
// guest)"; wire format ring/zc_direct.hpp) against raw frontends playing
// our netfront at both ends: negotiation, a descriptor delivered with its
// headers and no payload copy by zc-netback, the release completing the
// sender's TX, refusals, hostile releases and teardown both ways.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "netback_datapath_fixture.hpp"
#include "ring/zc_direct.hpp"

using namespace zc;
using namespace zc::test::netback_dp;
namespace zd = zc::ring::zc_direct;

namespace {

constexpr uint32_t hdr_len = 42; // Ethernet + IPv4 + UDP

// What a receiver found in its RX ring for one direct frame.
struct direct_seen {
    netif_rx_response first{};
    std::vector<uint8_t> headers;
    zd::rx_grant grant{};
    zd::rx_desc desc{};
};

class NetbackDirect : public NetbackDatapath {
public:
    // Per direct guest: its release ring (granted to dom0) and payload pages
    // (granted read-only to one destination each).
    struct direct_state {
        hv::shared_pages release;
        zd::release_front_ring ring;
        std::map<hv::domid_t, hv::shared_pages> payload; // by destination
    };
    std::map<hv::domid_t, direct_state> st;

    void TearDown() override {
        dp.reset();
        for (auto& g : guests) {
            if (!g) continue;
            auto it = st.find(g->dom);
            if (it == st.end()) continue;
            (void)g->shr->unshare(it->second.release);
            for (auto& [d, p] : it->second.payload) (void)g->shr->unshare(p);
        }
        st.clear();
        NetbackDatapath::TearDown();
    }

    // A guest; `direct`: it negotiated feature-zc-direct with a release ring.
    raw_frontend* dguest(hv::domid_t d, bool direct) {
        auto g = std::make_unique<raw_frontend>();
        if (!g->init(host, d, mac_of(uint8_t(d)), false)) {
            ADD_FAILURE() << "guest " << d;
            return nullptr;
        }
        netback::vif_params vp = g->params();
        if (direct) {
            auto r = g->shr->share(0, 1, true);
            if (!r) {
                ADD_FAILURE() << "release ring share";
                return nullptr;
            }
            direct_state& s = st[d];
            s.release = std::move(*r);
            s.ring.init(s.release.addr);
            vp.zc_direct = true;
            vp.zc_release_ring_ref = s.release.refs[0];
        }
        std::string why;
        if (int rc = dp->add_vif(vp, &why); rc != 0) {
            ADD_FAILURE() << "add_vif d" << d << ": " << rc << " " << why;
            return nullptr;
        }
        g->post_rx(rx_pages);
        guests.push_back(std::move(g));
        return guests.back().get();
    }

    // `from`'s payload page for `to` (exportable: the emulated hypervisor
    // lets the receiver copy from it, as Xen lets a domU), filled with a
    // pattern.
    hv::shared_pages& payload_page(raw_frontend& from, hv::domid_t to) {
        auto& m = st[from.dom].payload;
        auto it = m.find(to);
        if (it != m.end()) return it->second;
        auto p = from.shr->share_exportable(to, 1, false);
        EXPECT_TRUE(p) << std::strerror(-p.error());
        hv::shared_pages& pg = m[to];
        if (!p) return pg;
        pg = std::move(*p);
        for (uint32_t i = 0; i < hv::page_size; ++i) static_cast<uint8_t*>(pg.addr)[i] = uint8_t(i * 7 + to);
        return pg;
    }

    // A direct-path request: headers in a TX slot, the payload descriptor
    // in the two extras. `claimed`: the domain the payload is said to be
    // granted to. Returns the request's id.
    uint16_t send_direct(raw_frontend& from, const mac_addr& dst_mac, hv::domid_t claimed, hv::gref_t gref,
                         uint16_t off, uint16_t len, uint32_t hlen = hdr_len) {
        auto f = make_frame(dst_mac, from.mac, hlen, 3);
        const uint32_t pg = from.next_page++ % tx_pages;
        std::memcpy(from.tx_page(pg), f.data(), hlen);
        netif_tx_request r{};
        r.gref = from.txbuf.refs[pg];
        r.offset = 0;
        r.id = uint16_t(from.tx.req_prod_pvt & (ring_size - 1));
        r.size = uint16_t(hlen);
        r.flags = NETTXF_extra_info;
        from.put_tx(r);
        from.put_extra(zd::to_extra(zd::tx_payload{zd::extra_tx_payload, XEN_NETIF_EXTRA_FLAG_MORE, off, gref}));
        from.put_extra(zd::to_extra(zd::tx_dest{zd::extra_tx_dest, 0, claimed, len, 0}));
        from.push_tx();
        return r.id;
    }
    uint16_t send_direct_to(raw_frontend& from, raw_frontend& to, uint16_t off = 100, uint16_t len = 1000) {
        return send_direct(from, to.mac, to.dom, payload_page(from, to.dom).refs[0], off, len);
    }

    // The three RX slots of one direct frame.
    bool read_direct(raw_frontend& to, direct_seen& out, int timeout_ms = 5000) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (RING_IDX(to.rx.rsp_prod() - to.rx.rsp_cons) < 3) {
            if (std::chrono::steady_clock::now() > end) return false;
            if (to.rx.final_check_for_responses() && RING_IDX(to.rx.rsp_prod() - to.rx.rsp_cons) >= 3) break;
            to.wait_event(20);
        }
        out.first = to.rx.read_response<netif_rx_response>(to.rx.rsp_cons);
        out.grant = zd::from_extra<zd::rx_grant>(to.rx.read_response<netif_extra_info>(to.rx.rsp_cons + 1));
        out.desc = zd::from_extra<zd::rx_desc>(to.rx.read_response<netif_extra_info>(to.rx.rsp_cons + 2));
        to.rx.rsp_cons += 3;
        if (out.first.status > 0) {
            const uint8_t* p = to.rx_page(out.first.id % rx_pages) + out.first.offset;
            out.headers.assign(p, p + out.first.status);
        }
        to.post_rx(3);
        return true;
    }

    // The receiver takes the payload itself: one grant copy as its own
    // domain from the sender's grant.
    std::vector<uint8_t> take_payload(raw_frontend& to, const direct_seen& s) {
        auto t = to.port->open_gnttab();
        EXPECT_TRUE(t);
        if (!t) return {};
        std::vector<uint8_t> buf(s.desc.len);
        hv::copy_segment seg{};
        seg.source.foreign = {s.grant.gref, s.desc.offset, s.grant.domid};
        seg.dest.virt = buf.data();
        seg.flags = GNTCOPY_source_gref;
        seg.len = s.desc.len;
        EXPECT_EQ((*t)->copy(&seg, 1), 0);
        EXPECT_EQ(seg.status, GNTST_okay);
        return buf;
    }

    // The receiver puts cookies on its release ring and kicks its TX port.
    void release(raw_frontend& to, const std::vector<uint16_t>& cookies) {
        direct_state& s = st[to.dom];
        for (uint16_t c : cookies)
            s.ring.write_request(s.ring.req_prod_pvt++, zc_direct_release_request{c, 0});
        s.ring.push_requests_and_check_notify();
        to.kick_tx();
    }
    // Release responses (status per cookie) once `n` are there.
    std::vector<zc_direct_release_response> release_responses(raw_frontend& to, size_t n) {
        direct_state& s = st[to.dom];
        std::vector<zc_direct_release_response> out;
        eventually([&] { return RING_IDX(s.ring.rsp_prod() - s.ring.rsp_cons) >= n; });
        while (s.ring.rsp_cons != s.ring.rsp_prod())
            out.push_back(s.ring.read_response<zc_direct_release_response>(s.ring.rsp_cons++));
        return out;
    }

    // Expect one refused direct frame: NETIF_RSP_ERROR at once.
    void expect_refused(raw_frontend& from, uint64_t errors_before) {
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(from.wait_tx(1, tr));
        EXPECT_EQ(tr[0].status, NETIF_RSP_ERROR);
        EXPECT_TRUE(eventually([&] { return info(from.dom).stats.direct_errors == errors_before + 1; }));
    }
};

TEST_F(NetbackDirect, DescriptorArrivesWithHeadersAndNoPayloadCopy) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    ASSERT_TRUE(a && b);
    EXPECT_TRUE(info(1).zc_direct);
    const uint64_t bytes0 = dp->hv_counters().copy_bytes;
    const uint16_t id = send_direct_to(*a, *b, 100, 1000);
    direct_seen s;
    ASSERT_TRUE(read_direct(*b, s));
    EXPECT_EQ(s.first.status, int16_t(hdr_len));
    EXPECT_TRUE(s.first.flags & NETRXF_extra_info);
    EXPECT_FALSE(s.first.flags & NETRXF_more_data);
    EXPECT_EQ(s.headers, make_frame(b->mac, a->mac, hdr_len, 3));
    EXPECT_EQ(s.grant.type, zd::extra_rx_grant);
    EXPECT_TRUE(s.grant.flags & XEN_NETIF_EXTRA_FLAG_MORE);
    EXPECT_EQ(s.grant.domid, a->dom);
    EXPECT_EQ(s.grant.gref, payload_page(*a, b->dom).refs[0]);
    EXPECT_EQ(s.desc.type, zd::extra_rx_desc);
    EXPECT_EQ(s.desc.offset, 100);
    EXPECT_EQ(s.desc.len, 1000);
    // zc-netback copied the headers twice (to read them, into B's RX page)
    // and not one payload byte.
    EXPECT_EQ(dp->hv_counters().copy_bytes - bytes0, 2u * hdr_len);
    // B takes the payload from A's grant itself.
    const std::vector<uint8_t> got = take_payload(*b, s);
    const uint8_t* src = static_cast<const uint8_t*>(payload_page(*a, b->dom).addr) + 100;
    EXPECT_EQ(got, std::vector<uint8_t>(src, src + 1000));
    // A's request stays outstanding until B releases it.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(a->tx_pending_responses(), 0u);
    auto ia = info(1), ib = info(2);
    EXPECT_EQ(ia.stats.direct_frames, 1u);
    EXPECT_EQ(ia.stats.direct_bytes, 1000u);
    EXPECT_EQ(ib.stats.rx_packets, 1u);
    EXPECT_EQ(ib.stats.rx_bytes, hdr_len + 1000u);
    EXPECT_EQ(ib.direct_outstanding, 1u);
    (void)id;
}

TEST_F(NetbackDirect, ReleaseCompletesTheSendersTx) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    ASSERT_TRUE(a && b);
    std::vector<uint16_t> ids, cookies;
    for (int i = 0; i < 4; ++i) {
        ids.push_back(send_direct_to(*a, *b, uint16_t(i * 16), 64));
        direct_seen s;
        ASSERT_TRUE(read_direct(*b, s));
        cookies.push_back(s.desc.cookie);
    }
    EXPECT_EQ(info(2).direct_outstanding, 4u);
    EXPECT_EQ(a->tx_pending_responses(), 0u);
    // Released out of order: each completes its own request.
    release(*b, {cookies[2], cookies[0]});
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(2, tr));
    ASSERT_EQ(tr.size(), 2u);
    EXPECT_EQ(tr[0].id, ids[2]);
    EXPECT_EQ(tr[1].id, ids[0]);
    for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    auto rr = release_responses(*b, 2);
    ASSERT_EQ(rr.size(), 2u);
    for (auto& r : rr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
    release(*b, {cookies[1], cookies[3]});
    tr.clear();
    ASSERT_TRUE(a->wait_tx(2, tr));
    EXPECT_TRUE(eventually([&] { return info(2).direct_outstanding == 0; }));
    EXPECT_EQ(info(2).stats.direct_releases, 4u);
    EXPECT_EQ(info(2).stats.direct_bad_releases, 0u);
}

TEST_F(NetbackDirect, FrontendWithoutTheKeyGetsTheOrdinaryPath) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* c = dguest(3, false);
    raw_frontend* d = dguest(4, false);
    ASSERT_TRUE(a && c && d);
    EXPECT_FALSE(info(4).zc_direct);
    // Ordinary frames both ways, as before.
    expect_delivery(*a, *d);
    expect_delivery(*d, *a);
    // A direct frame to a vif without the extension is refused; A falls back.
    send_direct_to(*a, *d);
    expect_refused(*a, 0);
    EXPECT_EQ(info(4).stats.rx_packets, 1u); // the one ordinary frame
    // For C the direct extra is an unknown type: fatal, as Linux's
    // xenvif_get_extras.
    send_direct(*c, a->mac, a->dom, 0, 0, 64);
    expect_fatal(*c, *a, *d, "invalid extra type: 208");
}

TEST_F(NetbackDirect, WrongDestinationOrBadDescriptorIsRefused) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    raw_frontend* c = dguest(3, true);
    ASSERT_TRUE(a && b && c);
    // Headers to B, payload claimed for C: the switch picks B.
    send_direct(*a, b->mac, c->dom, payload_page(*a, c->dom).refs[0], 0, 64);
    expect_refused(*a, 0);
    // A MAC nobody has: flooded to several, not exactly one.
    send_direct(*a, mac_of(77), b->dom, payload_page(*a, b->dom).refs[0], 0, 64);
    expect_refused(*a, 1);
    // Payload beyond its page, and headers over 128 bytes: malformed.
    send_direct(*a, b->mac, b->dom, payload_page(*a, b->dom).refs[0], 4000, 200);
    expect_refused(*a, 2);
    send_direct(*a, b->mac, b->dom, payload_page(*a, b->dom).refs[0], 0, 64, 129);
    expect_refused(*a, 3);
    EXPECT_EQ(info(1).stats.drop_malformed, 2u);
    EXPECT_EQ(info(2).stats.rx_packets + info(3).stats.rx_packets, 0u);
    EXPECT_FALSE(info(1).disabled);
}

TEST_F(NetbackDirect, OutstandingPerSenderAndReceiverIsBounded) {
    netback::datapath_options o;
    o.direct_per_peer = 2;
    start(o);
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    raw_frontend* c = dguest(3, true);
    ASSERT_TRUE(a && b && c);
    direct_seen s;
    send_direct_to(*a, *b);
    ASSERT_TRUE(read_direct(*b, s));
    send_direct_to(*a, *b);
    ASSERT_TRUE(read_direct(*b, s));
    send_direct_to(*a, *b);
    expect_refused(*a, 0);
    // Another sender to the same receiver has its own bound.
    send_direct_to(*c, *b);
    ASSERT_TRUE(read_direct(*b, s));
    EXPECT_EQ(info(2).direct_outstanding, 3u);
}

TEST_F(NetbackDirect, HostileReleasesAreCountedAndCompleteNothingElse) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    raw_frontend* c = dguest(3, true);
    ASSERT_TRUE(a && b && c);
    send_direct_to(*a, *b);
    direct_seen s;
    ASSERT_TRUE(read_direct(*b, s));
    // C releases B's cookie (C was given nothing), an out-of-range cookie
    // and one never handed out: all ignored, A's request stays with B.
    release(*c, {s.desc.cookie, 0xffff, uint16_t(s.desc.cookie + 1)});
    auto rr = release_responses(*c, 3);
    ASSERT_EQ(rr.size(), 3u);
    for (auto& r : rr) EXPECT_EQ(r.status, NETIF_RSP_ERROR);
    EXPECT_EQ(info(3).stats.direct_bad_releases, 3u);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(a->tx_pending_responses(), 0u);
    EXPECT_EQ(info(2).direct_outstanding, 1u);
    // B releases it twice in one go: the duplicate is counted.
    release(*b, {s.desc.cookie, s.desc.cookie});
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(1, tr));
    EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
    rr = release_responses(*b, 2);
    ASSERT_EQ(rr.size(), 2u);
    EXPECT_EQ(rr[0].status, NETIF_RSP_OKAY);
    EXPECT_EQ(rr[1].status, NETIF_RSP_ERROR);
    EXPECT_EQ(info(2).stats.direct_bad_releases, 1u);
    // A stale cookie later: the entry's next frame has another generation.
    send_direct_to(*a, *b);
    direct_seen s2;
    ASSERT_TRUE(read_direct(*b, s2));
    if (s2.desc.cookie != s.desc.cookie) {
        release(*b, {s.desc.cookie});
        rr = release_responses(*b, 1);
        ASSERT_EQ(rr.size(), 1u);
        EXPECT_EQ(rr[0].status, NETIF_RSP_ERROR);
    }
    EXPECT_EQ(info(2).direct_outstanding, 1u);
    // A release ring claiming more requests than it holds disables B only.
    direct_state& bs = st[b->dom];
    bs.ring.sring()->req_prod = bs.ring.req_prod_pvt + 5000;
    b->kick_tx();
    EXPECT_NE(wait_fatal(b->dom).find("impossible number of releases"), std::string::npos);
    expect_delivery(*a, *c);
}

TEST_F(NetbackDirect, ReceiverGoneCompletesEverySendersRequest) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    raw_frontend* c = dguest(3, true);
    ASSERT_TRUE(a && b && c);
    std::vector<uint16_t> ids;
    for (int i = 0; i < 3; ++i) {
        ids.push_back(send_direct_to(*a, *b));
        direct_seen s;
        ASSERT_TRUE(read_direct(*b, s));
    }
    send_direct_to(*c, *b);
    direct_seen s;
    ASSERT_TRUE(read_direct(*b, s));
    EXPECT_EQ(a->tx_pending_responses(), 0u);
    ASSERT_EQ(dp->remove_vif(b->dom, 0), 0);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(a->wait_tx(3, tr));
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(tr[i].id, ids[i]);
    tr.clear();
    ASSERT_TRUE(c->wait_tx(1, tr));
    EXPECT_TRUE(eventually([&] { return dp->retired_stats().direct_teardown_completed == 4; }));
    expect_delivery(*a, *c);
    ASSERT_EQ(dp->remove_vif(a->dom, 0), 0);
    ASSERT_EQ(dp->remove_vif(c->dom, 0), 0);
    expect_balanced(); // the release rings were unmapped too
}

TEST_F(NetbackDirect, SenderGoneDropsItsCookiesAndALateReleaseIsIgnored) {
    start();
    raw_frontend* a = dguest(1, true);
    raw_frontend* b = dguest(2, true);
    raw_frontend* c = dguest(3, true);
    ASSERT_TRUE(a && b && c);
    std::vector<uint16_t> cookies;
    for (int i = 0; i < 2; ++i) {
        send_direct_to(*a, *b);
        direct_seen s;
        ASSERT_TRUE(read_direct(*b, s));
        cookies.push_back(s.desc.cookie);
    }
    send_direct_to(*c, *b);
    direct_seen sc;
    ASSERT_TRUE(read_direct(*b, sc));
    EXPECT_EQ(info(2).direct_outstanding, 3u);
    ASSERT_EQ(dp->remove_vif(a->dom, 0), 0);
    EXPECT_EQ(info(2).direct_outstanding, 1u);
    // B releases A's cookies late, and C's: only C's completes anything.
    cookies.push_back(sc.desc.cookie);
    release(*b, cookies);
    auto rr = release_responses(*b, 3);
    ASSERT_EQ(rr.size(), 3u);
    EXPECT_EQ(rr[0].status, NETIF_RSP_ERROR);
    EXPECT_EQ(rr[1].status, NETIF_RSP_ERROR);
    EXPECT_EQ(rr[2].status, NETIF_RSP_OKAY);
    std::vector<netif_tx_response> tr;
    ASSERT_TRUE(c->wait_tx(1, tr));
    EXPECT_EQ(tr[0].status, NETIF_RSP_OKAY);
    EXPECT_EQ(info(2).stats.direct_bad_releases, 2u);
    EXPECT_EQ(info(2).direct_outstanding, 0u);
    expect_delivery(*c, *b);
}

} // namespace
