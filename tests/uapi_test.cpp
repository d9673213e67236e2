// SPDX-License-Identifier: MIT
// The zc socket API (zc.h) against two guests' zc-stackd through zc-netback
// on the emulated host: the data paths, and every error path of every call.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <sys/mman.h>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

void fill(uint8_t* p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = uint8_t(x >> 16);
    }
}

bool check(const uint8_t* p, size_t n, uint32_t seed) {
    if (n == 0) return true; // memcmp with an empty vector's null data() is UB
    std::vector<uint8_t> want(n);
    fill(want.data(), n, seed);
    return std::memcmp(p, want.data(), n) == 0;
}

class Uapi : public rig_suite {};

} // namespace

TEST_F(Uapi, ZeroCopySendCompletesAndArrivesIntact) {
    pair p(*rig, 7001);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    fill(static_cast<uint8_t*>(b), 1000, 1);
    ASSERT_EQ(zc_send(p.tx, b, 1000, nullptr, 0, 42), ZC_SENT_ZEROCOPY);
    // In flight: neither reusable nor freeable until its completion.
    EXPECT_EQ(zc_send(p.tx, b, 1000, nullptr, 0, 43), -EBUSY);
    EXPECT_EQ(zc_buf_free(p.tx, b), -EBUSY);
    zc_completion c[4];
    ASSERT_EQ(reap(p.tx, c, 1), 1);
    EXPECT_EQ(c[0].user_data, 42u);
    EXPECT_EQ(c[0].res, 1000);
    EXPECT_EQ(c[0].flags, 0u);

    zc_rxd d[4];
    ASSERT_EQ(recv_some(p.rx, d, 4), 1);
    EXPECT_EQ(d[0].len, 1000u);
    EXPECT_TRUE(check(static_cast<const uint8_t*>(d[0].data), 1000, 1));
    EXPECT_EQ(d[0].from.sin_addr.s_addr, htonl(guest_ip(1)));
    EXPECT_NE(d[0].from.sin_port, 0);
    const uint8_t* rb = static_cast<const uint8_t*>(d[0].data);
    EXPECT_TRUE(rb >= static_cast<uint8_t*>(p.ri.base) && rb < static_cast<uint8_t*>(p.ri.base) + p.ri.size);
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), 0);
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), -EALREADY); // double release

    // Back to the application after the completion: reuse, then free.
    ASSERT_EQ(zc_send(p.tx, b, 10, nullptr, 0, 44), ZC_SENT_ZEROCOPY);
    ASSERT_EQ(reap(p.tx, c, 1), 1);
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
    EXPECT_EQ(zc_buf_free(p.tx, b), -EALREADY); // double free

    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(p.tx, &st), 0);
    EXPECT_EQ(st.zc_sends, 2u);
    EXPECT_EQ(st.copied_sends, 0u);
    EXPECT_EQ(st.completions, 2u);
    EXPECT_EQ(st.tx_bytes, 1010u);
    ASSERT_EQ(zc_socket_stats(p.rx, &st), 0);
    EXPECT_GE(st.rx_packets, 1u);
}

TEST_F(Uapi, OpenRejectsBadOptions) {
    EXPECT_EQ(zc_socket(nullptr), -EINVAL);
    zc_socket_opts o{};
    o.sz = sizeof o - 1;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // sz too small
    o.sz = sizeof o;
    o.service = rig->g[1].sock.c_str();
    o.flags = 1u << 7;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // unknown flag
    o.flags = 0;
    o.tx_bufs = 3;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // odd
    o.tx_bufs = 8192;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // too many
    o.tx_bufs = 0;
    o.rx_bufs = 1;
    EXPECT_EQ(zc_socket(&o), -EINVAL);
    o.rx_bufs = 0;
    o.ring_entries = 100;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // not a power of two
    o.ring_entries = 4;
    EXPECT_EQ(zc_socket(&o), -EINVAL); // too small
    o.ring_entries = 0;
    // A larger struct from a newer header: trailing bytes must be zero.
    struct {
        zc_socket_opts o;
        uint64_t future;
    } big{};
    big.o = o;
    big.o.sz = sizeof big;
    big.future = 1;
    EXPECT_EQ(zc_socket(&big.o), -EINVAL);
    big.future = 0;
    int s = zc_socket(&big.o);
    EXPECT_GE(s, 0);
    EXPECT_EQ(zc_close(s), 0);
    o.service = "/nonexistent/stackd.sock";
    EXPECT_EQ(zc_socket(&o), -ENOENT);
}

TEST_F(Uapi, ClosedSocketGivesEbadfEverywhere) {
    int s = rig->open(1);
    ASSERT_GE(s, 0);
    zc_pool_info pi{};
    pi.sz = sizeof pi;
    ASSERT_EQ(zc_pool_mmap(s, &pi), 0);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &b), 0);
    ASSERT_EQ(zc_close(s), 0);
    sockaddr_in a = addr_of(guest_ip(2), 9);
    zc_completion c;
    zc_rxd d;
    zc_stats st{};
    st.sz = sizeof st;
    zc_iov v{b, 1, 0, 0};
    EXPECT_EQ(zc_close(s), -EBADF); // double close
    EXPECT_EQ(zc_bind(s, &a), -EBADF);
    EXPECT_EQ(zc_connect(s, &a), -EBADF);
    EXPECT_EQ(zc_pool_mmap(s, &pi), -EBADF);
    EXPECT_EQ(zc_buf_alloc(s, &b), -EBADF);
    EXPECT_EQ(zc_buf_free(s, b), -EBADF);
    EXPECT_EQ(zc_send(s, b, 1, &a, 0, 0), -EBADF);
    EXPECT_EQ(zc_sendv(s, &v, 1, &a, 0, nullptr), -EBADF);
    EXPECT_EQ(zc_completions(s, &c, 1), -EBADF);
    EXPECT_EQ(zc_recv(s, &d, 1), -EBADF);
    EXPECT_EQ(zc_rx_release(s, b), -EBADF);
    EXPECT_EQ(zc_socket_stats(s, &st), -EBADF);
    EXPECT_EQ(zc_send(-1, b, 1, &a, 0, 0), -EBADF);
}

