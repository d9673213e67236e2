// SPDX-License-Identifier: MIT
// The zc socket API where UDP programs expect BSD socket behaviour (zc.h):
// a connected socket takes only its peer's datagrams (connect(2)), the local
// address (getsockname(2)), a receive that waits with a timeout and ignores
// send completions (recv(2) with SO_RCVTIMEO), and sockets across fork().
// Two guests' zc-stackd through zc-netback on the emulated host.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

class UapiBsd : public rig_suite {};

// zc-stackd's view of the socket bound to `port` on guest d (zero counters
// when it has none: the caller's expectations then fail).
stackd::socket_stat stat_of(uapi_rig& r, int d, uint16_t port) {
    auto v = stackd::query_sockets(r.g[d].sock);
    EXPECT_TRUE(v);
    if (v)
        for (auto& s : *v)
            if (ntohs(s.port) == port) return s;
    ADD_FAILURE() << "no socket on port " << port;
    return {};
}

// A datagram of `len` bytes of `tag` from s (to: NULL = the connected peer),
// its completion reaped.
void send_tagged(int s, uint8_t tag, const sockaddr_in* to, uint32_t len = 32) {
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &b), 0);
    std::memset(b, tag, len);
    ASSERT_EQ(zc_send(s, b, len, to, 0, tag), ZC_SENT_ZEROCOPY);
    zc_completion c{};
    ASSERT_EQ(reap(s, &c, 1), 1);
    EXPECT_EQ(c.res, int32_t(len));
    EXPECT_EQ(zc_buf_free(s, b), 0);
}

} // namespace

// BSD: after connect(2), a UDP socket receives only from the connected
// address and port; before it, from anyone.
TEST_F(UapiBsd, ConnectedSocketTakesOnlyItsPeersDatagrams) {
    int srv = rig->open(2), a = rig->open(1), b = rig->open(1);
    ASSERT_GE(srv, 0);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    sockaddr_in sb = addr_of(0, 7301), ab = addr_of(0, 7302), bb = addr_of(0, 7303);
    ASSERT_EQ(zc_bind(srv, &sb), 0);
    ASSERT_EQ(zc_bind(a, &ab), 0);
    ASSERT_EQ(zc_bind(b, &bb), 0);
    const sockaddr_in to = addr_of(guest_ip(2), 7301);

    // Unconnected: both sources arrive.
    send_tagged(a, 'a', &to);
    send_tagged(b, 'b', &to);
    zc_rxd d[4];
    unsigned got = 0;
    while (got < 2) {
        int n = zc_recv_wait(srv, d + got, 4 - got, 5000);
        ASSERT_GT(n, 0);
        got += unsigned(n);
    }
    for (unsigned i = 0; i < got; i++) EXPECT_EQ(zc_rx_release(srv, d[i].data), 0);

    // Connected to a: b's datagrams are dropped and counted, a's arrive.
    sockaddr_in peer = addr_of(guest_ip(1), 7302);
    ASSERT_EQ(zc_connect(srv, &peer), 0);
    for (int i = 0; i < 3; i++) send_tagged(b, 'b', &to);
    send_tagged(a, 'a', &to);
    for (int waited = 0; stat_of(*rig, 2, 7301).c.rx_not_peer < 3 && waited < 5000; waited += 10)
        ::usleep(10000);
    EXPECT_EQ(stat_of(*rig, 2, 7301).c.rx_not_peer, 3u);
    ASSERT_EQ(zc_recv_wait(srv, d, 4, 5000), 1);
    EXPECT_EQ(static_cast<const uint8_t*>(d[0].data)[0], 'a');
    EXPECT_EQ(d[0].from.sin_port, htons(7302));
    EXPECT_EQ(zc_rx_release(srv, d[0].data), 0);
    EXPECT_EQ(zc_recv(srv, d, 4), -EAGAIN) << "a datagram from b got through";

    // Connecting again changes the peer (connect(2) on a UDP socket).
    peer = addr_of(guest_ip(1), 7303);
    ASSERT_EQ(zc_connect(srv, &peer), 0);
    send_tagged(a, 'a', &to);
    send_tagged(b, 'b', &to);
    ASSERT_EQ(zc_recv_wait(srv, d, 4, 5000), 1);
    EXPECT_EQ(static_cast<const uint8_t*>(d[0].data)[0], 'b');
    EXPECT_EQ(zc_rx_release(srv, d[0].data), 0);
    for (int waited = 0; stat_of(*rig, 2, 7301).c.rx_not_peer < 4 && waited < 5000; waited += 10)
        ::usleep(10000);
    EXPECT_EQ(stat_of(*rig, 2, 7301).c.rx_not_peer, 4u);
    auto tot = stackd::query_counters(rig->g[2].sock);
    ASSERT_TRUE(tot);
    EXPECT_GE(tot->rx_not_peer, 4u);
    for (int s : {srv, a, b}) EXPECT_EQ(zc_close(s), 0);
}

