// SPDX-License-Identifier: MIT
// The userspace netfront against a minimal fake netback written here (dom0
// side of the emulated host): the toolstack's directories as libxl writes
// them, the xenstore handshake, ring layouts for TX (slots, GSO extra) and
// RX (chains, extras), the event-index notification scheme, a hostile
// backend's responses, and the close. After the handshake everything runs
// in one thread, step by step, so nothing depends on timing.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sys/prctl.h>
#include <csignal>
#include <set>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "ring/netif_ring.hpp"
#include "netfront_fake_backend.hpp"

using namespace zc;
using namespace zc::test::netfront_fake;

namespace {

const std::set<std::string> toolstack_keys = {"backend", "backend-id", "handle", "mac", "state"};
const std::set<std::string> common_keys = {"request-rx-copy", "feature-rx-notify", "feature-sg",
                                           "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-ipv6-csum-offload"};

std::set<std::string> key_set(const std::map<std::string, std::string>& m) {
    std::set<std::string> s;
    for (auto& [k, v] : m) s.insert(k);
    return s;
}

// ---------------------------------------------------------------------------
// Handshake

// talk_to_netback with one queue: flat keys; multi-queue-num-queues is
// written because the backend has multi-queue-max-queues.
TEST_F(Netfront, SingleQueueWritesExactlyLinuxKeys) {
    offer o;
    o.max_queues = 4;
    ASSERT_EQ(connect(o), 0);
    std::set<std::string> want = toolstack_keys;
    want.insert(common_keys.begin(), common_keys.end());
    want.insert({"multi-queue-num-queues", "tx-ring-ref", "rx-ring-ref", "event-channel"});
    EXPECT_EQ(key_set(be->keys), want);
    EXPECT_EQ(be->keys["multi-queue-num-queues"], "1");
    EXPECT_EQ(be->keys["state"], "4");
    for (const auto& k : common_keys) EXPECT_EQ(be->keys[k], "1") << k;
    EXPECT_EQ(nf->queues(), 1u);
    EXPECT_FALSE(nf->split_event_channels());
    EXPECT_TRUE(nf->connected());
    EXPECT_EQ(nf->mac(), test_mac);
    EXPECT_EQ(nf->backend_id(), 0);
    EXPECT_EQ(nf->backend_path(), be_dir());
    // The keys inherit the directory's permissions: the backend may read them.
    auto perms = be->xs->get_perms(fe_dir() + "/tx-ring-ref");
    ASSERT_TRUE(perms);
    EXPECT_EQ(*perms, (std::vector<std::string>{"n5", "r0"}));
}

TEST_F(Netfront, NoMultiQueueKeyWithoutBackendSupportAndSharedChannelWithoutSplit) {
    offer o; // no multi-queue-max-queues, no split
    link::netfront_options opt;
    opt.max_queues = 4;
    opt.split_event_channels = true;
    ASSERT_EQ(connect(o, opt), 0);
    EXPECT_EQ(be->keys.count("multi-queue-num-queues"), 0u);
    EXPECT_EQ(be->keys.count("event-channel"), 1u);
    EXPECT_EQ(be->keys.count("event-channel-tx"), 0u);
    EXPECT_EQ(nf->queues(), 1u);
}

TEST_F(Netfront, MultiQueueSplitUsesQueueDirectories) {
    offer o;
    o.max_queues = 3;
    o.split = true;
    link::netfront_options opt;
    opt.max_queues = 8; // min(8, backend's 3)
    ASSERT_EQ(connect(o, opt), 0);
    std::set<std::string> want = toolstack_keys;
    want.insert(common_keys.begin(), common_keys.end());
    want.insert("multi-queue-num-queues");
    for (int i = 0; i < 3; i++)
        for (const char* k : {"tx-ring-ref", "rx-ring-ref", "event-channel-tx", "event-channel-rx"})
            want.insert("queue-" + std::to_string(i) + "/" + k);
    EXPECT_EQ(key_set(be->keys), want);
    EXPECT_EQ(be->keys["multi-queue-num-queues"], "3");
    EXPECT_EQ(nf->queues(), 3u);
    EXPECT_TRUE(nf->split_event_channels());
    // Distinct rings and ports everywhere.
    std::set<std::string> vals;
    for (int i = 0; i < 3; i++)
        for (const char* k : {"tx-ring-ref", "rx-ring-ref"}) vals.insert(be->keys["queue-" + std::to_string(i) + "/" + k]);
    EXPECT_EQ(vals.size(), 6u);
    for (uint32_t i = 0; i < 3; i++) {
        EXPECT_GE(nf->event_fd(i), 0);
        EXPECT_NE(bq(i).tx_port, bq(i).rx_port);
    }

    // Each queue carries its own traffic.
    for (uint32_t i = 0; i < 3; i++) {
        auto f = pattern(100 + i, i);
        ASSERT_EQ(nf->send(f.data(), f.size(), i), 0);
    }
    EXPECT_EQ(be->loopback(), 3);
    for (uint32_t i = 0; i < 3; i++) {
        std::vector<uint8_t> buf(200);
        auto r = nf->recv(buf.data(), buf.size(), i);
        ASSERT_TRUE(r) << r.error();
        EXPECT_EQ(*r, 100u + i);
        buf.resize(*r);
        EXPECT_EQ(buf, pattern(100 + i, i));
        EXPECT_EQ(nf->recv(buf.data(), buf.size(), i).error(), -EAGAIN);
        auto s = nf->stats(i);
        EXPECT_EQ(s.tx_packets, 1u);
        EXPECT_EQ(s.rx_packets, 1u);
    }
}

TEST_F(Netfront, BackendWithoutRxCopyIsENODEV) {
    offer o;
    o.rx_copy = false;
    std::thread t([&] {
        be->write_features(o);
        be->xs->write(be_dir() + "/state", "2");
    });
    std::string why;
    auto r = link::netfront::connect(*guest, {}, &why);
    t.join();
    EXPECT_EQ(r.error(), -ENODEV);
    EXPECT_NE(why.find("copying receive path"), std::string::npos) << why;
    EXPECT_EQ(be->fe_state(), XenbusStateInitialising) << "Linux leaves the device Initialising";
    EXPECT_EQ(be->xs->read(fe_dir() + "/tx-ring-ref").error(), -ENOENT);
}

TEST_F(Netfront, BackendClosingBeforeInitWaitIsECONNRESET) {
    be->xs->write(be_dir() + "/state", "5");
    std::string why;
    auto r = link::netfront::connect(*guest, {}, &why);
    EXPECT_EQ(r.error(), -ECONNRESET) << why;
    EXPECT_EQ(be->fe_state(), XenbusStateClosed);
}

TEST_F(Netfront, SilentBackendTimesOut) {
    link::netfront_options opt;
    opt.timeout_ms = 200;
    std::string why;
    auto r = link::netfront::connect(*guest, opt, &why);
    EXPECT_EQ(r.error(), -ETIMEDOUT);
    EXPECT_NE(why.find("InitWait"), std::string::npos) << why;
    EXPECT_EQ(be->fe_state(), XenbusStateInitialising);
}

TEST_F(Netfront, MissingFrontendDirectoryIsENOENT) {
    link::netfront_options opt;
    opt.devid = 7;
    std::string why;
    EXPECT_EQ(link::netfront::connect(*guest, opt, &why).error(), -ENOENT);
    EXPECT_NE(why.find("backend-id"), std::string::npos) << why;
}

TEST_F(Netfront, BadOptionsAreEINVAL) {
    for (auto f : {+[](link::netfront_options& o) { o.max_queues = 0; },
                   +[](link::netfront_options& o) { o.rx_buffers = 18; },
                   +[](link::netfront_options& o) { o.rx_buffers = 257; },
                   +[](link::netfront_options& o) { o.tx_buffers = 0; },
                   +[](link::netfront_options& o) { o.tx_buffers = 257; }}) {
        link::netfront_options o;
        f(o);
        EXPECT_EQ(link::netfront::connect(*guest, o, nullptr).error(), -EINVAL);
    }
}

TEST(NetfrontMac, ParsesLikeXenNetReadMac) {
    link::mac_addr m{};
    EXPECT_TRUE(parse_mac("00:16:3e:0a:Bb:ff", m, mac_allow_short));
    EXPECT_EQ(m, (link::mac_addr{0x00, 0x16, 0x3e, 0x0a, 0xbb, 0xff}));
    EXPECT_TRUE(parse_mac("0:16:3e:a:b:f", m, mac_allow_short));
    EXPECT_EQ(m, (link::mac_addr{0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0f}));
    for (const char* bad : {"", "00:16:3e:0a:bb", "00:16:3e:0a:bb:ff:", "00:16:3e:0a:bb:fff", "00-16-3e-0a-bb-ff",
                            "00:16:3e:0a:bb:fg", ":16:3e:0a:bb:ff"})
        EXPECT_FALSE(parse_mac(bad, m, mac_allow_short)) << bad;
}

// ---------------------------------------------------------------------------
// TX layout (xennet_start_xmit)

TEST_F(Netfront, TxSlotLayoutFrom60BytesTo64KiB) {
    ASSERT_EQ(connect(offer{}), 0);
    uint64_t slots_total = 0;
    for (size_t len : {size_t{60}, size_t{1514}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{8192}, size_t{9000},
                       size_t{32768}, size_t{65535}}) {
        SCOPED_TRACE(len);
        auto f = pattern(len, uint32_t(len));
        ASSERT_EQ(nf->send(f.data(), f.size()), 0);
        fake_backend::tx_packet p;
        ASSERT_TRUE(be->take_tx(bq(), p));
        size_t want_slots = (len + 4095) / 4096;
        ASSERT_EQ(p.slots.size(), want_slots);
        EXPECT_FALSE(p.has_extra);
        EXPECT_EQ(p.slots[0].size, len) << "the first slot carries the frame's length";
        std::set<uint16_t> ids;
        for (size_t i = 0; i < p.slots.size(); i++) {
            EXPECT_EQ(p.slots[i].offset, 0u);
            EXPECT_EQ(bool(p.slots[i].flags & NETTXF_more_data), i + 1 < p.slots.size()) << i;
            EXPECT_EQ(p.slots[i].flags & ~uint16_t(NETTXF_more_data), 0u) << "no offload asked";
            if (i > 0) {
                EXPECT_EQ(p.slots[i].size, std::min<size_t>(4096, len - i * 4096)) << i;
            }
            ids.insert(p.slots[i].id);
        }
        EXPECT_EQ(ids.size(), p.slots.size()) << "one id per slot";
        ASSERT_TRUE(p.copy_ok) << "every gref is granted to the backend";
        EXPECT_EQ(p.data, f);
        EXPECT_EQ(be->tx_req_prod(bq()), bq().tx.req_cons) << "nothing else was posted";
        be->answer_tx(bq(), p);
        slots_total += want_slots;
    }
    ASSERT_GE(nf->process_events(), 0);
    auto s = nf->stats();
    EXPECT_EQ(s.tx_packets, 9u);
    EXPECT_EQ(s.tx_slots, slots_total);
    EXPECT_EQ(s.tx_completed, slots_total);
    EXPECT_EQ(s.tx_errors, 0u);

    auto big = pattern(65536, 1);
    EXPECT_EQ(nf->send(big.data(), big.size()), -EMSGSIZE);
    EXPECT_EQ(nf->send(big.data(), 13), -EINVAL);
    EXPECT_EQ(nf->send(nullptr, 60), -EINVAL);
    EXPECT_EQ(nf->send(big.data(), 60, 1), -EINVAL) << "no such queue";
}

TEST_F(Netfront, TxChecksumFlagsAsLinuxSetsThem) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(200, 3);
    link::tx_offload partial;
    partial.csum_blank = true;
    link::tx_offload validated;
    validated.data_validated = true;
    ASSERT_EQ(nf->send(f.data(), f.size(), 0, &partial), 0);
    ASSERT_EQ(nf->send(f.data(), f.size(), 0, &validated), 0);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    EXPECT_EQ(p.slots[0].flags, NETTXF_csum_blank | NETTXF_data_validated);
    ASSERT_TRUE(be->take_tx(bq(), p));
    EXPECT_EQ(p.slots[0].flags, NETTXF_data_validated);
}