TEST_F(Uapi, BindAndConnectErrors) {
    int s = rig->open(2), t = rig->open(2);
    ASSERT_GE(s, 0);
    ASSERT_GE(t, 0);
    sockaddr_in a = addr_of(0, 7100);
    EXPECT_EQ(zc_bind(s, nullptr), -EINVAL);
    sockaddr_in bad = a;
    bad.sin_family = AF_INET6;
    EXPECT_EQ(zc_bind(s, &bad), -EINVAL);
    sockaddr_in other = addr_of(0x0a000063, 7100); // 10.0.0.99: not ours
    EXPECT_EQ(zc_bind(s, &other), -EADDRNOTAVAIL);
    EXPECT_EQ(zc_bind(s, &a), 0);
    EXPECT_EQ(zc_bind(s, &a), -EINVAL);     // already bound
    EXPECT_EQ(zc_bind(t, &a), -EADDRINUSE); // port taken
    sockaddr_in mine = addr_of(guest_ip(2), 7101);
    EXPECT_EQ(zc_bind(t, &mine), 0);        // our own address is fine
    sockaddr_in z = addr_of(guest_ip(1), 0);
    EXPECT_EQ(zc_connect(s, &z), -EINVAL);  // port 0
    z = addr_of(0, 7);
    EXPECT_EQ(zc_connect(s, &z), -EINVAL);  // address 0
    EXPECT_EQ(zc_connect(s, nullptr), -EINVAL);
    // Not connected: send needs a destination.
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &b), 0);
    EXPECT_EQ(zc_send(s, b, 1, nullptr, 0, 0), -EDESTADDRREQ);
    EXPECT_EQ(zc_send(s, b, 1, &z, 0, 0), -EINVAL); // to with address 0
    EXPECT_EQ(zc_send(s, b, 1, &bad, 0, 0), -EINVAL);
    EXPECT_EQ(zc_send(s, b, 1, nullptr, 1u << 5, 0), -EINVAL); // unknown flag
    zc_close(s);
    // A closed socket's port is free again.
    int u = rig->open(2);
    EXPECT_EQ(zc_bind(u, &a), 0);
    zc_close(u);
    zc_close(t);
}

TEST_F(Uapi, PoolBuffersAndTheirErrors) {
    int s = rig->open(1, ZC_SOCK_STRICT, 8, 8);
    ASSERT_GE(s, 0);
    zc_pool_info pi{};
    EXPECT_EQ(zc_pool_mmap(s, nullptr), -EINVAL);
    pi.sz = 8;
    EXPECT_EQ(zc_pool_mmap(s, &pi), -EINVAL);
    pi.sz = sizeof pi;
    ASSERT_EQ(zc_pool_mmap(s, &pi), 0);
    zc_pool_info again{};
    again.sz = sizeof again;
    ASSERT_EQ(zc_pool_mmap(s, &again), 0);
    EXPECT_EQ(again.base, pi.base); // idempotent
    EXPECT_EQ(pi.tx_bufs, 8u);
    EXPECT_EQ(pi.rx_bufs, 8u);
    EXPECT_EQ(pi.max_payload, 1472u);
    EXPECT_GE(pi.headroom, 42u);
    EXPECT_EQ(pi.size, size_t(16) * pi.buf_size);
    std::vector<void*> bufs;
    EXPECT_EQ(zc_buf_alloc(s, nullptr), -EINVAL);
    for (;;) {
        void* b = nullptr;
        int rc = zc_buf_alloc(s, &b);
        if (rc < 0) {
            EXPECT_EQ(rc, -ENOBUFS);
            break;
        }
        uint8_t* p = static_cast<uint8_t*>(b);
        EXPECT_TRUE(p >= static_cast<uint8_t*>(pi.base) && p + pi.max_payload <= static_cast<uint8_t*>(pi.base) + pi.size);
        std::memset(b, 0xab, pi.max_payload); // the whole payload area is ours
        bufs.push_back(b);
    }
    EXPECT_EQ(bufs.size(), 8u);
    int local = 0;
    EXPECT_EQ(zc_buf_free(s, &local), -EFAULT);       // foreign pointer
    EXPECT_EQ(zc_buf_free(s, nullptr), -EFAULT);
    EXPECT_EQ(zc_buf_free(s, static_cast<uint8_t*>(bufs[0]) + 1), -EINVAL); // not a buffer start
    uint8_t* rx_area = static_cast<uint8_t*>(pi.base) + size_t(pi.tx_bufs) * pi.buf_size + pi.headroom;
    EXPECT_EQ(zc_buf_free(s, rx_area), -EINVAL);      // a receive buffer
    for (void* b : bufs) EXPECT_EQ(zc_buf_free(s, b), 0);
    EXPECT_EQ(zc_buf_free(s, bufs[3]), -EALREADY);    // double free
    // Sending a FREE buffer is a use after free.
    sockaddr_in to = addr_of(guest_ip(2), 9);
    EXPECT_EQ(zc_send(s, bufs[3], 10, &to, 0, 0), -EINVAL);
    zc_close(s);
}

TEST_F(Uapi, SendArgumentErrors) {
    pair p(*rig, 7002);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    EXPECT_EQ(zc_send(p.tx, nullptr, 0, nullptr, 0, 0), -EINVAL);
    EXPECT_EQ(zc_send(p.tx, b, 1473, nullptr, 0, 0), -EMSGSIZE);
    EXPECT_EQ(zc_send(p.tx, static_cast<uint8_t*>(b) + 8, 10, nullptr, 0, 0), -EINVAL); // inside, not a start
    uint8_t* rx_area = static_cast<uint8_t*>(p.ti.base) + size_t(p.ti.tx_bufs) * p.ti.buf_size + p.ti.headroom;
    EXPECT_EQ(zc_send(p.tx, rx_area, 10, nullptr, 0, 0), -EINVAL);
    EXPECT_EQ(zc_sendv(p.tx, nullptr, 1, nullptr, 0, nullptr), -EINVAL);
    zc_iov v{b, 10, 0, 1};
    EXPECT_EQ(zc_sendv(p.tx, &v, 0, nullptr, 0, nullptr), -EINVAL);
    EXPECT_EQ(zc_sendv(p.tx, &v, 1025, nullptr, 0, nullptr), -EINVAL);
    v.pad = 1;
    EXPECT_EQ(zc_sendv(p.tx, &v, 1, nullptr, 0, nullptr), -EINVAL);
    zc_completion c;
    EXPECT_EQ(zc_completions(p.tx, nullptr, 1), -EINVAL);
    EXPECT_EQ(zc_completions(p.tx, &c, 0), 0);
    zc_rxd d;
    EXPECT_EQ(zc_recv(p.rx, nullptr, 1), -EINVAL);
    EXPECT_EQ(zc_recv(p.rx, &d, 0), -EINVAL);
    EXPECT_EQ(zc_recv(p.rx, &d, 1), -EAGAIN);
    int local = 0;
    EXPECT_EQ(zc_rx_release(p.rx, &local), -EFAULT);
    EXPECT_EQ(zc_rx_release(p.rx, nullptr), -EFAULT);
    void* rb = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.rx, &rb), 0);
    EXPECT_EQ(zc_rx_release(p.rx, rb), -EINVAL);     // a send buffer
    uint8_t* rxa = static_cast<uint8_t*>(p.ri.base) + size_t(p.ri.tx_bufs) * p.ri.buf_size + p.ri.headroom;
    EXPECT_EQ(zc_rx_release(p.rx, rxa), -EINVAL);    // never handed out
    zc_stats st{};
    EXPECT_EQ(zc_socket_stats(p.tx, nullptr), -EINVAL);
    st.sz = 8;
    EXPECT_EQ(zc_socket_stats(p.tx, &st), -EINVAL);
    // Zero-length datagrams are datagrams.
    ASSERT_EQ(zc_send(p.tx, b, 0, nullptr, 0, 5), ZC_SENT_ZEROCOPY);
    ASSERT_EQ(reap(p.tx, &c, 1), 1);
    EXPECT_EQ(c.res, 0);
    ASSERT_EQ(recv_some(p.rx, &d, 1), 1);
    EXPECT_EQ(d.len, 0u);
    EXPECT_EQ(zc_rx_release(p.rx, d.data), 0);
}

