// SPDX-License-Identifier: MIT
// Hostile applications against zc-stackd on the emulated host: what an
// application is handed (the ring memfd, its pool's send buffers, its
// receive buffers) reaches nothing else and cannot be resized or written
// where it must not be; headers never sit in its memory; idle connections
// and greedy applications meet limits. Each case ends with the hostile
// socket gone or refused and other sockets, zc-stackd and zc-netback
// carrying traffic (docs/ARCHITECTURE.md, "Trust boundaries").
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

// Runs `f` in a child process (an application that misbehaves and dies of
// it). The signal that ended it, or 0 when it exited.
int child_signal(const std::function<void()>& f) {
    pid_t p = ::fork();
    if (p == 0) {
        // The fault is the point: no sanitizer report, the default action.
        std::signal(SIGBUS, SIG_DFL);
        std::signal(SIGSEGV, SIG_DFL);
        f();
        ::_exit(0);
    }
    int st = 0;
    if (p < 0 || ::waitpid(p, &st, 0) != p) return -1;
    return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

// A datagram from a fresh socket on guest 1 to a fresh one on guest 2,
// payload verified: the service and zc-netback still serve everyone else.
void expect_traffic(uapi_rig& r, uint16_t port) {
    int tx = r.open(1, ZC_SOCK_STRICT, 16, 16), rx = r.open(2, ZC_SOCK_STRICT, 16, 16);
    ASSERT_GE(tx, 0) << std::strerror(-tx);
    ASSERT_GE(rx, 0) << std::strerror(-rx);
    sockaddr_in b = addr_of(0, port);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    sockaddr_in to = addr_of(guest_ip(2), port);
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
    for (int i = 0; i < 300; i++) static_cast<uint8_t*>(buf)[i] = uint8_t(i * 7 + port);
    ASSERT_EQ(zc_send(tx, buf, 300, &to, 0, 1), ZC_SENT_ZEROCOPY);
    zc_completion c{};
    ASSERT_EQ(reap(tx, &c, 1), 1);
    EXPECT_EQ(c.res, 300);
    zc_rxd d{};
    ASSERT_EQ(recv_some(rx, &d, 1), 1);
    ASSERT_EQ(d.len, 300u);
    for (int i = 0; i < 300; i++) ASSERT_EQ(static_cast<const uint8_t*>(d.data)[i], uint8_t(i * 7 + port)) << i;
    EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    zc_close(tx);
    zc_close(rx);
}

// The service closes the socket of an application that went away.
bool closed_by_service(uapi_rig& r, int d, uint64_t closed_before) {
    for (int i = 0; i < 300; i++) {
        if (r.g[d].svc->stats().sockets_closed > closed_before) return true;
        ::usleep(10000);
    }
    return false;
}

bool seals_size(int fd) {
    const int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    int s = ::fcntl(fd, F_GET_SEALS);
    return s >= 0 && (s & want) == want;
}

// Each case against both ways of giving the application its send buffers
// (stackd.hpp, pool_export): granted pages, or a memfd of zc-stackd's that
// it copies from (Xen guest kernels without udmabuf).
class HostileApp : public ::testing::TestWithParam<stackd::pool_export> {
protected:
    void SetUp() override {
        rig = std::make_unique<uapi_rig>(true, [m = GetParam()](stackd::options& o) { o.pool_mode = m; });
        ASSERT_TRUE(rig->ok());
        ASSERT_EQ(rig->g[1].svc->pool_mode(), GetParam());
    }
    std::unique_ptr<uapi_rig> rig;
};

} // namespace

INSTANTIATE_TEST_SUITE_P(PoolExport, HostileApp,
                         ::testing::Values(stackd::pool_export::grant, stackd::pool_export::copy),
                         [](const auto& i) { return std::string(stackd::pool_export_name(i.param)); });