TEST_F(Netfront, WithoutBackendSgFramesAreLimitedTo1514) {
    offer o;
    o.sg = false;
    ASSERT_EQ(connect(o), 0);
    EXPECT_EQ(nf->max_frame(), 1514u);
    auto f = pattern(1515, 4);
    EXPECT_EQ(nf->send(f.data(), 1515), -EMSGSIZE);
    ASSERT_EQ(nf->send(f.data(), 1514), 0);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    EXPECT_EQ(p.slots.size(), 1u);
    link::tx_offload gso;
    gso.gso_size = 1448;
    gso.gso_type = XEN_NETIF_GSO_TYPE_TCPV4;
    EXPECT_EQ(nf->send(f.data(), 1000, 0, &gso), -EOPNOTSUPP) << "TSO needs SG";
}

TEST_F(Netfront, GsoExtraFollowsTheFirstSlot) {
    offer o;
    o.gso6 = false;
    ASSERT_EQ(connect(o), 0);
    auto f = pattern(20000, 5);
    link::tx_offload gso;
    gso.gso_size = 1448;
    gso.gso_type = XEN_NETIF_GSO_TYPE_TCPV4;
    ASSERT_EQ(nf->send(f.data(), f.size(), 0, &gso), 0);

    // Raw ring: request, extra, then the other slots.
    RING_IDX c = bq().tx.req_cons;
    auto r0 = bq().tx.read_request<netif_tx_request_t>(c);
    auto ex = bq().tx.read_request<netif_extra_info_t>(c + 1);
    auto r1 = bq().tx.read_request<netif_tx_request_t>(c + 2);
    EXPECT_EQ(r0.flags, NETTXF_csum_blank | NETTXF_data_validated | NETTXF_more_data | NETTXF_extra_info);
    EXPECT_EQ(r0.size, 20000u);
    EXPECT_EQ(ex.type, XEN_NETIF_EXTRA_TYPE_GSO);
    EXPECT_EQ(ex.flags, 0u);
    EXPECT_EQ(ex.u.gso.size, 1448u);
    EXPECT_EQ(ex.u.gso.type, XEN_NETIF_GSO_TYPE_TCPV4);
    EXPECT_EQ(ex.u.gso.pad, 0u);
    EXPECT_EQ(ex.u.gso.features, 0u);
    EXPECT_EQ(r1.size, 4096u);
    EXPECT_EQ(be->tx_req_prod(bq()) - c, 1u + 1u + 4u) << "5 data slots and one extra";

    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    ASSERT_TRUE(p.has_extra);
    ASSERT_EQ(p.slots.size(), 5u);
    EXPECT_EQ(p.data, f);
    be->answer_tx(bq(), p); // with a NULL response for the extra
    ASSERT_GE(nf->process_events(), 0);
    auto s = nf->stats();
    EXPECT_EQ(s.tx_completed, 5u);
    EXPECT_EQ(s.tx_extras, 1u);
    EXPECT_FALSE(nf->broken());

    gso.gso_type = XEN_NETIF_GSO_TYPE_TCPV6;
    EXPECT_EQ(nf->send(f.data(), f.size(), 0, &gso), -EOPNOTSUPP) << "backend did not offer gso-tcpv6";
    gso.gso_type = 7;
    EXPECT_EQ(nf->send(f.data(), f.size(), 0, &gso), -EINVAL);
    gso.gso_type = XEN_NETIF_GSO_TYPE_TCPV4;
    gso.gso_size = 0;
    EXPECT_EQ(nf->send(f.data(), f.size(), 0, &gso), -EINVAL) << "a GSO type without a size";
}