TEST_F(Uapi, StrictRefusesForeignMemoryFallbackCopiesAndSaysSo) {
    pair strict(*rig, 7003);
    std::vector<uint8_t> heap(1200);
    fill(heap.data(), heap.size(), 7);
    EXPECT_EQ(zc_send(strict.tx, heap.data(), heap.size(), nullptr, 0, 1), -EFAULT);
    zc_iov v{heap.data(), 100, 0, 1};
    EXPECT_EQ(zc_sendv(strict.tx, &v, 1, nullptr, 0, nullptr), -EFAULT);
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(strict.tx, &st), 0);
    EXPECT_EQ(st.strict_refused, 2u);
    EXPECT_EQ(st.zc_sends + st.copied_sends, 0u);

    pair fb(*rig, 7004, ZC_SOCK_COPY_FALLBACK);
    ASSERT_EQ(zc_send(fb.tx, heap.data(), heap.size(), nullptr, 0, 9), ZC_SENT_COPIED);
    std::memset(heap.data(), 0, heap.size()); // ours again at once
    zc_completion c;
    ASSERT_EQ(reap(fb.tx, &c, 1), 1);
    EXPECT_EQ(c.user_data, 9u);
    EXPECT_EQ(c.flags, unsigned(ZC_CQE_F_COPIED));
    EXPECT_EQ(c.res, 1200);
    zc_rxd d;
    ASSERT_EQ(recv_some(fb.rx, &d, 1), 1);
    EXPECT_EQ(d.len, 1200u);
    EXPECT_TRUE(check(static_cast<const uint8_t*>(d.data), 1200, 7));
    zc_rx_release(fb.rx, d.data);
    // Pool buffers still go without a copy on a fallback socket.
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(fb.tx, &b), 0);
    ASSERT_EQ(zc_send(fb.tx, b, 64, nullptr, 0, 10), ZC_SENT_ZEROCOPY);
    ASSERT_EQ(reap(fb.tx, &c, 1), 1);
    EXPECT_EQ(c.flags, 0u);
    ASSERT_EQ(zc_socket_stats(fb.tx, &st), 0);
    EXPECT_EQ(st.copied_sends, 1u);
    EXPECT_EQ(st.zc_sends, 1u);
    EXPECT_EQ(st.completions, 2u);
}

TEST_F(Uapi, SendvBatchesWithOneWakeup) {
    pair p(*rig, 7005, ZC_SOCK_COPY_FALLBACK);
    zc_iov v[16];
    uint8_t heap[4][100];
    for (int i = 0; i < 16; i++) {
        void* b = nullptr;
        if (i < 12) {
            ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
            fill(static_cast<uint8_t*>(b), 500, uint32_t(i));
        } else {
            b = heap[i - 12];
            fill(heap[i - 12], 100, uint32_t(i));
        }
        v[i] = zc_iov{b, i < 12 ? 500u : 100u, 0, uint64_t(100 + i)};
    }
    unsigned copied = 99;
    ASSERT_EQ(zc_sendv(p.tx, v, 16, nullptr, 0, &copied), 16);
    EXPECT_EQ(copied, 4u);
    zc_completion c[16];
    ASSERT_EQ(reap(p.tx, c, 16), 16);
    for (int i = 0; i < 16; i++) EXPECT_EQ(c[i].user_data, uint64_t(100 + i)); // in order
    int got = 0;
    while (got < 16) {
        zc_rxd d[16];
        int n = recv_some(p.rx, d, 16);
        ASSERT_GT(n, 0);
        for (int k = 0; k < n; k++) {
            int i = got + k;
            EXPECT_TRUE(check(static_cast<const uint8_t*>(d[k].data), d[k].len, uint32_t(i))) << i;
            EXPECT_EQ(zc_rx_release(p.rx, d[k].data), 0);
        }
        got += n;
    }
    // A batch whose third element is in flight stops there.
    void* a = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &a), 0);
    ASSERT_EQ(zc_send(p.tx, a, 10, nullptr, 0, 1), 0);
    zc_iov w[3] = {{v[0].base, 10, 0, 2}, {v[1].base, 10, 0, 3}, {a, 10, 0, 4}};
    EXPECT_EQ(zc_sendv(p.tx, w, 3, nullptr, 0, nullptr), 2);
    ASSERT_EQ(reap(p.tx, c, 3), 3);
}

TEST_F(Uapi, PollAndEpollReportTheSocket) {
    pair p(*rig, 7006);
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep, 0);
    epoll_event e{};
    e.events = EPOLLIN | EPOLLOUT;
    e.data.fd = p.rx;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, p.rx, &e), 0);
    epoll_event out{};
    ASSERT_EQ(::epoll_wait(ep, &out, 1, 0), 1);
    EXPECT_EQ(out.events, uint32_t(EPOLLOUT)); // writable, nothing to read
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    ASSERT_EQ(zc_send(p.tx, b, 32, nullptr, 0, 0), 0);
    // The sender becomes readable for the completion, the receiver for the datagram.
    EXPECT_TRUE(wait_readable(p.tx));
    EXPECT_TRUE(wait_readable(p.rx));
    ASSERT_EQ(::epoll_wait(ep, &out, 1, 0), 1);
    EXPECT_EQ(out.events, uint32_t(EPOLLIN | EPOLLOUT));
    // Level-triggered: taking the completion does not hide the datagram.
    zc_completion c;
    ASSERT_EQ(reap(p.tx, &c, 1), 1);
    zc_rxd d;
    ASSERT_EQ(zc_recv(p.rx, &d, 1), 1);
    EXPECT_EQ(zc_rx_release(p.rx, d.data), 0);
    ASSERT_EQ(::epoll_wait(ep, &out, 1, 0), 1);
    EXPECT_FALSE(out.events & EPOLLIN); // drained
    ::close(ep);
}

