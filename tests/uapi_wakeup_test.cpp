// SPDX-License-Identifier: MIT
// Wake-ups on the request/response path (docs/ARCHITECTURE.md, Threads):
// an application blocked in zc_recv_wait() is not woken for send
// completions, zc-stackd lets the backend's TX responses wait for its next
// pass while nobody waits for a completion, and every completion still
// arrives. Two guests' zc-stackd through zc-netback on the emulated host.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "uapi/busy_poll.hpp"
#include "uapi_rig.hpp"

using namespace zc;
using namespace zc::test;

namespace {

class UapiWakeup : public rig_suite {};

// Sends `len` bytes of `tag` from a pool buffer of s (to: NULL = connected),
// without waiting for the completion. The buffer is APP again after it.
int send_from_pool(int s, void* b, uint8_t tag, uint32_t len, const sockaddr_in* to, uint64_t ud) {
    std::memset(b, tag, len);
    return zc_send(s, b, len, to, 0, ud);
}

// Answers `n` requests on s: each sent back to its source from buffer b.
void echo_n(int s, int n, std::atomic<int>& errors) {
    void* b = nullptr;
    if (zc_buf_alloc(s, &b) != 0) {
        errors++;
        return;
    }
    for (int i = 0; i < n; i++) {
        zc_rxd d{};
        if (zc_recv_wait(s, &d, 1, 5000) != 1) {
            errors++;
            return;
        }
        const uint8_t tag = static_cast<const uint8_t*>(d.data)[0];
        const sockaddr_in from = d.from;
        const uint32_t len = d.len;
        (void)zc_rx_release(s, d.data);
        // The previous answer's completion first: the buffer is reused.
        if (i > 0) {
            zc_completion c{};
            if (reap(s, &c, 1) != 1 || c.res != int32_t(len)) errors++;
        }
        if (send_from_pool(s, b, tag, len, &from, uint64_t(i)) != ZC_SENT_ZEROCOPY) errors++;
    }
    zc_completion c{};
    if (reap(s, &c, 1) != 1) errors++;
    (void)zc_buf_free(s, b);
}

} // namespace

// A send whose sender then waits for datagrams only: zc-stackd may leave
// the TX response to its next pass. When the wait ends (here by its
// timeout) with the send still out, the completion must come anyway (at
// once by libzcnet's kick, else at the service's periodic pass).
TEST_F(UapiWakeup, CompletionArrivesAfterADatagramOnlyWait) {
    pair p(*rig, 7401);
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(send_from_pool(p.tx, b, uint8_t('a' + i), 48, nullptr, uint64_t(i)), ZC_SENT_ZEROCOPY);
        zc_rxd d[2];
        EXPECT_EQ(zc_recv_wait(p.tx, d, 2, 50), -EAGAIN); // nothing comes back
        zc_completion c{};
        ASSERT_EQ(reap(p.tx, &c, 1, 2000), 1) << "send " << i << ": no completion after the wait";
        EXPECT_EQ(c.user_data, uint64_t(i));
        EXPECT_EQ(c.res, 48);
        ASSERT_EQ(zc_recv_wait(p.rx, d, 1, 5000), 1);
        EXPECT_EQ(static_cast<const uint8_t*>(d[0].data)[0], uint8_t('a' + i));
        EXPECT_EQ(zc_rx_release(p.rx, d[0].data), 0);
    }
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
}

// Request/response with one request outstanding, each side blocked in
// zc_recv_wait between datagrams: every answer matches, every completion
// arrives, and zc-stackd wakes each application about once per datagram,
// not once more per completion.
TEST_F(UapiWakeup, RequestResponseWakesOncePerDatagram) {
    pair p(*rig, 7402);
    constexpr int rounds = 300;
    const stackd::counters c1 = rig->g[1].svc->stats(), c2 = rig->g[2].svc->stats();
    std::atomic<int> server_errors{0};
    std::thread server([&] { echo_n(p.rx, rounds, server_errors); });
    void* b = nullptr;
    ASSERT_EQ(zc_buf_alloc(p.tx, &b), 0);
    int answered = 0;
    for (int i = 0; i < rounds; i++) {
        if (i > 0) {
            zc_completion c{};
            ASSERT_EQ(reap(p.tx, &c, 1), 1) << "request " << i - 1 << " never completed";
            EXPECT_EQ(c.user_data, uint64_t(i - 1));
        }
        const uint8_t tag = uint8_t(i);
        ASSERT_EQ(send_from_pool(p.tx, b, tag, 32, nullptr, uint64_t(i)), ZC_SENT_ZEROCOPY);
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(p.tx, &d, 1, 5000), 1) << "no answer to request " << i;
        EXPECT_EQ(d.len, 32u);
        answered += static_cast<const uint8_t*>(d.data)[0] == tag;
        EXPECT_EQ(zc_rx_release(p.tx, d.data), 0);
    }
    zc_completion c{};
    EXPECT_EQ(reap(p.tx, &c, 1), 1);
    server.join();
    EXPECT_EQ(server_errors.load(), 0);
    EXPECT_EQ(answered, rounds);
    EXPECT_EQ(zc_buf_free(p.tx, b), 0);
    const stackd::counters e1 = rig->g[1].svc->stats(), e2 = rig->g[2].svc->stats();
    const uint64_t wakes = (e1.app_wakes - c1.app_wakes) + (e2.app_wakes - c2.app_wakes);
    // One datagram per round trip for each side; a wake-up per completion
    // as well would be 4 per round trip. Some completions may still come
    // alone (a response before the application is back in its wait).
    EXPECT_GE(wakes, uint64_t(2 * rounds));
    EXPECT_LT(wakes, uint64_t(3 * rounds)) << "applications are woken for completions";
}