TEST_F(Netfront, FullTxIsEAGAINUntilResponsesComeBack) {
    link::netfront_options opt;
    opt.tx_buffers = 4;
    ASSERT_EQ(connect(offer{}, opt), 0);
    auto f = pattern(5000, 6); // two slots each
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    EXPECT_EQ(nf->send(f.data(), 60), -EAGAIN);
    EXPECT_EQ(nf->tx_reserve().error(), -EAGAIN);
    EXPECT_EQ(nf->stats().tx_busy, 2u);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    be->answer_tx(bq(), p);
    // send() reclaims completed pages itself (xennet_tx_buf_gc).
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    EXPECT_EQ(nf->send(f.data(), 60), -EAGAIN);
}

TEST_F(Netfront, FullTxRingIsEAGAIN) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(60, 7);
    int sent = 0;
    while (nf->send(f.data(), f.size()) == 0) sent++;
    EXPECT_EQ(sent, 256) << "one slot each, 256 TX pages and ring entries";
    EXPECT_EQ(nf->send(f.data(), f.size()), -EAGAIN);
    EXPECT_EQ(be->tx_req_prod(bq()) - bq().tx.req_cons, 256u);
}

TEST_F(Netfront, ZeroCopyTxReserveSubmitRelease) {
    ASSERT_EQ(connect(offer{}), 0);
    auto b = nf->tx_reserve();
    ASSERT_TRUE(b);
    auto f = pattern(1000, 8);
    std::memcpy(b->data, f.data(), f.size());
    EXPECT_EQ(nf->tx_submit(*b, 4097), -EMSGSIZE);
    ASSERT_EQ(nf->tx_submit(*b, f.size()), 0);
    EXPECT_EQ(nf->tx_submit(*b, f.size()), -EINVAL) << "no longer reserved";
    EXPECT_EQ(nf->tx_release(*b), -EINVAL);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    EXPECT_EQ(p.data, f);
    EXPECT_EQ(p.slots[0].id, b->id);
    auto b2 = nf->tx_reserve();
    ASSERT_TRUE(b2);
    EXPECT_EQ(nf->tx_release(*b2), 0);
    link::tx_buffer forged{b2->data + 1, b2->id};
    auto b3 = nf->tx_reserve();
    ASSERT_TRUE(b3);
    forged.id = b3->id;
    EXPECT_EQ(nf->tx_submit(forged, 100), -EINVAL) << "pointer must be the reserved page";
}