TEST_F(Uapi, ReceiverWithoutBuffersDropsAndCounts) {
    pair p(*rig, 7007, ZC_SOCK_STRICT, 2); // two RX buffers, never released
    zc_completion c[8];
    for (int i = 0; i < 6; i++) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
        ASSERT_EQ(zc_send(p.tx, b, 100, nullptr, 0, uint64_t(i)), 0);
    }
    ASSERT_EQ(reap(p.tx, c, 6), 6);
    zc_stats st{};
    st.sz = sizeof st;
    for (int i = 0; i < 500; i++) {
        ASSERT_EQ(zc_socket_stats(p.rx, &st), 0);
        if (st.rx_packets + st.rx_drops >= 6) break;
        ::usleep(10000);
    }
    EXPECT_EQ(st.rx_packets, 2u);
    EXPECT_EQ(st.rx_drops, 4u);
    zc_rxd d[4];
    ASSERT_EQ(recv_some(p.rx, d, 4), 2);
    EXPECT_EQ(zc_rx_release(p.rx, d[0].data), 0);
    EXPECT_EQ(zc_rx_release(p.rx, d[1].data), 0);
}

TEST_F(Uapi, TwoApplicationsOnOneGuestAtOnce) {
    // Two sockets of guest 2 (two applications) receive from guest 1 while
    // each also sends back: ports keep them apart, pools are separate.
    int a = rig->open(2), b = rig->open(2), tx = rig->open(1);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    ASSERT_GE(tx, 0);
    sockaddr_in pa = addr_of(0, 7010), pb = addr_of(0, 7011);
    ASSERT_EQ(zc_bind(a, &pa), 0);
    ASSERT_EQ(zc_bind(b, &pb), 0);
    zc_pool_info ia{}, ib{};
    ia.sz = ib.sz = sizeof ia;
    ASSERT_EQ(zc_pool_mmap(a, &ia), 0);
    ASSERT_EQ(zc_pool_mmap(b, &ib), 0);
    EXPECT_NE(ia.base, ib.base);
    sockaddr_in ta = addr_of(guest_ip(2), 7010), tb = addr_of(guest_ip(2), 7011);
    for (int i = 0; i < 20; i++) {
        void* buf = nullptr;
        ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
        fill(static_cast<uint8_t*>(buf), 200, uint32_t(i));
        ASSERT_EQ(zc_send(tx, buf, 200, i % 2 ? &tb : &ta, 0, uint64_t(i)), 0);
    }
    zc_completion c[20];
    ASSERT_EQ(reap(tx, c, 20), 20);
    int got_a = 0, got_b = 0;
    for (int round = 0; round < 400 && got_a + got_b < 20; round++) {
        for (int s : {a, b}) {
            zc_rxd d[8];
            int n = zc_recv(s, d, 8);
            for (int k = 0; k < n; k++) {
                const uint8_t* p = static_cast<const uint8_t*>(d[k].data);
                const zc_pool_info& pi = s == a ? ia : ib;
                EXPECT_TRUE(p >= static_cast<uint8_t*>(pi.base) && p < static_cast<uint8_t*>(pi.base) + pi.size);
                (s == a ? got_a : got_b)++;
                zc_rx_release(s, d[k].data);
                // Answer from this application's own pool.
                void* r = nullptr;
                ASSERT_EQ(zc_buf_alloc(s, &r), 0);
                std::memcpy(r, p, 8);
                ASSERT_EQ(zc_send(s, r, 8, &d[k].from, 0, 0), 0);
            }
            zc_completion cc[8];
            int m = zc_completions(s, cc, 8);
            for (int k = 0; k < m; k++) EXPECT_EQ(cc[k].res, 8);
        }
        ::usleep(5000);
    }
    EXPECT_EQ(got_a, 10);
    EXPECT_EQ(got_b, 10);
    int answers = 0;
    for (int round = 0; round < 400 && answers < 20; round++) {
        zc_rxd d[20];
        int n = zc_recv(tx, d, 20);
        for (int k = 0; k < n; k++) zc_rx_release(tx, d[k].data);
        if (n > 0) answers += n;
        else wait_readable(tx, 10);
    }
    EXPECT_EQ(answers, 20);
    zc_close(a);
    zc_close(b);
    zc_close(tx);
}

TEST_F(Uapi, PingBetweenGuests) {
    sockaddr_in dst = addr_of(guest_ip(2), 0);
    int rtt = zc_ping(rig->g[1].sock.c_str(), &dst, 3000);
    EXPECT_GE(rtt, 0) << std::strerror(-rtt);
    dst = addr_of(guest_ip(1), 0);
    rtt = zc_ping(rig->g[2].sock.c_str(), &dst, 3000);
    EXPECT_GE(rtt, 0) << std::strerror(-rtt);
    EXPECT_EQ(zc_ping(rig->g[1].sock.c_str(), nullptr, 100), -EINVAL);
    EXPECT_EQ(zc_ping(rig->g[1].sock.c_str(), &dst, 0), -EINVAL);
    EXPECT_EQ(zc_ping("/nonexistent/stackd.sock", &dst, 100), -ENOENT);
    sockaddr_in nobody = addr_of(0x0a000063, 0); // 10.0.0.99
    EXPECT_EQ(zc_ping(rig->g[1].sock.c_str(), &nobody, 300), -ETIMEDOUT);
    for (int i = 0; i < 100 && rig->g[2].svc->stats().echo_replies == 0; i++) ::usleep(10000); // published per iteration
    EXPECT_GE(rig->g[2].svc->stats().echo_replies, 1u);
}

TEST_F(Uapi, UnreachableDestinationCompletesWithError) {
    int s = rig->open(1);
    ASSERT_GE(s, 0);
    sockaddr_in nobody = addr_of(0x0a000062, 9); // 10.0.0.98: nobody answers ARP
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &b), 0);
    ASSERT_EQ(zc_send(s, b, 10, &nobody, 0, 77), 0);
    zc_completion c;
    ASSERT_EQ(reap(s, &c, 1, 10000), 1);
    EXPECT_EQ(c.user_data, 77u);
    EXPECT_EQ(c.res, -EHOSTUNREACH); // as Linux reports a neighbour that never answered
    zc_stats st{};
    st.sz = sizeof st;
    ASSERT_EQ(zc_socket_stats(s, &st), 0);
    EXPECT_EQ(st.send_errors, 1u);
    EXPECT_EQ(zc_buf_free(s, b), 0); // the buffer came back
    zc_close(s);
}