// BSD: getsockname(2) gives 0.0.0.0:0 unbound, the bound address and
// (ephemeral) port after bind, and the source address once connected.
TEST_F(UapiBsd, GetsocknameGivesTheBoundAddressAndEphemeralPort) {
    int s = rig->open(1), t = rig->open(1), srv = rig->open(2);
    ASSERT_GE(s, 0);
    ASSERT_GE(t, 0);
    ASSERT_GE(srv, 0);
    sockaddr_in a{};
    ASSERT_EQ(zc_getsockname(s, &a), 0);
    EXPECT_EQ(a.sin_family, AF_INET);
    EXPECT_EQ(a.sin_addr.s_addr, 0u);
    EXPECT_EQ(a.sin_port, 0u);

    sockaddr_in any = addr_of(0, 0);
    ASSERT_EQ(zc_bind(s, &any), 0);
    ASSERT_EQ(zc_getsockname(s, &a), 0);
    EXPECT_EQ(a.sin_addr.s_addr, 0u);
    EXPECT_GE(ntohs(a.sin_port), 49152);

    sockaddr_in mine = addr_of(guest_ip(1), 7311);
    ASSERT_EQ(zc_bind(t, &mine), 0);
    ASSERT_EQ(zc_getsockname(t, &a), 0);
    EXPECT_EQ(a.sin_addr.s_addr, htonl(guest_ip(1)));
    EXPECT_EQ(a.sin_port, htons(7311));

    // Connected without bind: the ephemeral port is the one the peer sees.
    int c = rig->open(1);
    ASSERT_GE(c, 0);
    sockaddr_in sb = addr_of(0, 7312), to = addr_of(guest_ip(2), 7312);
    ASSERT_EQ(zc_bind(srv, &sb), 0);
    ASSERT_EQ(zc_connect(c, &to), 0);
    sockaddr_in local{};
    ASSERT_EQ(zc_getsockname(c, &local), 0);
    EXPECT_EQ(local.sin_addr.s_addr, htonl(guest_ip(1)));
    EXPECT_GE(ntohs(local.sin_port), 49152);
    send_tagged(c, 'c', nullptr);
    zc_rxd d{};
    ASSERT_EQ(zc_recv_wait(srv, &d, 1, 5000), 1);
    EXPECT_EQ(d.from.sin_addr.s_addr, local.sin_addr.s_addr);
    EXPECT_EQ(d.from.sin_port, local.sin_port);
    EXPECT_EQ(zc_rx_release(srv, d.data), 0);

    EXPECT_EQ(zc_getsockname(s, nullptr), -EINVAL);
    for (int x : {s, t, c, srv}) EXPECT_EQ(zc_close(x), 0);
    EXPECT_EQ(zc_getsockname(s, &a), -EBADF);
}