// ---------------------------------------------------------------------------
// RX (xennet_alloc_rx_buffers, xennet_poll)

TEST_F(Netfront, RxBuffersPostedAtConnectWithRingPositionIds) {
    link::netfront_options opt;
    opt.rx_buffers = 64;
    ASSERT_EQ(connect(offer{}, opt), 0);
    ASSERT_EQ(be->rx_reqs_available(bq()), 64u);
    std::set<hv::gref_t> refs;
    for (RING_IDX i = 0; i < 64; i++) {
        auto r = bq().rx.read_request<netif_rx_request_t>(i);
        EXPECT_EQ(r.id, i & 255u) << "xennet_rxidx";
        refs.insert(r.gref);
    }
    EXPECT_EQ(refs.size(), 64u);
    EXPECT_EQ(nf->stats().rx_posted, 64u);
}

TEST_F(Netfront, LoopbackFrom60BytesTo64KiBKeepsEveryByte) {
    ASSERT_EQ(connect(offer{}), 0);
    std::vector<uint8_t> buf(70000);
    uint64_t bytes = 0;
    for (size_t len : {size_t{60}, size_t{61}, size_t{1514}, size_t{4096}, size_t{4097}, size_t{16384}, size_t{40000},
                       size_t{65535}}) {
        SCOPED_TRACE(len);
        auto f = pattern(len, uint32_t(len) + 9);
        ASSERT_EQ(nf->send(f.data(), f.size()), 0);
        ASSERT_EQ(be->loopback(), 1);
        link::rx_info info;
        auto r = nf->recv(buf.data(), buf.size(), 0, &info);
        ASSERT_TRUE(r) << r.error();
        ASSERT_EQ(*r, len);
        EXPECT_TRUE(std::equal(f.begin(), f.end(), buf.begin()));
        EXPECT_EQ(info.slots, (len + 4095) / 4096);
        EXPECT_EQ(info.extras, 0u);
        EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EAGAIN);
        bytes += len;
    }
    auto s = nf->stats();
    EXPECT_EQ(s.rx_packets, 8u);
    EXPECT_EQ(s.rx_bytes, bytes);
    EXPECT_EQ(s.rx_errors, 0u);
    // Every consumed buffer was posted again.
    EXPECT_EQ(be->rx_reqs_available(bq()), 256u);
}