TEST_F(Uapi, SendRingFullIsEagainNotACrash) {
    // A ring of 8 entries and 64 buffers: the ninth send before the stack
    // takes any may see a full ring; every send either goes or says EAGAIN.
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.tx_bufs = 64;
    o.ring_entries = 8;
    o.service = rig->g[1].sock.c_str();
    int s = zc_socket(&o);
    ASSERT_GE(s, 0);
    sockaddr_in to = addr_of(guest_ip(2), 7099);
    int sent = 0, again = 0;
    for (int i = 0; i < 64; i++) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(s, &b), 0);
        int rc = zc_send(s, b, 16, &to, 0, uint64_t(i));
        if (rc == 0) sent++;
        else {
            EXPECT_EQ(rc, -EAGAIN);
            again++;
        }
    }
    EXPECT_GT(sent, 0);
    zc_completion c[64];
    EXPECT_EQ(reap(s, c, sent), sent);
    zc_close(s);
}

TEST_F(Uapi, CloseWithSendsInFlightAndAppsThatDie) {
    // Close right after sending: the stack finishes the sends, ends the
    // pool's grants later, and serves new sockets meanwhile.
    for (int round = 0; round < 5; round++) {
        pair p(*rig, uint16_t(7020 + round));
        for (int i = 0; i < 8; i++) {
            void* b = nullptr;
            ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
            ASSERT_EQ(zc_send(p.tx, b, 1400, nullptr, 0, 0), 0);
        }
    }
    // A process that dies holding sockets.
    pid_t pid = test::spawn([&] {
        int s = rig->open(1);
        void* b = nullptr;
        zc_buf_alloc(s, &b);
        sockaddr_in to = addr_of(guest_ip(2), 9);
        zc_send(s, b, 100, &to, 0, 0);
        std::_Exit(0);
        return 0;
    });
    EXPECT_EQ(test::reap(pid), 0);
    pair p(*rig, 7030);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    ASSERT_EQ(zc_send(p.tx, b, 100, nullptr, 0, 0), 0);
    zc_completion c;
    EXPECT_EQ(reap(p.tx, &c, 1), 1);
    for (int i = 0; i < 300 && rig->g[1].svc->stats().sockets_closed < rig->g[1].svc->stats().sockets_opened - 1; i++)
        ::usleep(10000);
    auto st = rig->g[1].svc->stats();
    EXPECT_EQ(st.sockets_opened - st.sockets_closed, 1u); // only p.tx is still open
}

TEST(UapiService, StackServiceGoingAwayIsReported) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    int s = r.open(1);
    ASSERT_GE(s, 0);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &b), 0);
    sockaddr_in to = addr_of(guest_ip(2), 9);
    r.g[1].halt();
    r.g[1].svc.reset(); // zc-stackd stops: the socket's connection closes
    EXPECT_TRUE(wait_readable(s, 1000) || true);
    zc_rxd d;
    EXPECT_EQ(zc_recv(s, &d, 1), -ENOTCONN);
    EXPECT_EQ(zc_send(s, b, 10, &to, 0, 0), -EPIPE);
    EXPECT_EQ(zc_buf_free(s, b), 0); // local state stays usable
    sockaddr_in any = addr_of(0, 9);
    EXPECT_EQ(zc_bind(s, &any), -ENOTCONN);
    EXPECT_EQ(zc_connect(s, &to), -ENOTCONN);
    EXPECT_EQ(zc_close(s), 0);
    // And a new socket finds nobody.
    EXPECT_EQ(r.open(1), -ENOENT); // its socket path is gone too
}

TEST_F(Uapi, PoolBudgetAndGuestMemoryLimitsAreErrors) {
    // The grant budget (8192 pages) counts send buffers: 4096 of them are
    // 2048 pages, so at most four such sockets fit, and the next is -ENOSPC
    // (fewer when other tests' sockets still hold pages).
    std::vector<int> socks;
    int last = 0;
    for (int i = 0; i < 5 && (last = rig->open(1, ZC_SOCK_STRICT, 4096, 2)) >= 0; i++) socks.push_back(last);
    EXPECT_GE(socks.size(), 1u);
    EXPECT_LE(socks.size(), 4u);
    EXPECT_EQ(last, -ENOSPC);
    for (int s : socks) zc_close(s);
    // Once closed, the pages come back (grants end when nothing is in flight).
    int c = -1;
    for (int i = 0; i < 100 && (c = rig->open(1, ZC_SOCK_STRICT, 4096, 4096)) < 0; i++) ::usleep(10000);
    EXPECT_GE(c, 0);
    zc_close(c);
}

TEST_F(Uapi, FallbackWithoutFreeBuffersIsEagain) {
    int s = rig->open(1, ZC_SOCK_COPY_FALLBACK, 2, 2);
    ASSERT_GE(s, 0);
    void *x = nullptr, *y = nullptr;
    ASSERT_EQ(zc_buf_alloc(s, &x), 0);
    ASSERT_EQ(zc_buf_alloc(s, &y), 0);
    sockaddr_in to = addr_of(guest_ip(2), 9);
    char heap[100] = {};
    EXPECT_EQ(zc_send(s, heap, sizeof heap, &to, 0, 0), -EAGAIN); // nothing to copy into
    EXPECT_EQ(zc_buf_free(s, y), 0);
    EXPECT_EQ(zc_send(s, heap, sizeof heap, &to, 0, 0), ZC_SENT_COPIED);
    zc_completion c;
    EXPECT_EQ(reap(s, &c, 1), 1);
    zc_close(s);
}

namespace {
// A stand-in service that answers OPEN with `rsp` and no fds.
struct fake_service {
    std::string path;
    int lfd = -1;
    std::thread th;
    fake_service(const std::string& p, int32_t rc, uint32_t version) : path(p) {
        lfd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", p.c_str());
        EXPECT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(lfd, 4), 0);
        th = std::thread([this, rc, version] {
            int c = ::accept(lfd, nullptr, nullptr);
            if (c < 0) return;
            char req[64];
            (void)!::read(c, req, sizeof req);
            struct {
                int32_t rc;
                uint32_t version;
                uint64_t rest[3];
                uint32_t ip;
                uint16_t port, pad;
            } r{};
            static_assert(sizeof r == 40);
            r.rc = rc;
            r.version = version;
            (void)!::write(c, &r, sizeof r);
            char tmp[8];
            (void)!::read(c, tmp, sizeof tmp); // until the client hangs up
            ::close(c);
        });
    }
    ~fake_service() {
        th.join();
        ::close(lfd);
        ::unlink(path.c_str());
    }
};
} // namespace