// BSD: recv(2) with SO_RCVTIMEO waits for a datagram and fails with EAGAIN
// when the time passes; here send completions must not end the wait.
TEST_F(UapiBsd, RecvWaitIgnoresCompletionsAndTimesOut) {
    pair p(*rig, 7321);
    zc_rxd d[2];
    EXPECT_EQ(zc_recv_wait(p.tx, d, 2, 0), -EAGAIN);
    EXPECT_EQ(zc_recv_wait(p.tx, nullptr, 2, 0), -EINVAL);
    EXPECT_EQ(zc_recv_wait(p.tx, d, 0, 0), -EINVAL);
    EXPECT_EQ(zc_recv_wait(p.tx, d, 2, -2), -EINVAL);

    // A completion is pending on tx while it waits: the wait goes on.
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    std::memset(b, 'q', 64);
    ASSERT_EQ(zc_send(p.tx, b, 64, nullptr, 0, 7), ZC_SENT_ZEROCOPY);
    ASSERT_TRUE(wait_readable(p.tx, 5000)) << "no completion";
    const int timeout = 300;
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(zc_recv_wait(p.tx, d, 2, timeout), -EAGAIN);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    EXPECT_GE(waited.count(), timeout - 5) << "a completion ended the wait";
    // The completion is still there, and poll still says so.
    EXPECT_TRUE(wait_readable(p.tx, 0));
    zc_completion c{};
    ASSERT_EQ(zc_completions(p.tx, &c, 1), 1);
    EXPECT_EQ(c.user_data, 7u);
    EXPECT_EQ(c.res, 64);

    // The receiver waits without a limit for what was sent.
    ASSERT_EQ(zc_recv_wait(p.rx, d, 2, -1), 1);
    EXPECT_EQ(d[0].len, 64u);
    EXPECT_EQ(static_cast<const uint8_t*>(d[0].data)[0], 'q');
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), 0);

    // A reply arriving during the wait ends it.
    sockaddr_in local{};
    ASSERT_EQ(zc_getsockname(p.tx, &local), 0);
    sockaddr_in back = addr_of(guest_ip(1), ntohs(local.sin_port));
    ASSERT_EQ(zc_send(p.rx, nullptr, 0, &back, 0, 0), -EINVAL); // data NULL: nothing sent
    void* rb = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.rx, &rb), 0);
    std::memset(rb, 'r', 10);
    ASSERT_EQ(zc_send(p.rx, rb, 10, &back, 0, 1), ZC_SENT_ZEROCOPY);
    ASSERT_EQ(zc_recv_wait(p.tx, d, 2, 5000), 1);
    EXPECT_EQ(d[0].len, 10u);
    EXPECT_EQ(zc_rx_release(p.tx, d[0].data), 0);
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
    EXPECT_EQ(zc_recv_wait(-1, d, 2, 0), -EBADF);
}

// A fork()ed child's calls on an inherited socket fail with -EBADF and its
// zc_close() releases only its copies; the parent's socket keeps working.
TEST_F(UapiBsd, ForkedChildGetsEbadfAndTheParentKeepsWorking) {
    pair p(*rig, 7331);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // No gtest here: the exit code says which check failed.
        void* b = nullptr;
        char buf[8] = {};
        zc_rxd d{};
        zc_completion c{};
        sockaddr_in a{};
        zc_pool_info pi{};
        pi.sz = sizeof pi;
        int rc = 0;
        if (zc_buf_alloc(p.tx, &b) != -EBADF) rc = 1;
        else if (zc_send(p.tx, buf, sizeof buf, nullptr, 0, 0) != -EBADF) rc = 2;
        else if (zc_recv(p.rx, &d, 1) != -EBADF) rc = 3;
        else if (zc_recv_wait(p.rx, &d, 1, 0) != -EBADF) rc = 4;
        else if (zc_completions(p.tx, &c, 1) != -EBADF) rc = 5;
        else if (zc_getsockname(p.tx, &a) != -EBADF) rc = 6;
        else if (zc_pool_mmap(p.tx, &pi) != -EBADF) rc = 7;
        else if (zc_close(p.tx) != 0 || zc_close(p.tx) != -EBADF) rc = 8;
        ::_exit(rc);
    }
    int st = 0;
    ASSERT_EQ(::waitpid(child, &st, 0), child);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0) << "check " << WEXITSTATUS(st) << " failed in the child";

    // The parent sends and receives as before.
    for (uint8_t i = 0; i < 3; i++) send_tagged(p.tx, uint8_t('0' + i), nullptr);
    zc_rxd d[4];
    unsigned got = 0;
    while (got < 3) {
        int n = zc_recv_wait(p.rx, d + got, 4 - got, 5000);
        ASSERT_GT(n, 0);
        got += unsigned(n);
    }
    for (unsigned i = 0; i < got; i++) EXPECT_EQ(zc_rx_release(p.rx, d[i].data), 0);
    zc_stats s{};
    s.sz = sizeof s;
    ASSERT_EQ(zc_socket_stats(p.tx, &s), 0);
    EXPECT_EQ(s.zc_sends, 3u);
    EXPECT_EQ(s.send_errors, 0u);
}