TEST_F(Netfront, RxGsoExtraAndChecksumFlagsAreReported) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(30000, 10);
    link::tx_offload gso;
    gso.gso_size = 1400;
    gso.gso_type = XEN_NETIF_GSO_TYPE_TCPV6;
    ASSERT_EQ(nf->send(f.data(), f.size(), 0, &gso), 0);
    ASSERT_EQ(be->loopback(), 1);
    std::vector<uint8_t> buf(65536);
    link::rx_info info;
    auto r = nf->recv(buf.data(), buf.size(), 0, &info);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(*r, 30000u);
    EXPECT_TRUE(std::equal(f.begin(), f.end(), buf.begin()));
    EXPECT_EQ(info.gso_size, 1400u);
    EXPECT_EQ(info.gso_type, XEN_NETIF_GSO_TYPE_TCPV6);
    EXPECT_EQ(info.flags, NETRXF_csum_blank | NETRXF_data_validated);
    EXPECT_EQ(info.slots, 8u);
    EXPECT_EQ(info.extras, 1u);
}

// A chain with offsets and uneven sizes, as a backend may produce.
TEST_F(Netfront, RxChainWithOffsetsIsAssembled) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(100 + 3000 + 7, 11);
    auto& q = bq();
    struct piece { uint16_t off; size_t len; };
    piece ps[] = {{50, 100}, {1000, 3000}, {4089, 7}};
    size_t at = 0;
    for (size_t i = 0; i < 3; i++) {
        auto req = be->take_rx_req(q);
        ASSERT_TRUE(be->copy_to_rx(req, ps[i].off, f.data() + at, ps[i].len));
        be->put_rx_rsp(q, req.id, ps[i].off, i < 2 ? NETRXF_more_data : 0, int16_t(ps[i].len));
        at += ps[i].len;
    }
    be->push_rx(q);
    std::vector<uint8_t> buf(8192);
    auto r = nf->recv(buf.data(), buf.size());
    ASSERT_TRUE(r) << r.error();
    ASSERT_EQ(*r, f.size());
    EXPECT_TRUE(std::equal(f.begin(), f.end(), buf.begin()));
}

TEST_F(Netfront, RecvTooSmallIsEMSGSIZEAndKeepsTheFrame) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(3000, 12);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    ASSERT_EQ(be->loopback(), 1);
    std::vector<uint8_t> buf(4096);
    link::rx_info info;
    EXPECT_EQ(nf->recv(buf.data(), 100, 0, &info).error(), -EMSGSIZE);
    EXPECT_EQ(info.len, 3000u);
    auto r = nf->recv(buf.data(), buf.size(), 0, &info);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 3000u);
    EXPECT_EQ(nf->recv(nullptr, 10).error(), -EINVAL);
}

// ---------------------------------------------------------------------------
// Notifications: the event-index scheme batches them.

TEST_F(Netfront, TxNotifiesOnlyWhenTheBackendAsks) {
    ASSERT_EQ(connect(offer{}), 0);
    auto& q = bq();
    auto f = pattern(60, 13);
    uint64_t n0 = nf->stats().tx_notifies;
    // A busy backend: it will look at the ring again by itself, so it moves
    // req_event far ahead (as RING_FINAL_CHECK_FOR_REQUESTS is not called).
    q.tx_sring()->req_event = q.tx.req_cons + 1000;
    for (int i = 0; i < 5; i++) ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    EXPECT_EQ(nf->stats().tx_notifies, n0) << "no kick while the backend is not waiting";
    // An idle backend: RING_FINAL_CHECK_FOR_REQUESTS asks for the next one.
    fake_backend::tx_packet p;
    while (be->take_tx(q, p)) be->answer_tx(q, p);
    EXPECT_FALSE(q.tx.final_check_for_requests());
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    EXPECT_EQ(nf->stats().tx_notifies, n0 + 1);
    // The kick arrived on the backend's port.
    ASSERT_TRUE(test::readable(be->ev->fd(), wait_ms));
    auto port = be->ev->pending();
    ASSERT_TRUE(port);
    EXPECT_EQ(*port, q.tx_port);
    be->ev->unmask(*port);
}

TEST_F(Netfront, RecvRearmsRspEventOnlyWhenIdle) {
    ASSERT_EQ(connect(offer{}), 0);
    auto& q = bq();
    auto f = pattern(60, 14);
    std::vector<uint8_t> buf(100);
    for (int i = 0; i < 3; i++) ASSERT_TRUE(be->deliver(q, f.data(), f.size()));
    // Only the first response crossed rsp_event (1): one kick.
    ASSERT_TRUE(test::readable(nf->event_fd(0), wait_ms));
    EXPECT_EQ(nf->process_events(), 1);
    RING_IDX ev_before = q.rx_sring()->rsp_event;
    ASSERT_TRUE(nf->recv(buf.data(), buf.size()));
    ASSERT_TRUE(nf->recv(buf.data(), buf.size()));
    EXPECT_EQ(q.rx_sring()->rsp_event, ev_before) << "not idle yet: no re-arm";
    ASSERT_TRUE(nf->recv(buf.data(), buf.size()));
    EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EAGAIN);
    EXPECT_EQ(q.rx_sring()->rsp_event, q.rx.rsp_prod_pvt + 1) << "RING_FINAL_CHECK_FOR_RESPONSES";
    // The next response is signalled; the netfront sees it on its fd.
    ASSERT_TRUE(be->deliver(q, f.data(), f.size()));
    ASSERT_TRUE(test::readable(nf->event_fd(0), wait_ms));
    EXPECT_EQ(nf->process_events(), 1);
    EXPECT_EQ(nf->stats().events, 2u);
    ASSERT_TRUE(nf->recv(buf.data(), buf.size()));
}