TEST_P(HostileApp, FtruncateOfWhatItWasGivenFails) {
    const uint64_t closed = rig->g[1].svc->stats().sockets_closed;
    {
        raw_sock h;
        ASSERT_TRUE(h.open(rig->g[1].sock, 16));
        for (int f : {uapi::fd_shm, uapi::fd_pool}) {
            SCOPED_TRACE(f);
            struct stat st{};
            ASSERT_EQ(::fstat(h.fds[f], &st), 0);
            EXPECT_TRUE(seals_size(h.fds[f]));
            errno = 0;
            EXPECT_EQ(::ftruncate(h.fds[f], 0), -1);
            EXPECT_EQ(errno, EPERM);
            EXPECT_EQ(::ftruncate(h.fds[f], st.st_size + 4096), -1);
            EXPECT_EQ(errno, EPERM);
            // Nor can it seal the memory against the service's writes.
            EXPECT_EQ(::fcntl(h.fds[f], F_ADD_SEALS, F_SEAL_WRITE), -1);
            EXPECT_EQ(errno, EPERM);
            ASSERT_EQ(::fstat(h.fds[f], &st), 0);
            EXPECT_GT(st.st_size, 0);
        }
        // The service still reads this socket's rings: a send is refused as
        // a bad descriptor, not a crash (no port bound, no destination).
        uapi::tx_desc t{};
        t.buf = 0;
        t.off = uapi::headroom;
        t.len = 10;
        h.tx.write(0, t);
        h.tx.publish(1);
        h.kick();
        for (int i = 0; i < 300 && h.cq.avail(0) == 0; i++) ::usleep(10000);
        ASSERT_EQ(h.cq.avail(0), 1u);
        EXPECT_EQ(h.cq.read(0).res, -EINVAL);
    } // the application goes away
    EXPECT_TRUE(closed_by_service(*rig, 1, closed));
    expect_traffic(*rig, 7101);
}

TEST_P(HostileApp, PoolFdReachesOnlyItsOwnSendBuffers) {
    raw_sock a, b;
    ASSERT_TRUE(a.open(rig->g[1].sock, 16, 8, 8));
    ASSERT_TRUE(b.open(rig->g[1].sock, 16, 8, 8));
    // Exactly the send buffers (8 x 2 KiB), at offset 0, and in another
    // file exactly the receive buffers (8 x 2 KiB); other sockets' pools
    // are other files.
    struct stat sa{}, sb{}, ra{};
    ASSERT_EQ(::fstat(a.fds[uapi::fd_pool], &sa), 0);
    ASSERT_EQ(::fstat(b.fds[uapi::fd_pool], &sb), 0);
    ASSERT_EQ(::fstat(a.fds[uapi::fd_rx], &ra), 0);
    EXPECT_EQ(a.rsp.pool_off, 0u);
    EXPECT_EQ(sa.st_size, off_t(8 * uapi::buf_size));
    EXPECT_EQ(ra.st_size, off_t(8 * uapi::buf_size));
    EXPECT_EQ(a.rsp.pool_size, uint64_t(16 * uapi::buf_size));
    EXPECT_NE(sa.st_ino, sb.st_ino);
    EXPECT_NE(sa.st_ino, ra.st_ino);
    // Writing all of a's pool leaves b's untouched.
    const size_t sz = size_t(sa.st_size);
    auto* pa = static_cast<uint8_t*>(::mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[uapi::fd_pool], 0));
    auto* pb = static_cast<uint8_t*>(::mmap(nullptr, sz, PROT_READ, MAP_SHARED, b.fds[uapi::fd_pool], 0));
    ASSERT_NE(pa, MAP_FAILED);
    ASSERT_NE(pb, MAP_FAILED);
    std::memset(pa, 0xA5, sz);
    for (size_t i = 0; i < sz; i++) ASSERT_EQ(pb[i], 0) << i;
    // Beyond the pool there is nothing: a mapping past its end faults in
    // the application only (or is refused outright).
    const int sig = child_signal([&] {
        void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[uapi::fd_pool], off_t(sz));
        if (m == MAP_FAILED) ::_exit(3);
        static_cast<volatile uint8_t*>(m)[0] = 1;
        ::_exit(4);
    });
    EXPECT_EQ(sig, SIGBUS);
    void* big = ::mmap(nullptr, sz + 4096, PROT_READ, MAP_SHARED, a.fds[uapi::fd_pool], 0);
    if (big != MAP_FAILED) {
        EXPECT_EQ(child_signal([&] { (void)static_cast<volatile uint8_t*>(big)[sz]; }), SIGBUS);
        ::munmap(big, sz + 4096);
    }
    ::munmap(pa, sz);
    ::munmap(pb, sz);
    expect_traffic(*rig, 7102);
}