// BSD: sendmmsg(2) with a msg_name per message sends a batch in which each
// datagram has its own destination (a server answering several clients
// with one system call). zc_sendmmsg: one wake-up of the stack, clients on
// the other guest and on the server's own guest.
TEST_F(UapiBsd, SendmmsgAnswersSeveralClientsInOneBatch) {
    int srv = rig->open(2);
    ASSERT_GE(srv, 0);
    sockaddr_in sb = addr_of(0, 7361);
    ASSERT_EQ(zc_bind(srv, &sb), 0);
    const sockaddr_in remote = addr_of(guest_ip(2), 7361), local = addr_of(0x7f000001u, 7361);
    int cli[3] = {rig->open(1), rig->open(1), rig->open(2)};
    for (int i = 0; i < 3; i++) {
        ASSERT_GE(cli[i], 0);
        ASSERT_EQ(zc_connect(cli[i], i < 2 ? &remote : &local), 0);
        send_tagged(cli[i], uint8_t('a' + i), nullptr, 10);
    }
    // The requests, then one reply per client, each to where it came from.
    zc_rxd req[3];
    unsigned got = 0;
    while (got < 3) {
        int n = zc_recv_wait(srv, req + got, 3 - got, 5000);
        ASSERT_GT(n, 0);
        got += unsigned(n);
    }
    zc_mmsg m[3]{};
    for (int i = 0; i < 3; i++) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(srv, &b), 0);
        const uint8_t tag = static_cast<const uint8_t*>(req[i].data)[0];
        std::memset(b, tag - 'a' + 'A', 20);
        m[i].base = b;
        m[i].len = 20;
        m[i].user_data = tag;
        m[i].to = req[i].from;
        EXPECT_EQ(zc_rx_release(srv, req[i].data), 0);
    }
    unsigned copied = 99;
    ASSERT_EQ(zc_sendmmsg(srv, m, 3, 0, &copied), 3);
    EXPECT_EQ(copied, 0u);
    zc_completion c[3];
    ASSERT_EQ(reap(srv, c, 3), 3);
    // One each (a datagram for the same guest completes at once, before
    // those through the vif).
    uint64_t seen = 0;
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(c[i].res, 20);
        seen |= 1u << (c[i].user_data - 'a');
    }
    EXPECT_EQ(seen, 7u);
    for (int i = 0; i < 3; i++) {
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(cli[i], &d, 1, 5000), 1) << i;
        EXPECT_EQ(d.len, 20u);
        EXPECT_EQ(static_cast<const uint8_t*>(d.data)[0], uint8_t('A' + i)) << "another client's reply";
        EXPECT_EQ(zc_rx_release(cli[i], d.data), 0);
    }

    // Errors: the batch stops at a bad element; AF_UNSPEC needs a peer.
    zc_mmsg bad[2] = {m[0], m[1]};
    bad[1].to.sin_port = 0;
    EXPECT_EQ(zc_sendmmsg(srv, bad, 2, 0, nullptr), 1);
    ASSERT_EQ(reap(srv, c, 1), 1);
    EXPECT_EQ(zc_sendmmsg(srv, bad + 1, 1, 0, nullptr), -EINVAL);
    zc_mmsg unspec = m[2];
    unspec.to = sockaddr_in{};
    EXPECT_EQ(zc_sendmmsg(srv, &unspec, 1, 0, nullptr), -EDESTADDRREQ);
    zc_mmsg padded = m[2];
    padded.pad = 1;
    EXPECT_EQ(zc_sendmmsg(srv, &padded, 1, 0, nullptr), -EINVAL);
    EXPECT_EQ(zc_sendmmsg(srv, m, 0, 0, nullptr), -EINVAL);
    EXPECT_EQ(zc_sendmmsg(srv, nullptr, 1, 0, nullptr), -EINVAL);
    EXPECT_EQ(zc_sendmmsg(srv, m + 2, 1, 1u << 5, nullptr), -EINVAL);
    EXPECT_EQ(zc_sendmmsg(-1, m, 1, 0, nullptr), -EBADF);
    // A connected socket's AF_UNSPEC element goes to its peer.
    unspec.base = m[2].base;
    ASSERT_EQ(zc_sendmmsg(cli[2], &unspec, 1, 0, nullptr), -EFAULT) << "not cli[2]'s pool";
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(cli[2], &b), 0);
    std::memset(b, 'p', 4);
    unspec.base = b;
    unspec.len = 4;
    ASSERT_EQ(zc_sendmmsg(cli[2], &unspec, 1, 0, nullptr), 1);
    zc_rxd d{};
    ASSERT_EQ(zc_recv_wait(srv, &d, 1, 5000), 1);
    EXPECT_EQ(d.len, 4u);
    EXPECT_EQ(zc_rx_release(srv, d.data), 0);
    for (int i = 0; i < 3; i++) EXPECT_EQ(zc_close(cli[i]), 0);
    EXPECT_EQ(zc_close(srv), 0);
}