TEST_F(Uapi, ServiceProtocolErrors) {
    zc_socket_opts o{};
    o.sz = sizeof o;
    std::string p = rig->host.dir() + "/fake.sock";
    o.service = p.c_str();
    {
        fake_service f(p, 0, 99); // another protocol version
        EXPECT_EQ(zc_socket(&o), -EPROTO);
    }
    {
        fake_service f(p, 0, 1); // claims success but passes no fds
        EXPECT_EQ(zc_socket(&o), -EPROTO);
    }
    {
        fake_service f(p, -ENOMEM, 1); // the service's own error comes through
        EXPECT_EQ(zc_socket(&o), -ENOMEM);
    }
    // A socket file nobody listens on.
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", p.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(zc_socket(&o), -ECONNREFUSED);
    ::close(fd);
    ::unlink(p.c_str());
    std::string longp(200, 'x');
    o.service = longp.c_str();
    EXPECT_EQ(zc_socket(&o), -ENAMETOOLONG);
}

TEST(UapiService, HeadroomHeadersModeCarriesTheSameDatagrams) {
    // zc-stackd --tx-headers headroom: one slot, headers in the buffer.
    uapi_rig r(false);
    ASSERT_TRUE(r.ok());
    pair p(r, 7200);
    zc_completion c[8];
    for (uint32_t len : {0u, 1u, 100u, 1472u}) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
        fill(static_cast<uint8_t*>(b), len, len);
        ASSERT_EQ(zc_send(p.tx, b, len, nullptr, 0, len), 0);
        ASSERT_EQ(reap(p.tx, c, 1), 1);
        EXPECT_EQ(c[0].res, int32_t(len));
        zc_rxd d;
        ASSERT_EQ(recv_some(p.rx, &d, 1), 1);
        ASSERT_EQ(d.len, len);
        EXPECT_TRUE(check(static_cast<const uint8_t*>(d.data), len, len));
        zc_rx_release(p.rx, d.data);
    }
}

TEST_F(Uapi, PayloadOfEveryLengthArrivesIntact) {
    pair p(*rig, 7201);
    zc_completion c[8];
    for (uint32_t len : {1u, 2u, 41u, 63u, 64u, 65u, 511u, 1000u, 1471u, 1472u}) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
        fill(static_cast<uint8_t*>(b), len, len + 5);
        ASSERT_EQ(zc_send(p.tx, b, len, nullptr, 0, len), 0);
        ASSERT_EQ(reap(p.tx, c, 1), 1);
        EXPECT_EQ(c[0].res, int32_t(len));
        zc_buf_free(p.tx, b);
        zc_rxd d;
        ASSERT_EQ(recv_some(p.rx, &d, 1), 1);
        ASSERT_EQ(d.len, len);
        EXPECT_TRUE(check(static_cast<const uint8_t*>(d.data), len, len + 5)) << len;
        zc_rx_release(p.rx, d.data);
    }
}

// ---- a hostile application: it speaks the ring protocol itself --------------
#include "common/fdpass.hpp"
#include "uapi/shm.hpp"

namespace {
} // namespace

TEST_F(Uapi, HostileRingEntriesAreRefusedAndTheServiceCarriesOn) {
    raw_sock h;
    ASSERT_TRUE(h.open(rig->g[1].sock, 16));
    auto before = rig->g[1].svc->stats();
    uint32_t dst = htonl(guest_ip(2));
    uint16_t port = htons(9);
    const uapi::tx_desc bad[] = {
        {8, 64, 10, dst, port, 0, 1},      // buffer out of range (tx_bufs = 8)
        {~0u, 64, 10, dst, port, 0, 2},    // way out of range
        {0, 10, 10, dst, port, 0, 3},      // offset inside the header room
        {0, 64, 1473, dst, port, 0, 4},    // too long
        {0, 2000, 100, dst, port, 0, 5},   // past the buffer
        {0, 64, 10, 0, port, 0, 6},        // no destination
        {0, 64, 10, dst, 0, 0, 7},         // no port
        {1, 64, 10, dst, port, 0, 8},      // fine
        {1, 64, 10, dst, port, 0, 9},      // the same buffer again, in flight
    };
    uint32_t prod = 0;
    for (auto& d : bad) h.tx.write(prod++, d);
    h.tx.publish(prod);
    h.kick();
    uapi::cq_desc got[16];
    uint32_t n = 0, cons = 0;
    for (int i = 0; i < 500 && n < 9; i++) {
        while (h.cq.avail(cons) && n < 16) got[n++] = h.cq.read(cons++);
        h.cq.release(cons);
        ::usleep(5000);
    }
    ASSERT_EQ(n, 9u);
    int invalid = 0, busy = 0, ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (got[i].res == -EINVAL) invalid++;
        else if (got[i].res == -EBUSY) busy++;
        else if (got[i].res == 10) ok++;
    }
    EXPECT_EQ(invalid, 7);
    EXPECT_EQ(ok, 1);
    EXPECT_EQ(busy + ok + invalid, 9); // the in-flight duplicate: -EBUSY, or fine if the first had completed
    // A producer index that cannot be true is ignored; garbage releases are counted.
    h.tx.publish(prod + 1000000);
    const uapi::fr_desc frs[] = {{0}, {7}, {1000}, {~0u}};
    uint32_t fp = 0;
    for (auto& f : frs) h.fr.write(fp++, f);
    h.fr.publish(fp);
    h.kick();
    ::usleep(50000);
    auto after = rig->g[1].svc->stats();
    EXPECT_GE(after.tx_bad_desc - before.tx_bad_desc, 7u);
    EXPECT_EQ(after.fr_bad - before.fr_bad, 4u); // none of those buffers was handed out
    // Everyone else is served as before.
    pair p(*rig, 7300);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    ASSERT_EQ(zc_send(p.tx, b, 20, nullptr, 0, 1), 0);
    zc_completion c;
    EXPECT_EQ(reap(p.tx, &c, 1), 1);
    zc_rxd d;
    EXPECT_EQ(recv_some(p.rx, &d, 1), 1);
}