TEST_F(Netfront, RxRefillKicksAWaitingBackend) {
    link::netfront_options opt;
    opt.rx_buffers = 32;
    ASSERT_EQ(connect(offer{}, opt), 0);
    auto& q = bq();
    auto f = pattern(60, 15);
    std::vector<uint8_t> buf(100);
    for (int i = 0; i < 32; i++) ASSERT_TRUE(be->deliver(q, f.data(), f.size()));
    EXPECT_FALSE(be->deliver(q, f.data(), f.size())) << "out of buffers";
    EXPECT_FALSE(q.rx.final_check_for_requests()); // the backend waits for buffers
    uint64_t n0 = nf->stats().rx_notifies;
    while (nf->recv(buf.data(), buf.size())) {}
    EXPECT_EQ(be->rx_reqs_available(q), 32u);
    EXPECT_EQ(nf->stats().rx_notifies, n0 + 1) << "one kick for the refill batch that crossed req_event";
}

// ---------------------------------------------------------------------------
// A hostile backend: every bad response is counted, nothing crashes.

class NetfrontHostileRx : public Netfront {
protected:
    // After the bad chain, a good frame must still come through.
    void expect_dropped_then_good(uint64_t link::backend_errors::*counter, const char* what) {
        SCOPED_TRACE(what);
        std::vector<uint8_t> buf(100000);
        // The bad chain is what the backend published last ("Missing extra
        // info" and "Need more slots" only apply then): dropped, nothing to read.
        EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EAGAIN);
        EXPECT_EQ(nf->stats().rx_errors, 1u);
        auto f = pattern(200, 16);
        ASSERT_TRUE(be->deliver(bq(), f.data(), f.size()));
        auto r = nf->recv(buf.data(), buf.size());
        ASSERT_TRUE(r) << r.error();
        EXPECT_EQ(*r, 200u);
        EXPECT_TRUE(std::equal(f.begin(), f.end(), buf.begin()));
        auto s = nf->stats();
        EXPECT_EQ(s.rx_errors, 1u);
        EXPECT_EQ(s.bad.*counter, 1u);
        EXPECT_EQ(s.rx_packets, 1u);
        EXPECT_FALSE(nf->broken());
        EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EAGAIN);
        // No buffer leaked: all posted again.
        EXPECT_EQ(be->rx_reqs_available(bq()), 256u);
    }
};

TEST_F(NetfrontHostileRx, OffsetPlusSizeBeyondThePage) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 4000, 0, 200);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_status, "offset 4000 size 200");
}

TEST_F(NetfrontHostileRx, OversizedStatus) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 0, 0, 32767);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_status, "status 32767");
}

TEST_F(NetfrontHostileRx, NegativeStatusInAChain) {
    ASSERT_EQ(connect(offer{}), 0);
    auto a = be->take_rx_req(bq());
    auto b = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), a.id, 0, NETRXF_more_data, 100);
    be->put_rx_rsp(bq(), b.id, 0, 0, NETIF_RSP_ERROR);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_status, "status -1");
}

TEST_F(NetfrontHostileRx, WrongId) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), uint16_t(req.id + 7), 0, 0, 100);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_id_mismatch, "id of another slot");
}

TEST_F(NetfrontHostileRx, MissingExtra) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 0, NETRXF_extra_info, 100);
    be->push_rx(bq()); // the extra never comes
    expect_dropped_then_good(&link::backend_errors::rx_missing_extra, "extra flag, no extra");
}

TEST_F(NetfrontHostileRx, InvalidExtraType) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    (void)be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 0, NETRXF_extra_info, 100);
    netif_extra_info_t ex{};
    ex.type = XEN_NETIF_EXTRA_TYPE_MAX;
    be->put_rx_extra(bq(), ex);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_extra, "extra type 5");
}

TEST_F(NetfrontHostileRx, GsoSizeZero) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    (void)be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 0, NETRXF_extra_info, 100);
    netif_extra_info_t ex{};
    ex.type = XEN_NETIF_EXTRA_TYPE_GSO;
    ex.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV4;
    ex.u.gso.size = 0;
    be->put_rx_extra(bq(), ex);
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_bad_gso, "gso size 0");
}

TEST_F(NetfrontHostileRx, IncompleteChain) {
    ASSERT_EQ(connect(offer{}), 0);
    auto req = be->take_rx_req(bq());
    be->put_rx_rsp(bq(), req.id, 0, NETRXF_more_data, 100);
    be->push_rx(bq()); // the rest of the chain is not published
    expect_dropped_then_good(&link::backend_errors::rx_incomplete, "more_data on the last response");
}