// BSD (Linux's route lookup): toward 127.0.0.0/8 the source is 127.0.0.1,
// whatever loopback address was the destination; so getsockname(2) of a
// socket connected to 127.0.0.1 names 127.0.0.1, not the host's address,
// and a reply to the source a datagram came from reaches the sender.
TEST_F(UapiBsd, LoopbackTrafficComesFrom127001) {
    int srv = rig->open(1), cli = rig->open(1);
    ASSERT_GE(srv, 0);
    ASSERT_GE(cli, 0);
    sockaddr_in sb = addr_of(0, 7351);
    ASSERT_EQ(zc_bind(srv, &sb), 0);
    const sockaddr_in lo = addr_of(0x7f000001u, 7351);
    ASSERT_EQ(zc_connect(cli, &lo), 0);
    sockaddr_in me{};
    ASSERT_EQ(zc_getsockname(cli, &me), 0);
    EXPECT_EQ(me.sin_addr.s_addr, htonl(0x7f000001u));
    EXPECT_NE(me.sin_port, 0u);
    send_tagged(cli, 'c', nullptr);
    zc_rxd d{};
    ASSERT_EQ(zc_recv_wait(srv, &d, 1, 5000), 1);
    EXPECT_EQ(d.from.sin_addr.s_addr, me.sin_addr.s_addr);
    EXPECT_EQ(d.from.sin_port, me.sin_port);
    const sockaddr_in back = d.from;
    EXPECT_EQ(zc_rx_release(srv, d.data), 0);
    send_tagged(srv, 's', &back); // passes the client's peer filter
    ASSERT_EQ(zc_recv_wait(cli, &d, 1, 5000), 1);
    EXPECT_EQ(d.from.sin_addr.s_addr, htonl(0x7f000001u));
    EXPECT_EQ(d.from.sin_port, htons(7351));
    EXPECT_EQ(zc_rx_release(cli, d.data), 0);
    // Another loopback address as the destination: still from 127.0.0.1.
    int other = rig->open(1);
    ASSERT_GE(other, 0);
    const sockaddr_in lo9 = addr_of(0x7f000009u, 7351);
    send_tagged(other, 'o', &lo9);
    ASSERT_EQ(zc_recv_wait(srv, &d, 1, 5000), 1);
    EXPECT_EQ(d.from.sin_addr.s_addr, htonl(0x7f000001u));
    EXPECT_EQ(zc_rx_release(srv, d.data), 0);
    for (int s : {srv, cli, other}) EXPECT_EQ(zc_close(s), 0);
}

