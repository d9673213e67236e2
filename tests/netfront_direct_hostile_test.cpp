// SPDX-License-Identifier: MIT
// Our netfront's direct path (ring/zc_direct.hpp) against the fake netback
// of netfront_fake_backend.hpp, which forges what zc-netback would never
// send: descriptors breaking the format, the extras on a netfront that did
// not ask for them, garbage in zc-direct-peers, a release ring answered
// with errors or too many responses. Step by step in one thread after the
// handshake, so nothing depends on timing.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "netfront_fake_backend.hpp"
#include "ring/zc_direct.hpp"

using namespace zc;
using namespace zc::test::netfront_fake;
namespace zd = zc::ring::zc_direct;

namespace {

class NetfrontDirectHostile : public Netfront {
protected:
    void TearDown() override {
        if (rel_map.addr) (void)be->gt->unmap(rel_map);
        Netfront::TearDown();
    }

    // Connect with the direct path offered and asked for; map the release
    // ring as zc-netback does.
    void connect_direct(bool ask = true) {
        offer o;
        o.zc_direct = true;
        link::netfront_options opt;
        opt.zc_direct = ask;
        ASSERT_EQ(connect(o, opt), 0);
        ASSERT_EQ(nf->zc_direct(), ask);
        if (!ask) {
            EXPECT_EQ(be->keys.count(zd::key_release_ring), 0u);
            return;
        }
        ASSERT_EQ(be->keys[zd::key_feature], "1");
        hv::gref_t ref = hv::gref_t(std::stoul(be->keys.at(zd::key_release_ring)));
        hv::domid_t fe = fe_dom;
        auto m = be->gt->map(1, &fe, &ref, true);
        ASSERT_TRUE(m);
        rel_map = *m;
        ASSERT_TRUE(rel.attach(rel_map.addr));
    }

    // A direct frame's three RX slots: headers, then the extras as given.
    void put_direct(size_t hlen, const std::vector<netif_extra_info_t>& extras, uint16_t first_flags = 0) {
        auto h = pattern(hlen, 3);
        auto req = be->take_rx_req(bq());
        ASSERT_TRUE(be->copy_to_rx(req, 0, h.data(), h.size()));
        be->put_rx_rsp(bq(), req.id, 0, uint16_t(first_flags | NETRXF_extra_info), int16_t(hlen));
        for (const auto& ex : extras) {
            (void)be->take_rx_req(bq()); // each extra takes a request's slot
            be->put_rx_extra(bq(), ex);
        }
        be->push_rx(bq());
    }
    static netif_extra_info_t grant(hv::domid_t d, hv::gref_t g, uint8_t flags = XEN_NETIF_EXTRA_FLAG_MORE) {
        return zd::to_extra(zd::rx_grant{zd::extra_rx_grant, flags, d, g});
    }
    static netif_extra_info_t desc(uint16_t off, uint16_t len, uint16_t cookie) {
        return zd::to_extra(zd::rx_desc{zd::extra_rx_desc, 0, off, len, cookie});
    }

    // The cookies the netfront put on the release ring since the last call.
    std::vector<uint16_t> released() {
        std::vector<uint16_t> out;
        RING_IDX prod = rel.req_prod();
        for (; rel.req_cons != prod; rel.req_cons++)
            out.push_back(rel.read_request<zc_direct_release_request>(rel.req_cons).cookie);
        return out;
    }

    // The bad frame is dropped (counted) and a good frame after it comes
    // through; every RX buffer is posted again.
    void expect_dropped_then_good(uint64_t link::backend_errors::*counter, uint64_t count = 1) {
        std::vector<uint8_t> buf(4096);
        link::rx_info info;
        EXPECT_EQ(nf->recv(buf.data(), buf.size(), 0, &info).error(), -EAGAIN);
        auto f = pattern(200, 16);
        ASSERT_TRUE(be->deliver(bq(), f.data(), f.size()));
        auto r = nf->recv(buf.data(), buf.size(), 0, &info);
        ASSERT_TRUE(r) << r.error();
        EXPECT_EQ(*r, 200u);
        EXPECT_FALSE(info.direct);
        auto s = nf->stats();
        EXPECT_EQ(s.rx_errors, 1u);
        EXPECT_EQ(s.bad.*counter, count);
        EXPECT_EQ(s.rx_direct, 0u);
        EXPECT_FALSE(nf->broken());
        EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EAGAIN);
        EXPECT_EQ(be->rx_reqs_available(bq()), 256u);
    }

