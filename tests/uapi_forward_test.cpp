// SPDX-License-Identifier: MIT
// Sending a received buffer on without a copy (zc.h, BUFFER OWNERSHIP:
// RX -> zc_send -> the stack's): forwarders and echo servers. The receive
// buffers are in the socket's granted pool (uapi/README.md, "Pools"), so
// zc-stackd hands the backend their grant as it does a send buffer's, and
// the buffer goes back to the stack's receive buffers at its completion,
// not to the application. Memory outside the socket's pool, another
// socket's received buffer included, is never sent in place.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

void fill(void* b, uint32_t len, uint32_t seed) {
    for (uint32_t i = 0; i < len; i++) static_cast<uint8_t*>(b)[i] = uint8_t(i * 13 + seed);
}

bool same(const void* b, uint32_t len, uint32_t seed) {
    for (uint32_t i = 0; i < len; i++)
        if (static_cast<const uint8_t*>(b)[i] != uint8_t(i * 13 + seed)) return false;
    return true;
}

uint64_t rx_bufs_sent(uapi_rig& r, int d) { return r.g[d].svc->stats().tx_rx_bufs; }

} // namespace

// A forwarder on guest 2 with 4 receive buffers relays 3 x 4 datagrams from
// a client on guest 1 to a sink on guest 1, each from the buffer it arrived
// in: zero copy, payload intact, the buffer the stack's again after the
// completion (without that the forwarder would run out after 4).
TEST(UapiForward, ReceivedBufferIsSentOnWithoutACopy) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    const uint32_t rxn = 4;
    int cli = r.open(1), sink = r.open(1), fwd = r.open(2, ZC_SOCK_STRICT, 0, rxn);
    ASSERT_GE(cli, 0);
    ASSERT_GE(sink, 0);
    ASSERT_GE(fwd, 0);
    sockaddr_in fb = addr_of(0, 7601), sb = addr_of(0, 7602);
    ASSERT_EQ(zc_bind(fwd, &fb), 0);
    ASSERT_EQ(zc_bind(sink, &sb), 0);
    const sockaddr_in to_fwd = addr_of(guest_ip(2), 7601), to_sink = addr_of(guest_ip(1), 7602);
    const uint64_t before = rx_bufs_sent(r, 2);
    for (uint32_t i = 0; i < 3 * rxn; i++) {
        SCOPED_TRACE(i);
        const uint32_t len = 1 + i * 97 % 1472;
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(cli, &b), 0);
        fill(b, len, i);
        ASSERT_EQ(zc_send(cli, b, len, &to_fwd, 0, i), ZC_SENT_ZEROCOPY);
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(fwd, &d, 1, 5000), 1);
        ASSERT_EQ(d.len, len);
        ASSERT_EQ(zc_send(fwd, d.data, d.len, &to_sink, 0, 100 + i), ZC_SENT_ZEROCOPY);
        // The stack's now: neither released nor sent again by us.
        EXPECT_EQ(zc_rx_release(fwd, d.data), -EALREADY);
        const int again = zc_send(fwd, d.data, d.len, &to_sink, 0, 0);
        EXPECT_TRUE(again == -EBUSY || again == -EINVAL) << again;
        zc_rxd got{};
        ASSERT_EQ(zc_recv_wait(sink, &got, 1, 5000), 1);
        ASSERT_EQ(got.len, len);
        EXPECT_TRUE(same(got.data, len, i));
        EXPECT_EQ(zc_rx_release(sink, got.data), 0);
        zc_completion c{};
        ASSERT_EQ(reap(fwd, &c, 1), 1);
        EXPECT_EQ(c.user_data, 100 + i);
        EXPECT_EQ(c.res, int32_t(len));
        EXPECT_EQ(c.flags, 0u);
        // Completed: the buffer belongs to the stack's receive buffers again.
        EXPECT_EQ(zc_send(fwd, d.data, d.len, &to_sink, 0, 0), -EINVAL);
        ASSERT_EQ(reap(cli, &c, 1), 1);
        EXPECT_EQ(zc_buf_free(cli, b), 0);
    }
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(fwd, &st), 0);
    EXPECT_EQ(st.zc_sends, 3 * rxn);
    EXPECT_EQ(st.copied_sends, 0u);
    EXPECT_EQ(st.rx_drops, 0u);
    EXPECT_EQ(st.send_errors, 0u);
    EXPECT_EQ(rx_bufs_sent(r, 2) - before, 3 * rxn);
    zc_close(cli);
    zc_close(sink);
    zc_close(fwd);
}