// BSD: two programs of one host talk over its own address or 127.0.0.1
// (the kernel's loopback). Here zc-stackd hands the datagram from one
// socket's pool to the other's without the vif.
TEST_F(UapiBsd, SocketsOfOneGuestTalkOverItsAddressAndLoopback) {
    int a = rig->open(1), b = rig->open(1);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    sockaddr_in ab = addr_of(0, 7341), bb = addr_of(0, 7342);
    ASSERT_EQ(zc_bind(a, &ab), 0);
    ASSERT_EQ(zc_bind(b, &bb), 0);
    auto before = stackd::query_counters(rig->g[1].sock);
    ASSERT_TRUE(before);

    const sockaddr_in own = addr_of(guest_ip(1), 7342), lo = addr_of(0x7f000001u, 7342);
    send_tagged(a, 'o', &own, 100);
    send_tagged(a, 'l', &lo, 0);
    zc_rxd d[2];
    ASSERT_EQ(zc_recv_wait(b, d, 1, 5000), 1);
    EXPECT_EQ(d[0].len, 100u);
    EXPECT_EQ(static_cast<const uint8_t*>(d[0].data)[99], 'o');
    EXPECT_EQ(d[0].from.sin_addr.s_addr, htonl(guest_ip(1)));
    EXPECT_EQ(d[0].from.sin_port, htons(7341));
    EXPECT_EQ(zc_rx_release(b, d[0].data), 0);
    ASSERT_EQ(zc_recv_wait(b, d, 1, 5000), 1);
    EXPECT_EQ(d[0].len, 0u);
    EXPECT_EQ(d[0].from.sin_addr.s_addr, htonl(0x7f000001u));
    EXPECT_EQ(d[0].from.sin_port, htons(7341));
    EXPECT_EQ(zc_rx_release(b, d[0].data), 0);

    // The answer goes back to where it came from.
    send_tagged(b, 'r', &d[0].from, 5);
    ASSERT_EQ(zc_recv_wait(a, d, 1, 5000), 1);
    EXPECT_EQ(d[0].len, 5u);
    EXPECT_EQ(d[0].from.sin_port, htons(7342));
    EXPECT_EQ(zc_rx_release(a, d[0].data), 0);

    // A connected receiver filters local sources like remote ones; a port
    // nobody bound swallows the datagram (the send still completes).
    sockaddr_in other = addr_of(guest_ip(1), 7399);
    ASSERT_EQ(zc_connect(b, &other), 0);
    send_tagged(a, 'x', &own);
    const sockaddr_in nobody = addr_of(guest_ip(1), 7343);
    send_tagged(a, 'n', &nobody);
    EXPECT_EQ(zc_recv_wait(b, d, 1, 100), -EAGAIN);
    EXPECT_EQ(stat_of(*rig, 1, 7342).c.rx_not_peer, 1u);

    auto after = stackd::query_counters(rig->g[1].sock);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->tx_local - before->tx_local, 5u) << "not all went the local way (not through the vif)";
    EXPECT_GE(after->rx_no_socket - before->rx_no_socket, 1u);
    for (int s : {a, b}) EXPECT_EQ(zc_close(s), 0);
}

// free(3)-like contract of zc_rx_release: a pointer the socket never handed
// out (a receive buffer not received yet, a send buffer, not a payload
// start) is -EINVAL; only a second release of a received one is -EALREADY.
TEST_F(UapiBsd, ReleasingWhatWasNeverReceivedIsInvalidNotAlready) {
    pair p(*rig, 7350);
    const uint8_t* base = static_cast<const uint8_t*>(p.ri.base);
    const uint8_t* last_rx = base + size_t{p.ri.tx_bufs + p.ri.rx_bufs - 1} * p.ri.buf_size + p.ri.headroom;
    EXPECT_EQ(zc_rx_release(p.rx, last_rx), -EINVAL); // a receive buffer nothing arrived in
    void* sb = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.rx, &sb), 0);
    EXPECT_EQ(zc_rx_release(p.rx, sb), -EINVAL); // a send buffer
    EXPECT_EQ(zc_buf_free(p.rx, sb), 0);

    send_tagged(p.tx, 'x', nullptr);
    zc_rxd d{};
    ASSERT_EQ(recv_some(p.rx, &d, 1), 1);
    const uint8_t* got = static_cast<const uint8_t*>(d.data);
    EXPECT_EQ(zc_rx_release(p.rx, got + 1), -EINVAL); // inside it, not its start
    EXPECT_EQ(zc_rx_release(p.rx, got), 0);
    EXPECT_EQ(zc_rx_release(p.rx, got), -EALREADY); // the second release
    EXPECT_EQ(zc_rx_release(p.rx, last_rx), -EINVAL); // still never handed out
}