// Busy polling (ZC_SOCK_BUSY_POLL, zc-stackd --busy-poll-us): the same
// request/response with every part allowed to spin before sleeping; every
// answer and completion still arrives (a spin that saw work must not lose
// the wake-up that comes with it, one that gives up must still sleep).
TEST(UapiBusyPoll, RequestResponseWithSpinningServicesAndSockets) {
    uapi_rig r(true, [](stackd::options& o) { o.busy_poll_us = 50; });
    ASSERT_TRUE(r.ok());
    int cli = r.open(1, ZC_SOCK_STRICT | ZC_SOCK_BUSY_POLL), srv = r.open(2, ZC_SOCK_STRICT | ZC_SOCK_BUSY_POLL);
    ASSERT_GE(cli, 0);
    ASSERT_GE(srv, 0);
    sockaddr_in b = addr_of(0, 7403), to = addr_of(guest_ip(2), 7403);
    ASSERT_EQ(zc_bind(srv, &b), 0);
    ASSERT_EQ(zc_connect(cli, &to), 0);
    constexpr int rounds = 300;
    std::atomic<int> server_errors{0};
    std::thread server([&] { echo_n(srv, rounds, server_errors); });
    void* buf = nullptr;
    ASSERT_EQ(zc_buf_alloc(cli, &buf), 0);
    int answered = 0;
    for (int i = 0; i < rounds; i++) {
        if (i > 0) {
            zc_completion c{};
            ASSERT_EQ(reap(cli, &c, 1), 1) << "request " << i - 1 << " never completed";
        }
        ASSERT_EQ(send_from_pool(cli, buf, uint8_t(i), 32, nullptr, uint64_t(i)), ZC_SENT_ZEROCOPY);
        zc_rxd d{};
        ASSERT_EQ(zc_recv_wait(cli, &d, 1, 5000), 1) << "no answer to request " << i;
        answered += static_cast<const uint8_t*>(d.data)[0] == uint8_t(i);
        EXPECT_EQ(zc_rx_release(cli, d.data), 0);
    }
    zc_completion c{};
    EXPECT_EQ(reap(cli, &c, 1), 1);
    server.join();
    EXPECT_EQ(server_errors.load(), 0);
    EXPECT_EQ(answered, rounds);
    // A wait that times out still times out.
    zc_rxd d{};
    EXPECT_EQ(zc_recv_wait(cli, &d, 1, 20), -EAGAIN);
    EXPECT_EQ(zc_buf_free(cli, buf), 0);
    zc_close(cli);
    zc_close(srv);
}

// The spin itself: no budget, no spin (the default: nothing ever busy-
// polls); with one, it returns as soon as there is work, and it never
// spins past its budget. Bits beyond ZC_SOCK_FLAGS_ALL are still refused,
// and zc-stackd refuses a budget over 1000 us.
TEST(UapiBusyPoll, SpinsOnlyWithABudgetAndNeverPastIt) {
    int calls = 0;
    uapi::busy_poll off;
    EXPECT_FALSE(off.spin([&] { return ++calls > 0; }));
    EXPECT_EQ(calls, 0);
    uapi::busy_poll on(200);
    calls = 0;
    const bool got = on.spin([&] { return ++calls == 3; });
    // It stops at the first look that finds work; with no CPU idle it may
    // end before the third look.
    if (got) {
        EXPECT_EQ(calls, 3);
    } else {
        EXPECT_LT(calls, 3);
    }
    calls = 0;
    EXPECT_FALSE(on.spin([&] { return ++calls < 0; })); // never ready: ends (budget or busy CPUs)
    EXPECT_GE(calls, 1);
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.flags = ZC_SOCK_FLAGS_ALL << 1;
    o.service = "/nonexistent";
    EXPECT_EQ(zc_socket(&o), -EINVAL);
    uapi_rig r;
    ASSERT_TRUE(r.ok());
    stackd::options so;
    so.listen = r.host.dir() + "/bp.sock";
    so.ip = guest_ip(1);
    so.busy_poll_us = 1001;
    std::string why;
    auto svc = stackd::service::create(*r.g[1].port, so, &why);
    ASSERT_FALSE(svc);
    EXPECT_EQ(svc.error(), -EINVAL);
    EXPECT_NE(why.find("--busy-poll-us"), std::string::npos) << why;
}