    hv::mapping rel_map;
    zd::release_back_ring rel;
};

TEST_F(NetfrontDirectHostile, WellFormedDescriptorAndItsRelease) {
    connect_direct();
    put_direct(42, {grant(7, 1234), desc(96, 1400, 0x2a5)});
    std::vector<uint8_t> buf(4096);
    link::rx_info info;
    auto r = nf->recv(buf.data(), buf.size(), 0, &info);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(*r, 42u);
    buf.resize(42);
    EXPECT_EQ(buf, pattern(42, 3));
    ASSERT_TRUE(info.direct);
    EXPECT_EQ(info.desc.domid, 7);
    EXPECT_EQ(info.desc.gref, 1234u);
    EXPECT_EQ(info.desc.offset, 96);
    EXPECT_EQ(info.desc.len, 1400);
    EXPECT_EQ(info.desc.cookie, 0x2a5);
    EXPECT_EQ(nf->stats().rx_direct, 1u);
    EXPECT_TRUE(released().empty()) << "nothing released before the caller says so";
    auto n = nf->release_direct(&info.desc.cookie, 1);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 1u);
    EXPECT_EQ(released(), std::vector<uint16_t>{0x2a5});
    // The backend did not know it: counted, nothing else.
    rel.write_response(rel.rsp_prod_pvt++, zc_direct_release_response{0x2a5, NETIF_RSP_ERROR});
    rel.push_responses_and_check_notify();
    EXPECT_EQ(nf->direct_bad_releases(), 1u);
    EXPECT_FALSE(nf->broken());
}

// recv_view shows the headers in place and the descriptor beside them.
TEST_F(NetfrontDirectHostile, DescriptorThroughRecvView) {
    connect_direct();
    put_direct(60, {grant(9, 77), desc(0, 4096, 3)});
    std::vector<uint8_t> seen;
    link::rx_info info;
    auto r = nf->recv_view(
        [](const uint8_t* f, size_t len, void* arg) noexcept {
            static_cast<std::vector<uint8_t>*>(arg)->assign(f, f + len);
        },
        &seen, 0, &info);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(seen, pattern(60, 3));
    ASSERT_TRUE(info.direct);
    EXPECT_EQ(info.desc.domid, 9);
    EXPECT_EQ(info.desc.gref, 77u);
    EXPECT_EQ(info.desc.len, 4096) << "a whole page";
    EXPECT_EQ(info.desc.cookie, 3);
    // An ordinary frame after it says so.
    auto f = pattern(100, 5);
    ASSERT_TRUE(be->deliver(bq(), f.data(), f.size()));
    ASSERT_TRUE(nf->recv_view([](const uint8_t*, size_t, void*) noexcept {}, nullptr, 0, &info));
    EXPECT_FALSE(info.direct);
    EXPECT_EQ(info.desc.cookie, 0);
}