TEST_F(Uapi, BurstLargerThanTheNetfrontRingIsHeldNotLost) {
    // 512 datagrams at once: more than netfront's 256 TX slots (two per
    // datagram with private headers), so zc-stackd holds entries and retries.
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.tx_bufs = 1024;
    o.ring_entries = 1024;
    o.service = rig->g[1].sock.c_str();
    int tx = zc_socket(&o);
    ASSERT_GE(tx, 0);
    o.rx_bufs = 1024;
    o.tx_bufs = 0;
    o.service = rig->g[2].sock.c_str();
    int rx = zc_socket(&o);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7400), to = addr_of(guest_ip(2), 7400);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    std::vector<zc_iov> v(512);
    for (uint32_t i = 0; i < 512; i++) {
        void* p = nullptr;
        ASSERT_EQ(zc_buf_alloc(tx, &p), 0);
        fill(static_cast<uint8_t*>(p), 256, i);
        v[i] = zc_iov{p, 256, 0, i};
    }
    ASSERT_EQ(zc_sendv(tx, v.data(), 512, &to, 0, nullptr), 512);
    std::vector<zc_completion> c(512);
    ASSERT_EQ(reap(tx, c.data(), 512, 20000), 512);
    std::vector<bool> seen_ud(512);
    for (auto& e : c) {
        EXPECT_EQ(e.res, 256);
        ASSERT_LT(e.user_data, 512u);
        EXPECT_FALSE(seen_ud[e.user_data]);
        seen_ud[e.user_data] = true;
    }
    uint32_t got = 0, intact = 0;
    for (int round = 0; round < 200 && got < 512; round++) {
        zc_rxd d[64];
        int n = zc_recv(rx, d, 64);
        if (n <= 0) {
            wait_readable(rx, 20);
            zc_stats st{};
            st.sz = sizeof st;
            zc_socket_stats(rx, &st);
            if (st.rx_packets + st.rx_drops >= 512 && n <= 0 && got == st.rx_packets) break;
            continue;
        }
        for (int k = 0; k < n; k++) {
            // Which datagram: in order unless some were dropped, so look from
            // the expected one on.
            uint32_t i = got + uint32_t(k);
            while (i < 512 && !check(static_cast<const uint8_t*>(d[k].data), 256, i)) i++;
            intact += i < 512;
            zc_rx_release(rx, d[k].data);
        }
        got += uint32_t(n);
    }
    EXPECT_GT(got, 0u);
    EXPECT_EQ(intact, got);
    zc_close(tx);
    zc_close(rx);
}

TEST(UapiService, ReleaseRingFullIsEagainUntilTheServiceDrainsIt) {
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.rx_bufs = 64;
    o.ring_entries = 8;
    o.service = r.g[2].sock.c_str();
    int rx = zc_socket(&o);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7500), to = addr_of(guest_ip(2), 7500);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    int tx = r.open(1);
    ASSERT_GE(tx, 0);
    // Hold 16 received buffers: more than the release ring's 8 entries.
    std::vector<const void*> held;
    for (int i = 0; i < 16; i++) {
        void* p = nullptr;
        ASSERT_EQ(zc_buf_alloc(tx, &p), 0);
        ASSERT_EQ(zc_send(tx, p, 8, &to, 0, 0), 0);
        zc_rxd d;
        ASSERT_EQ(recv_some(rx, &d, 1), 1);
        held.push_back(d.data);
    }
    r.g[2].halt(); // zc-stackd of guest 2 stops draining (its sockets stay connected)
    int ok = 0, again = 0;
    for (const void* p : held) {
        int rc = zc_rx_release(rx, p);
        if (rc == 0) ok++;
        else {
            EXPECT_EQ(rc, -EAGAIN);
            again++;
        }
    }
    EXPECT_EQ(ok, 8);
    EXPECT_EQ(again, 8);
    // The refused ones are still the application's: releasing them again
    // once there is room works (here: the service runs one iteration).
    r.g[2].stop = false;
    r.g[2].loop = std::thread([&G = r.g[2]] { (void)G.svc->run(G.stop); });
    int later = 0;
    for (int round = 0; round < 200 && later < 8; round++) {
        for (size_t i = 8; i < held.size(); i++)
            if (held[i] && zc_rx_release(rx, held[i]) == 0) {
                held[i] = nullptr;
                later++;
            }
        ::usleep(5000);
    }
    EXPECT_EQ(later, 8);
    zc_close(rx);
    zc_close(tx);
}

TEST_F(Uapi, CloseWithClose2InsteadOfZcCloseDoesNotHurtTheNextSocket) {
    int a = rig->open(1);
    ASSERT_GE(a, 0);
    ::close(a); // misuse: the number is free again for whatever comes next
    int b = rig->open(1); // its control connection typically takes that number
    ASSERT_GE(b, 0);
    void* p = nullptr;
    ASSERT_EQ(zc_buf_alloc(b, &p), 0);
    sockaddr_in to = addr_of(guest_ip(2), 9);
    ASSERT_EQ(zc_send(b, p, 10, &to, 0, 0), 0);
    zc_completion c;
    EXPECT_EQ(reap(b, &c, 1), 1);
    EXPECT_EQ(zc_close(b), 0);
}

TEST_F(Uapi, RandomRingEntriesAndControlMessagesNeverHurtTheService) {
    // A seeded storm of random TX descriptors, releases, producer indices and
    // control messages from hostile connections (the deterministic stand-in
    // for a fuzzer of zc-stackd's peer input); then everyone else is served.
    std::mt19937 rng(12345);
    auto r32 = [&] { return uint32_t(rng()); };
    for (int conn = 0; conn < 4; conn++) {
        raw_sock h;
        ASSERT_TRUE(h.open(rig->g[1].sock, 32));
        uint32_t prod = 0, fprod = 0;
        for (int round = 0; round < 50; round++) {
            int k = int(r32() % 32);
            for (int i = 0; i < k; i++) {
                uapi::tx_desc d{};
                d.buf = r32() % 3 ? r32() % 10 : r32();
                d.off = uint16_t(r32() % 3 ? 64 : r32());
                d.len = uint16_t(r32() % 3 ? r32() % 1600 : r32());
                d.dst_ip = r32() % 4 ? htonl(guest_ip(2)) : r32();
                d.dst_port = uint16_t(r32() % 4 ? htons(9) : r32());
                d.flags = uint16_t(r32());
                d.user_data = r32();
                h.tx.write(prod++, d);
            }
            h.tx.publish(r32() % 20 ? prod : r32()); // now and then an index that cannot be true
            int f = int(r32() % 8);
            for (int i = 0; i < f; i++) h.fr.write(fprod++, uapi::fr_desc{r32() % 3 ? r32() % 12 : r32()});
            h.fr.publish(fprod);
            h.kick();
            // Reap what comes back, as a sloppy application would.
            uint32_t cons = h.cq.h->cons.v.load();
            h.cq.release(cons + h.cq.avail(cons));
            if (round % 10 == 0) ::usleep(2000);
        }
        // Garbage on the control connection too: wrong sizes, ops, versions, with fds.
        for (int i = 0; i < 20; i++) {
            uint8_t junk[64];
            for (auto& b : junk) b = uint8_t(r32());
            size_t len = r32() % sizeof junk;
            if (i % 3 == 0) {
                uapi::ctl_req rq{};
                rq.op = r32() % 8;
                rq.version = i % 2 ? uapi::proto_version : r32();
                rq.ip = r32();
                rq.port = uint16_t(r32());
                std::memcpy(junk, &rq, sizeof rq);
                len = sizeof rq;
            }
            int pfd[2];
            ASSERT_EQ(::pipe(pfd), 0);
            // Every fourth message carries an fd nobody asked for.
            (void)fdpass::send(h.ctl, junk, len, &pfd[0], i % 4 == 1 ? 1 : 0, MSG_DONTWAIT);
            ::close(pfd[0]);
            ::close(pfd[1]);
            char sink[128];
            (void)::recv(h.ctl, sink, sizeof sink, MSG_DONTWAIT);
        }
    }
    ::usleep(100000);
    pair p(*rig, 7600);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    fill(static_cast<uint8_t*>(b), 500, 3);
    ASSERT_EQ(zc_send(p.tx, b, 500, nullptr, 0, 1), 0);
    zc_completion c;
    EXPECT_EQ(reap(p.tx, &c, 1), 1);
    EXPECT_EQ(c.res, 500);
    zc_rxd d;
    ASSERT_EQ(recv_some(p.rx, &d, 1), 1);
    EXPECT_TRUE(check(static_cast<const uint8_t*>(d.data), 500, 3));
    auto st = rig->g[1].svc->stats();
    EXPECT_GT(st.tx_bad_desc, 0u);
    EXPECT_GT(st.fr_bad, 0u);
}