TEST_F(NetfrontHostileRx, TooManySlots) {
    ASSERT_EQ(connect(offer{}), 0);
    // 20 slots of 1000 bytes: over XEN_NETIF_NR_SLOTS_MIN + 1.
    for (int i = 0; i < 20; i++) {
        auto req = be->take_rx_req(bq());
        be->put_rx_rsp(bq(), req.id, 0, i < 19 ? NETRXF_more_data : 0, 1000);
    }
    be->push_rx(bq());
    expect_dropped_then_good(&link::backend_errors::rx_too_many_slots, "20 slots");
}

TEST_F(Netfront, NineteenSlotsOfSmallFirstSlotAreAccepted) {
    ASSERT_EQ(connect(offer{}), 0);
    // Linux allows one more slot when the first is <= RX_COPY_THRESHOLD.
    std::vector<uint8_t> all;
    for (int i = 0; i < 19; i++) {
        auto part = pattern(i == 0 ? 200 : 1000, uint32_t(i));
        auto req = be->take_rx_req(bq());
        ASSERT_TRUE(be->copy_to_rx(req, 0, part.data(), part.size()));
        be->put_rx_rsp(bq(), req.id, 0, i < 18 ? NETRXF_more_data : 0, int16_t(part.size()));
        all.insert(all.end(), part.begin(), part.end());
    }
    be->push_rx(bq());
    std::vector<uint8_t> buf(100000);
    auto r = nf->recv(buf.data(), buf.size());
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(*r, all.size());
    EXPECT_TRUE(std::equal(all.begin(), all.end(), buf.begin()));
}

TEST_F(Netfront, MoreRxResponsesThanRequestsBreaksTheDevice) {
    link::netfront_options opt;
    opt.rx_buffers = 32;
    ASSERT_EQ(connect(offer{}, opt), 0);
    // Responses for positions that were never posted (Linux: "Illegal
    // number of responses" / "Bad rx response id").
    bq().rx_sring()->rsp_prod = 40;
    std::vector<uint8_t> buf(100);
    EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EIO);
    EXPECT_TRUE(nf->broken());
    EXPECT_FALSE(nf->connected());
    EXPECT_EQ(nf->stats().bad.rsp_prod_overflow, 1u);
    auto f = pattern(60, 17);
    EXPECT_EQ(nf->send(f.data(), f.size()), -EIO);
    EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -EIO);
    EXPECT_NE(nf->broken_reason().find("illegal number of responses"), std::string::npos) << nf->broken_reason();
}

TEST_F(Netfront, TxResponseWithIncorrectIdBreaksTheDevice) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(60, 18);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    be->put_tx_rsp(bq(), 300, NETIF_RSP_OKAY);
    be->push_tx(bq());
    EXPECT_EQ(nf->process_events(), -EIO);
    EXPECT_TRUE(nf->broken());
    EXPECT_EQ(nf->stats().bad.tx_bad_id, 1u);
    EXPECT_EQ(nf->send(f.data(), f.size()), -EIO);
}

TEST_F(Netfront, TxResponseForInactiveRequestBreaksTheDevice) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(60, 19);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    // Answer the first request twice (the second response is for an id that
    // is no longer pending).
    be->put_tx_rsp(bq(), p.slots[0].id, NETIF_RSP_OKAY);
    be->put_tx_rsp(bq(), p.slots[0].id, NETIF_RSP_OKAY);
    be->push_tx(bq());
    EXPECT_EQ(nf->process_events(), -EIO);
    EXPECT_EQ(nf->stats().bad.tx_inactive_id, 1u);
    EXPECT_EQ(nf->stats().tx_completed, 1u);
}

TEST_F(Netfront, TxErrorResponsesAreCountedNotFatal) {
    ASSERT_EQ(connect(offer{}), 0);
    auto f = pattern(6000, 20);
    ASSERT_EQ(nf->send(f.data(), f.size()), 0);
    fake_backend::tx_packet p;
    ASSERT_TRUE(be->take_tx(bq(), p));
    be->answer_tx(bq(), p, NETIF_RSP_ERROR);
    EXPECT_GE(nf->process_events(), 0);
    auto s = nf->stats();
    EXPECT_EQ(s.tx_errors, 2u);
    EXPECT_EQ(s.tx_completed, 2u);
    EXPECT_FALSE(nf->broken());
}

TEST_F(Netfront, MoreTxResponsesThanRequestsBreaksTheDevice) {
    ASSERT_EQ(connect(offer{}), 0);
    bq().tx_sring()->rsp_prod = 3;
    EXPECT_EQ(nf->process_events(), -EIO);
    EXPECT_EQ(nf->stats().bad.rsp_prod_overflow, 1u);
}

// ---------------------------------------------------------------------------
// Close