TEST_F(NetfrontDirectHostile, PayloadBeyondItsPageDroppedAndReleased) {
    connect_direct();
    put_direct(42, {grant(7, 1), desc(4000, 200, 11)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
    EXPECT_EQ(released(), std::vector<uint16_t>{11}) << "the sender's request must complete";
    EXPECT_EQ(nf->stats().rx_direct_dropped, 1u);
}

TEST_F(NetfrontDirectHostile, HeadersLongerThanTheHeaderCopy) {
    connect_direct();
    put_direct(129, {grant(7, 1), desc(0, 100, 12)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
    EXPECT_EQ(released(), std::vector<uint16_t>{12});
}

TEST_F(NetfrontDirectHostile, ZeroLengthPayload) {
    connect_direct();
    put_direct(42, {grant(7, 1), desc(0, 0, 13)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
}

TEST_F(NetfrontDirectHostile, DescriptorWithoutGrant) {
    connect_direct();
    put_direct(42, {desc(0, 100, 14)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
    EXPECT_TRUE(released().empty()) << "no well-formed descriptor: no cookie to trust";
}

TEST_F(NetfrontDirectHostile, GrantWithoutDescriptor) {
    connect_direct();
    put_direct(42, {grant(7, 1, 0)}); // no FLAG_MORE: the extras end there
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
}

TEST_F(NetfrontDirectHostile, ExtrasTwice) {
    connect_direct();
    auto g = grant(7, 1);
    auto d = desc(0, 100, 15);
    d.flags = XEN_NETIF_EXTRA_FLAG_MORE;
    put_direct(42, {g, d, grant(7, 2), desc(0, 100, 16)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
}

TEST_F(NetfrontDirectHostile, HeadersInTwoSlots) {
    connect_direct();
    // The first slot says more data follows: a descriptor's headers are one slot.
    auto h = pattern(42, 3);
    auto a = be->take_rx_req(bq());
    ASSERT_TRUE(be->copy_to_rx(a, 0, h.data(), h.size()));
    be->put_rx_rsp(bq(), a.id, 0, NETRXF_extra_info | NETRXF_more_data, 42);
    (void)be->take_rx_req(bq());
    be->put_rx_extra(bq(), grant(7, 1));
    (void)be->take_rx_req(bq());
    be->put_rx_extra(bq(), desc(0, 100, 17));
    auto b = be->take_rx_req(bq());
    ASSERT_TRUE(be->copy_to_rx(b, 0, h.data(), h.size()));
    be->put_rx_rsp(bq(), b.id, 0, 0, 42);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_direct);
}

// A netfront that did not ask: our extra types are unknown types, as in
// Linux's xennet_get_extras ("Invalid extra type").
TEST_F(NetfrontDirectHostile, ExtrasWithoutTheOption) {
    connect_direct(false);
    put_direct(42, {grant(7, 1), desc(0, 100, 18)});
    expect_dropped_then_good(&link::backend_errors::rx_bad_extra, 2); // one per extra, as Linux warns per extra
}

// zc-direct-peers is the backend's to write; what does not parse is skipped.
TEST_F(NetfrontDirectHostile, PeersWithGarbage) {
    connect_direct();
    const std::string p = be_dir() + "/" + zd::key_peers;
    be->xs->write(p + "/00-16-3e-00-06-00", "6");
    be->xs->write(p + "/garbage", "7");
    be->xs->write(p + "/00-16-3e-00-07-00", "70000");
    be->xs->write(p + "/00-16-3e-00-08-00", "x");
    auto mac = [](uint8_t b) { return link::mac_addr{0x00, 0x16, 0x3e, 0x00, b, 0x00}; };
    ASSERT_TRUE(test::readable(nf->control_fd(), wait_ms));
    for (int i = 0; i < 100 && !nf->peer_domid(mac(6)); i++) {
        (void)nf->process_events();
        (void)test::readable(nf->control_fd(), 10);
    }
    auto d = nf->peer_domid(mac(6));
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, 6);
    EXPECT_EQ(nf->peer_domid(mac(7)).error(), -ENOENT);
    EXPECT_EQ(nf->peer_domid(mac(8)).error(), -ENOENT);
    be->xs->rm(p + "/00-16-3e-00-06-00");
    for (int i = 0; i < 100 && nf->peer_domid(mac(6)); i++) {
        (void)test::readable(nf->control_fd(), 10);
        (void)nf->process_events();
    }
    EXPECT_EQ(nf->peer_domid(mac(6)).error(), -ENOENT);
}

// The release ring: full after 512 unanswered cookies, room again once
// answered; more responses than requests break the netfront.
TEST_F(NetfrontDirectHostile, ReleaseRingFullThenOverflowingResponses) {
    connect_direct();
    std::vector<uint16_t> ck(600);
    for (size_t i = 0; i < ck.size(); i++) ck[i] = uint16_t(i);
    auto n = nf->release_direct(ck.data(), ck.size());
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 512u);
    EXPECT_EQ(*nf->release_direct(ck.data(), 1), 0u);
    EXPECT_EQ(released().size(), 512u);
    for (int i = 0; i < 512; i++)
        rel.write_response(rel.rsp_prod_pvt++, zc_direct_release_response{uint16_t(i), NETIF_RSP_OKAY});
    rel.push_responses_and_check_notify();
    n = nf->release_direct(ck.data() + 512, 88);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 88u);
    EXPECT_EQ(nf->direct_bad_releases(), 0u);
    // 88 outstanding; the backend claims 100 answers.
    rel.rsp_prod_pvt += 100;
    rel.push_responses_and_check_notify();
    EXPECT_EQ(nf->release_direct(ck.data(), 1).error(), -EIO);
    EXPECT_TRUE(nf->broken());
}

} // namespace