// A forwarder that reaps its completions only now and then: zc-stackd
// receives into a buffer again as soon as its send completed, before the
// application has seen that completion; the datagram must still be handed
// out (and the completion still reported).
TEST(UapiForward, ForwarderThatReapsLateLosesNothing) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    int cli = r.open(1), sink = r.open(1), fwd = r.open(2, ZC_SOCK_STRICT, 0, 2);
    ASSERT_GE(cli, 0);
    ASSERT_GE(sink, 0);
    ASSERT_GE(fwd, 0);
    sockaddr_in fb = addr_of(0, 7605), sb = addr_of(0, 7606);
    ASSERT_EQ(zc_bind(fwd, &fb), 0);
    ASSERT_EQ(zc_bind(sink, &sb), 0);
    const sockaddr_in to_fwd = addr_of(guest_ip(2), 7605), to_sink = addr_of(guest_ip(1), 7606);
    const uint32_t total = 40;
    uint32_t reaped = 0;
    for (uint32_t i = 0; i < total; i++) {
        SCOPED_TRACE(i);
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(cli, &b), 0);
        fill(b, 100, i);
        ASSERT_EQ(zc_send(cli, b, 100, &to_fwd, 0, i), ZC_SENT_ZEROCOPY);
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(fwd, &d, 1, 5000), 1);
        ASSERT_TRUE(same(d.data, 100, i));
        ASSERT_EQ(zc_send(fwd, d.data, d.len, &to_sink, 0, i), ZC_SENT_ZEROCOPY);
        zc_rxd got{};
        ASSERT_EQ(zc_recv_wait(sink, &got, 1, 5000), 1);
        EXPECT_TRUE(same(got.data, 100, i));
        EXPECT_EQ(zc_rx_release(sink, got.data), 0);
        zc_completion c{};
        ASSERT_EQ(reap(cli, &c, 1), 1);
        EXPECT_EQ(zc_buf_free(cli, b), 0);
        if (i % 8 == 7) {
            zc_completion cs[8];
            int k = reap(fwd, cs, 8);
            ASSERT_EQ(k, 8);
            for (int j = 0; j < k; j++) EXPECT_EQ(cs[j].res, 100);
            reaped += uint32_t(k);
        }
    }
    EXPECT_EQ(reaped, total);
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(fwd, &st), 0);
    EXPECT_EQ(st.rx_drops, 0u);
    EXPECT_EQ(st.rx_packets, total);
    for (int s : {cli, sink, fwd}) zc_close(s);
}

// An echo server answers from the buffer the request came in, also to a
// socket of its own guest (delivered by copy inside zc-stackd, as every
// local datagram), and a batch of received buffers goes in one zc_sendmmsg.
TEST(UapiForward, EchoFromTheReceiveBufferLocallyAndInABatch) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    int srv = r.open(2), cli = r.open(2);
    ASSERT_GE(srv, 0);
    ASSERT_GE(cli, 0);
    sockaddr_in sbind = addr_of(0, 7611), cbind = addr_of(0, 7612);
    ASSERT_EQ(zc_bind(srv, &sbind), 0);
    ASSERT_EQ(zc_bind(cli, &cbind), 0);
    const sockaddr_in to_srv = addr_of(0x7f000001, 7611);
    const unsigned n = 3;
    for (unsigned i = 0; i < n; i++) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(cli, &b), 0);
        fill(b, 40 + i, 7 + i);
        ASSERT_EQ(zc_send(cli, b, 40 + i, &to_srv, 0, i), ZC_SENT_ZEROCOPY);
    }
    zc_rxd d[n];
    unsigned got = 0;
    while (got < n) {
        int k = zc_recv_wait(srv, d + got, n - got, 5000);
        ASSERT_GT(k, 0);
        got += unsigned(k);
    }
    zc_mmsg m[n];
    std::memset(m, 0, sizeof m);
    for (unsigned i = 0; i < n; i++) {
        m[i].base = d[i].data;
        m[i].len = d[i].len;
        m[i].user_data = 50 + i;
        m[i].to = d[i].from; // back to the sender
    }
    unsigned copied = 99;
    ASSERT_EQ(zc_sendmmsg(srv, m, n, 0, &copied), int(n));
    EXPECT_EQ(copied, 0u);
    for (unsigned i = 0; i < n; i++) {
        zc_rxd e{};
        ASSERT_EQ(zc_recv_wait(cli, &e, 1, 5000), 1);
        EXPECT_EQ(e.len, 40 + i);
        EXPECT_TRUE(same(e.data, e.len, 7 + i));
        EXPECT_EQ(zc_rx_release(cli, e.data), 0);
    }
    zc_completion c[n];
    ASSERT_EQ(reap(srv, c, int(n)), int(n));
    for (unsigned i = 0; i < n; i++) EXPECT_EQ(c[i].res, int32_t(40 + i));
    zc_close(srv);
    zc_close(cli);
}