TEST_P(HostileApp, ReceiveBuffersAreReadOnly) {
    raw_sock h;
    ASSERT_TRUE(h.open(rig->g[1].sock, 16));
    // Granted receive buffers come opened O_RDONLY, copy mode's memfd is
    // sealed F_SEAL_FUTURE_WRITE: no writable mapping either way, no
    // mprotect to writable.
    const int fl = ::fcntl(h.fds[uapi::fd_rx], F_GETFL);
    EXPECT_TRUE((fl & O_ACCMODE) == O_RDONLY || (::fcntl(h.fds[uapi::fd_rx], F_GET_SEALS) & F_SEAL_FUTURE_WRITE));
    errno = 0;
    EXPECT_EQ(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, h.fds[uapi::fd_rx], 0), MAP_FAILED);
    EXPECT_TRUE(errno == EPERM || errno == EACCES) << std::strerror(errno);
    void* ro = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, h.fds[uapi::fd_rx], 0);
    ASSERT_NE(ro, MAP_FAILED);
    EXPECT_EQ(::mprotect(ro, 4096, PROT_READ | PROT_WRITE), -1);
    EXPECT_EQ(errno, EACCES);
    ::munmap(ro, 4096);

    // Through libzcnet: a received datagram's bytes cannot be written; an
    // application that tries dies of SIGSEGV, and the data is intact.
    int tx = rig->open(1), rx = rig->open(2);
    ASSERT_GE(tx, 0);
    ASSERT_GE(rx, 0);
    sockaddr_in b = addr_of(0, 7103);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    sockaddr_in to = addr_of(guest_ip(2), 7103);
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
    std::memset(buf, 0x5C, 100);
    ASSERT_EQ(zc_send(tx, buf, 100, &to, 0, 1), ZC_SENT_ZEROCOPY);
    zc_rxd d{};
    ASSERT_EQ(recv_some(rx, &d, 1), 1);
    ASSERT_EQ(d.len, 100u);
    EXPECT_EQ(child_signal([&] { const_cast<uint8_t*>(static_cast<const uint8_t*>(d.data))[0] = 0; }), SIGSEGV);
    for (int i = 0; i < 100; i++) ASSERT_EQ(static_cast<const uint8_t*>(d.data)[i], 0x5C);
    EXPECT_EQ(zc_rx_release(rx, d.data), 0);
    zc_close(tx);
    zc_close(rx);
    expect_traffic(*rig, 7104);
}

TEST_P(HostileApp, ForgedHeadersOfAZeroLengthDatagramAreNeverSent) {
    int tx = rig->open(1), rx = rig->open(2), victim = rig->open(2);
    ASSERT_GE(tx, 0);
    ASSERT_GE(rx, 0);
    ASSERT_GE(victim, 0);
    sockaddr_in b = addr_of(0, 7105), v = addr_of(0, 7106);
    ASSERT_EQ(zc_bind(rx, &b), 0);
    ASSERT_EQ(zc_bind(victim, &v), 0);
    sockaddr_in to = addr_of(guest_ip(2), 7105);
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(tx, &buf), 0);
    uint8_t* head = static_cast<uint8_t*>(buf) - uapi::headroom;
    // A forger rewrites the buffer's headroom, all the time, into a frame of
    // the same flow to the victim's port (where zc-stackd would have put
    // the headers had it used the headroom: they end where the payload
    // starts).
    uint8_t forged[uapi::headroom];
    std::atomic<bool> stop{false};
    std::thread forger([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            std::memcpy(forged, head, sizeof forged);
            uint8_t* udp = forged + uapi::headroom - 8;
            udp[2] = uint8_t(7106 >> 8), udp[3] = uint8_t(7106 & 0xff); // dst port
            udp[6] = udp[7] = 0;                                          // no checksum
            std::memcpy(head, forged, sizeof forged);
        }
    });
    const int n = 200;
    int sent = 0;
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(zc_send(tx, buf, 0, &to, 0, uint64_t(i)), ZC_SENT_ZEROCOPY);
        zc_completion c{};
        ASSERT_EQ(reap(tx, &c, 1), 1);
        EXPECT_EQ(c.res, 0);
        sent++;
    }
    stop = true;
    forger.join();
    // Every datagram arrived where it was sent, zero bytes long, from the
    // sender's address; the victim got nothing.
    int got = 0;
    for (int i = 0; i < 200 && got < sent; i++) {
        zc_rxd d[16];
        int k = zc_recv(rx, d, 16);
        if (k == -EAGAIN) {
            wait_readable(rx, 10);
            continue;
        }
        ASSERT_GT(k, 0);
        for (int j = 0; j < k; j++) {
            EXPECT_EQ(d[j].len, 0u);
            EXPECT_EQ(d[j].from.sin_addr.s_addr, htonl(guest_ip(1)));
            EXPECT_EQ(zc_rx_release(rx, d[j].data), 0);
        }
        got += k;
    }
    EXPECT_EQ(got, sent);
    zc_rxd d{};
    EXPECT_EQ(zc_recv(victim, &d, 1), -EAGAIN);
    // zc-stackd never wrote into the application's buffer.
    std::memset(head, 0x77, uapi::headroom);
    ASSERT_EQ(zc_send(tx, buf, 0, &to, 0, 999), ZC_SENT_ZEROCOPY);
    zc_completion c{};
    ASSERT_EQ(reap(tx, &c, 1), 1);
    for (size_t i = 0; i < uapi::headroom; i++) ASSERT_EQ(head[i], 0x77) << i;
    zc_close(tx);
    zc_close(rx);
    zc_close(victim);
    expect_traffic(*rig, 7107);
}