TEST_F(Netfront, DisconnectFollowsTheStateMachineAndEndsEveryGrant) {
    offer o;
    o.max_queues = 2;
    o.split = true;
    link::netfront_options opt;
    opt.max_queues = 2;
    ASSERT_EQ(connect(o, opt), 0);
    auto shared = nf->grant_counters();
    EXPECT_EQ(shared.shares, 2u * (2 + 256 + 256));
    hv::gref_t old_ring = bq(0).tx_ref;

    bool served = false;
    std::thread t([&] { served = be->serve_close(true); });
    EXPECT_EQ(nf->disconnect(), 0);
    t.join();
    EXPECT_TRUE(served);
    EXPECT_EQ(be->fe_state(), XenbusStateClosed);
    auto c = nf->grant_counters();
    EXPECT_EQ(c.unshares, c.shares) << "every grant ended";
    EXPECT_FALSE(nf->connected());
    hv::domid_t fe = fe_dom;
    int16_t st = 0;
    EXPECT_FALSE(be->gt->map(1, &fe, &old_ring, true, &st)) << "the old ring is no longer granted";
    auto f = pattern(60, 21);
    EXPECT_EQ(nf->send(f.data(), f.size()), -ENOTCONN);
    std::vector<uint8_t> buf(100);
    EXPECT_EQ(nf->recv(buf.data(), buf.size()).error(), -ENOTCONN);
    EXPECT_EQ(nf->disconnect(), 0) << "idempotent";
}

TEST_F(Netfront, DisconnectReportsEBUSYWhileTheBackendStillMaps) {
    link::netfront_options opt;
    opt.unshare_retry_ms = 50;
    ASSERT_EQ(connect(offer{}, opt), 0);
    bool served = false;
    std::thread t([&] { served = be->serve_close(false); }); // follows the states but keeps the rings mapped
    EXPECT_EQ(nf->disconnect(), -EBUSY);
    t.join();
    EXPECT_TRUE(served);
    auto c = nf->grant_counters();
    EXPECT_EQ(c.unshares, c.shares - 2) << "only the two mapped ring pages are left";
    be->unmap_all();
    EXPECT_EQ(nf->disconnect(), 0) << "retried once the backend let go";
    c = nf->grant_counters();
    EXPECT_EQ(c.unshares, c.shares);
}

// A backend that unmaps a little after it went Closed: the grants end
// within the retry window.
TEST_F(Netfront, DisconnectRetriesGrantsTheBackendReleasesLate) {
    ASSERT_EQ(connect(offer{}), 0);
    bool served = false;
    std::thread t([&] {
        served = be->serve_close(false);
        ::usleep(100 * 1000); // long after the netfront's first attempt
        be->unmap_all();
    });
    EXPECT_EQ(nf->disconnect(), 0);
    t.join();
    EXPECT_TRUE(served);
    auto c = nf->grant_counters();
    EXPECT_EQ(c.unshares, c.shares);
}

TEST_F(Netfront, BackendClosingMakesUsClosedAndReleasesTheRings) {
    ASSERT_EQ(connect(offer{}), 0);
    // Linux netback: disconnect (unmap), then Closing.
    be->unmap_all();
    ASSERT_EQ(be->xs->write(be_dir() + "/state", "5"), 0);
    ASSERT_GT(nf->wait(wait_ms), 0) << "the state watch fired";
    EXPECT_EQ(be->fe_state(), XenbusStateClosed) << "xenbus_frontend_closed";
    EXPECT_FALSE(nf->connected());
    auto c = nf->grant_counters();
    EXPECT_EQ(c.unshares, c.shares);
    auto f = pattern(60, 22);
    EXPECT_EQ(nf->send(f.data(), f.size()), -ENOTCONN);
    be->xs->write(be_dir() + "/state", "6");
    EXPECT_EQ(nf->disconnect(), 0);
}

// The real arrangement: the netfront in its own process (a guest), the
// backend in dom0.
TEST(NetfrontProcess, GuestProcessExchangesFramesWithDom0) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    fake_backend be(host);
    ASSERT_TRUE(be.ok());
    toolstack_add_vif(*be.xs, fe_dom, devid);
    test::chan done;
    pid_t pid = test::spawn([&]() -> int {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL); // never outlive a failed test
        auto me = host.domain(fe_dom);
        if (!me) return 10;
        std::string why;
        auto r = link::netfront::connect(*me, {}, &why);
        if (!r) return 11;
        auto& n = **r;
        std::vector<uint8_t> buf(70000);
        for (size_t len : {size_t{60}, size_t{9000}, size_t{65535}}) {
            auto f = pattern(len, 99);
            if (n.send(f.data(), f.size()) != 0) return 12;
            for (int tries = 0;; tries++) {
                auto got = n.recv(buf.data(), buf.size());
                if (got) {
                    if (*got != len || !std::equal(f.begin(), f.end(), buf.begin())) return 13;
                    break;
                }
                if (got.error() != -EAGAIN) return 14;
                if (tries == 20 || n.wait(wait_ms) <= 0) return 15; // an event per frame, or it is lost
            }
        }
        int one = 1;
        done.put(one);
        return n.disconnect() == 0 ? 0 : 16;
    });
    ASSERT_EQ(be.handshake(offer{}), 0);
    // Loop frames back until the guest says it is done.
    for (;;) {
        be.loopback();
        pollfd p[2] = {{be.ev->fd(), POLLIN, 0}, {done.fd[0], POLLIN, 0}};
        ASSERT_GT(::poll(p, 2, wait_ms), 0) << "guest stalled";
        if (p[1].revents) break;
        while (auto port = be.ev->pending()) be.ev->unmask(*port);
    }
    ASSERT_TRUE(be.serve_close(true));
    EXPECT_EQ(test::reap(pid), 0);
}

} // namespace