// Another socket's received buffer is outside this socket's pool: a strict
// socket refuses it (-EFAULT), a copy-fallback socket copies it
// (ZC_SENT_COPIED), as any memory not in its pool; the receiving socket
// still holds it and releases it.
TEST(UapiForward, AnotherSocketsReceivedBufferIsNeverSentInPlace) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    int cli = r.open(1), rx = r.open(2), strict = r.open(2), fb = r.open(2, ZC_SOCK_COPY_FALLBACK);
    ASSERT_GE(cli, 0);
    ASSERT_GE(rx, 0);
    ASSERT_GE(strict, 0);
    ASSERT_GE(fb, 0);
    sockaddr_in b = addr_of(0, 7621), cb = addr_of(0, 7622);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    ASSERT_EQ(zc_bind(cli, &cb), 0);
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(cli, &buf), 0);
    fill(buf, 64, 3);
    const sockaddr_in to_rx = addr_of(guest_ip(2), 7621), back = addr_of(guest_ip(1), 7622);
    ASSERT_EQ(zc_send(cli, buf, 64, &to_rx, 0, 1), ZC_SENT_ZEROCOPY);
    zc_rxd d{};
    ASSERT_EQ(zc_recv_wait(rx, &d, 1, 5000), 1);
    EXPECT_EQ(zc_send(strict, d.data, d.len, &back, 0, 2), -EFAULT);
    EXPECT_EQ(zc_send(fb, d.data, d.len, &back, 0, 3), ZC_SENT_COPIED);
    EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    zc_rxd e{};
    ASSERT_EQ(zc_recv_wait(cli, &e, 1, 5000), 1);
    EXPECT_TRUE(same(e.data, 64, 3));
    EXPECT_EQ(zc_rx_release(cli, e.data), 0);
    zc_completion c{};
    ASSERT_EQ(reap(fb, &c, 1), 1);
    EXPECT_EQ(c.flags, unsigned(ZC_CQE_F_COPIED));
    for (int s : {cli, rx, strict, fb}) zc_close(s);
}

// What an application that writes the rings itself can name: a receive
// buffer it does not hold, or past the pool, is refused (-EINVAL) and
// counted, and nothing of the stack's receive buffers changes hands.
TEST(UapiForward, EntriesNamingReceiveBuffersNotHeldAreRefused) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    raw_sock h;
    ASSERT_TRUE(h.open(r.g[1].sock, 16, 8, 8));
    // Bound, so that only the buffer is wrong.
    uapi::ctl_req rq{};
    rq.op = uint32_t(uapi::op::bind);
    rq.version = uapi::proto_version;
    rq.port = htons(7631);
    ASSERT_EQ(::send(h.ctl, &rq, sizeof rq, 0), ssize_t(sizeof rq));
    uapi::ctl_rsp rs{};
    ASSERT_EQ(::recv(h.ctl, &rs, sizeof rs, 0), ssize_t(sizeof rs));
    ASSERT_EQ(rs.rc, 0);
    const uint64_t bad0 = r.g[1].svc->stats().tx_bad_desc;
    const uint32_t bufs[] = {8, 15, 16, 1000};
    for (uint32_t i = 0; i < 4; i++) {
        uapi::tx_desc t{};
        t.buf = bufs[i];
        t.off = uapi::headroom;
        t.len = 10;
        t.dst_ip = htonl(guest_ip(2));
        t.dst_port = htons(9);
        h.tx.write(i, t);
    }
    h.tx.publish(4);
    h.kick();
    for (int i = 0; i < 300 && h.cq.avail(0) < 4; i++) ::usleep(10000);
    ASSERT_EQ(h.cq.avail(0), 4u);
    for (uint32_t i = 0; i < 4; i++) EXPECT_EQ(h.cq.read(i).res, -EINVAL) << i;
    EXPECT_EQ(r.g[1].svc->stats().tx_bad_desc - bad0, 4u);
    EXPECT_EQ(rx_bufs_sent(r, 1), 0u);
    // zc-stackd goes on serving the guest.
    int tx = r.open(2);
    ASSERT_GE(tx, 0);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(tx, &b), 0);
    const sockaddr_in to = addr_of(guest_ip(1), 7631);
    ASSERT_EQ(zc_send(tx, b, 10, &to, 0, 1), ZC_SENT_ZEROCOPY);
    zc_completion c{};
    ASSERT_EQ(reap(tx, &c, 1), 1);
    EXPECT_EQ(c.res, 10);
    zc_close(tx);
}