TEST_F(Uapi, OversizedControlRequestsAreRefusedAndTheirFdsClosed) {
    raw_sock h;
    ASSERT_TRUE(h.open(rig->g[1].sock, 16));
    // A well-formed BIND with bytes after it, and a descriptor: refused as a
    // malformed request (not executed from its first bytes), the descriptor
    // closed, the connection still served.
    uapi::ctl_req rq{};
    rq.op = uint32_t(uapi::op::bind);
    rq.version = uapi::proto_version;
    rq.port = htons(7700);
    uint8_t big[sizeof rq + 8] = {};
    std::memcpy(big, &rq, sizeof rq);
    int pfd[2];
    ASSERT_EQ(::pipe(pfd), 0);
    ASSERT_EQ(zc::fdpass::send(h.ctl, big, sizeof big, &pfd[0], 1), long(sizeof big));
    ::close(pfd[0]);
    uapi::ctl_rsp rs{};
    ASSERT_EQ(::recv(h.ctl, &rs, sizeof rs, 0), ssize_t(sizeof rs));
    EXPECT_EQ(rs.rc, -EPROTO);
    pollfd w{pfd[1], POLLOUT, 0};
    ASSERT_EQ(::poll(&w, 1, 1000), 1);
    EXPECT_TRUE(w.revents & POLLERR); // no read end is left open anywhere
    ::close(pfd[1]);
    ASSERT_EQ(::send(h.ctl, &rq, sizeof rq, MSG_NOSIGNAL), ssize_t(sizeof rq));
    ASSERT_EQ(::recv(h.ctl, &rs, sizeof rs, 0), ssize_t(sizeof rs));
    EXPECT_EQ(rs.rc, 0);
    EXPECT_EQ(rs.port, htons(7700));
}

// zc-stackd's own per-socket counters (`zc-stackd stats --sockets`), kept in
// its memory: each socket sees its own datagrams and bytes, the service's
// totals agree, and the Prometheus exposition carries the same numbers.
TEST_F(Uapi, PerSocketStatsCountEachSocketsOwnTraffic) {
    pair p(*rig, 7111);
    pair other(*rig, 7112); // idle: its counters stay zero
    const uint32_t lens[] = {100, 200, 300};
    for (uint32_t i = 0; i < 3; i++) {
        void* b = nullptr;
        ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
        fill(static_cast<uint8_t*>(b), lens[i], i);
        ASSERT_EQ(zc_send(p.tx, b, lens[i], nullptr, 0, i), ZC_SENT_ZEROCOPY);
    }
    zc_completion c[4];
    ASSERT_EQ(reap(p.tx, c, 3), 3);
    zc_rxd d[4];
    unsigned got = 0;
    while (got < 3) {
        int n = recv_some(p.rx, d + got, 4 - got);
        ASSERT_GT(n, 0);
        got += unsigned(n);
    }
    for (unsigned i = 0; i < got; i++) EXPECT_EQ(zc_rx_release(p.rx, d[i].data), 0);

    auto find = [](const std::vector<stackd::socket_stat>& v, uint16_t port) -> const stackd::socket_stat* {
        for (auto& s : v)
            if (ntohs(s.port) == port) return &s;
        return nullptr;
    };
    auto s2 = stackd::query_sockets(rig->g[2].sock);
    ASSERT_TRUE(s2) << s2.error();
    const stackd::socket_stat* rx = find(*s2, 7111);
    ASSERT_NE(rx, nullptr);
    EXPECT_EQ(rx->pid, int32_t(::getpid()));
    EXPECT_EQ(rx->c.rx_datagrams, 3u);
    EXPECT_EQ(rx->c.rx_bytes, 600u);
    EXPECT_EQ(rx->c.tx_datagrams, 0u);
    const stackd::socket_stat* idle = find(*s2, 7112);
    ASSERT_NE(idle, nullptr);
    EXPECT_EQ(idle->c.rx_datagrams, 0u);

    auto s1 = stackd::query_sockets(rig->g[1].sock);
    ASSERT_TRUE(s1) << s1.error();
    // The sending sockets by their ephemeral ports (a socket an earlier test
    // closed may still be on the list until zc-stackd sees the hang-up).
    sockaddr_in l1{}, l2{};
    ASSERT_EQ(zc_getsockname(p.tx, &l1), 0);
    ASSERT_EQ(zc_getsockname(other.tx, &l2), 0);
    const stackd::socket_stat* tx = find(*s1, ntohs(l1.sin_port));
    const stackd::socket_stat* tx_idle = find(*s1, ntohs(l2.sin_port));
    ASSERT_NE(tx, nullptr);
    ASSERT_NE(tx_idle, nullptr);
    EXPECT_EQ(tx_idle->c.tx_datagrams, 0u);
    EXPECT_EQ(tx->c.tx_datagrams, 3u);
    EXPECT_EQ(tx->c.tx_bytes, 600u);
    EXPECT_EQ(tx->c.tx_errors, 0u);

    auto tot = stackd::query_counters(rig->g[2].sock);
    ASSERT_TRUE(tot);
    EXPECT_GE(tot->rx_udp, 3u);
    auto text = stackd::prometheus_text(*tot, *s2);
    const std::string series = "zcnet_stackd_socket_rx_bytes_total{socket=\"" + std::to_string(rx->slot) +
                               "\",pid=\"" + std::to_string(::getpid()) + "\",addr=\"0.0.0.0:7111\"} 600\n";
    EXPECT_NE(text.find(series), std::string::npos) << text;
    EXPECT_NE(text.find("# TYPE zcnet_stackd_rx_udp_total counter\n"), std::string::npos);
    EXPECT_EQ(stackd::query_sockets(rig->host.dir() + "/nobody.sock").error(), -ENOENT);
}