// ---- limits ------------------------------------------------------------------

namespace {
class HostileLimits : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        rig = new uapi_rig(true, [](stackd::options& o) {
            o.max_sockets = 12;
            o.max_sockets_per_app = 6;
            o.max_pool_pages_per_app = 160;
            o.setup_timeout_ms = 400;
        });
    }
    static void TearDownTestSuite() {
        delete rig;
        rig = nullptr;
    }
    void SetUp() override { ASSERT_TRUE(rig && rig->ok()); }
    static uapi_rig* rig;
};
uapi_rig* HostileLimits::rig = nullptr;
} // namespace

TEST_F(HostileLimits, ConnectionsHeldIdleAreDroppedAfterTheSetupTimeout) {
    const uint64_t before = rig->g[1].svc->stats().setup_timeouts;
    // Every slot of the service taken by connections that never open a socket.
    std::vector<raw_sock> idle(12);
    for (auto& h : idle) ASSERT_TRUE(h.connect(rig->g[1].sock));
    // Each is closed by the service once its time is up.
    for (auto& h : idle) {
        pollfd p{h.ctl, POLLIN, 0};
        ASSERT_EQ(::poll(&p, 1, 5000), 1);
        char c;
        EXPECT_EQ(::recv(h.ctl, &c, 1, MSG_DONTWAIT), 0); // EOF
    }
    for (int i = 0; i < 100 && rig->g[1].svc->stats().setup_timeouts < before + 12; i++) ::usleep(10000);
    EXPECT_EQ(rig->g[1].svc->stats().setup_timeouts, before + 12);
    expect_traffic(*rig, 7201);
}

TEST_F(HostileLimits, PerApplicationSocketsAndPoolPagesAreEmfileAndEnomem) {
    const uint64_t before = rig->g[1].svc->stats().app_limits;
    // 16 + 16 buffers are 16 pages: six sockets are 96 of the 160 pages.
    std::vector<int> s;
    for (int i = 0; i < 6; i++) {
        int k = rig->open(1, ZC_SOCK_STRICT, 16, 16);
        ASSERT_GE(k, 0) << i << ": " << std::strerror(-k);
        s.push_back(k);
    }
    EXPECT_EQ(rig->open(1, ZC_SOCK_STRICT, 16, 16), -EMFILE);
    // Another application of the same guest is not affected.
    const int sig = child_signal([&] {
        int k = rig->open(1, ZC_SOCK_STRICT, 16, 16);
        if (k < 0) ::_exit(1);
        ::raise(SIGUSR1); // opened: say so
    });
    EXPECT_EQ(sig, SIGUSR1);
    zc_close(s.back());
    s.pop_back();
    // Five sockets: 80 pages; 128 more (128 + 128 buffers) go over 160.
    EXPECT_EQ(rig->open(1, ZC_SOCK_STRICT, 128, 128), -ENOMEM);
    int k = rig->open(1, ZC_SOCK_STRICT, 32, 32); // 32 more: 112
    EXPECT_GE(k, 0) << std::strerror(-k);
    if (k >= 0) zc_close(k);
    EXPECT_GE(rig->g[1].svc->stats().app_limits, before + 2);
    for (int x : s) zc_close(x);
    expect_traffic(*rig, 7202);
}
