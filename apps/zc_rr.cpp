// SPDX-License-Identifier: MIT
// zc-rr: UDP request/response (one request outstanding), as a key-value
// client and server do, written against the zc socket API (zc.h) only.
//
//   zc-rr -s [--port P] [--service PATH] [--busy-poll]            echo server
//   zc-rr -c IP [--port P] [--size N] [--time S] [--json] [--service PATH] [--busy-poll]
//
// --busy-poll: the socket is opened with ZC_SOCK_BUSY_POLL (zc.h; budget
// $ZCNET_BUSY_POLL_US).
//
// The client sends a request of --size payload bytes (a header with a
// session id and sequence number, then a pattern derived from
// them), blocks in zc_recv_wait() for the answer, checks it byte for byte,
// and sends the next; for --time seconds. A request with no answer within
// 1 s is counted lost. It prints round-trip percentiles (p50, p99, p99.9).
// The server blocks in zc_recv_wait() and sends every request back to its
// source from a pool buffer. Neither waits for a send completion before
// the next datagram: completions are reaped without blocking when a send
// buffer is needed again.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include "zc.h"

namespace {

constexpr uint32_t magic = 0x7a637272; // "zcrr"
constexpr size_t max_payload = 1472;   // one datagram per standard Ethernet frame

struct hdr {
    uint32_t magic, session;
    uint64_t seq;
};
static_assert(sizeof(hdr) == 16);

struct args {
    bool server = false;
    std::string host;
    uint16_t port = 5202;
    size_t size = 22; // a 64-byte Ethernet frame
    double seconds = 1;
    bool json = false;
    const char* service = nullptr;
    bool busy_poll = false;
};

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

void fill(uint8_t* p, size_t len, uint64_t seq) {
    for (size_t i = sizeof(hdr); i < len; i++) p[i] = uint8_t(seq * 7 + i);
}

bool intact(const uint8_t* p, size_t len, uint64_t seq) {
    for (size_t i = sizeof(hdr); i < len; i++)
        if (p[i] != uint8_t(seq * 7 + i)) return false;
    return true;
}

int usage() {
    std::fputs("usage: zc-rr -s [--port P] [--service PATH] [--busy-poll]\n"
               "       zc-rr -c IP [--port P] [--size 16..1472] [--time S] [--json] [--service PATH] [--busy-poll]\n",
               stderr);
    return 2;
}

// Send buffers cycle through a small ring; a send reaps completions first
// (never blocks) and takes the next buffer the stack has handed back.
struct tx_bufs {
    int s = -1;
    std::vector<void*> bufs;
    std::vector<bool> busy;

    int init(int sock, unsigned n) {
        s = sock;
        for (unsigned i = 0; i < n; i++) {
            void* b = nullptr;
            if (int rc = zc_buf_alloc(s, &b); rc < 0) return rc;
            bufs.push_back(b);
            busy.push_back(false);
        }
        return 0;
    }
    // One call takes what is there (a second would only find the ring
    // empty, at the cost of a system call to settle the descriptor).
    void reap() {
        zc_completion c[16];
        int n = zc_completions(s, c, 16);
        for (int k = 0; k < n; k++)
            if (c[k].user_data < busy.size()) busy[c[k].user_data] = false;
    }
    // Sends `len` bytes of `src` to `to` (NULL: connected). Waits (poll, 1 ms
    // steps) only when every buffer is still with the stack.
    int send(const void* src, size_t len, const sockaddr_in* to) {
        for (int tries = 0; tries < 1000; tries++) {
            reap();
            for (size_t i = 0; i < bufs.size(); i++) {
                if (busy[i]) continue;
                std::memcpy(bufs[i], src, len);
                int rc = zc_send(s, bufs[i], len, to, 0, i);
                if (rc == -EAGAIN) break;
                if (rc < 0) return rc;
                busy[i] = true;
                return 0;
            }
            pollfd p{s, POLLIN, 0};
            ::poll(&p, 1, 1);
        }
        return -ETIMEDOUT;
    }
};

int open_sock(const args& a) {
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.flags = ZC_SOCK_STRICT | (a.busy_poll ? ZC_SOCK_BUSY_POLL : 0u);
    o.tx_bufs = 16;
    o.rx_bufs = 64;
    o.ring_entries = 64;
    o.service = a.service;
    int s = zc_socket(&o);
    if (s < 0) std::fprintf(stderr, "zc-rr: zc_socket: %s: %s\n", zc_service_path(a.service), std::strerror(-s));
    return s;
}

int run_server(const args& a) {
    int s = open_sock(a);
    if (s < 0) return 1;
    sockaddr_in b{};
    b.sin_family = AF_INET;
    b.sin_port = htons(a.port);
    if (int rc = zc_bind(s, &b); rc < 0) {
        std::fprintf(stderr, "zc-rr: bind: %s\n", std::strerror(-rc));
        return 1;
    }
    tx_bufs tx;
    if (int rc = tx.init(s, 8); rc < 0) {
        std::fprintf(stderr, "zc-rr: buffers: %s\n", std::strerror(-rc));
        return 1;
    }
    std::fprintf(stderr, "zc-rr: server on port %u\n", a.port);
    for (;;) {
        zc_rxd d[16];
        int n = zc_recv_wait(s, d, 16, -1);
        if (n == -EINTR || n == -EAGAIN) continue;
        if (n < 0) {
            std::fprintf(stderr, "zc-rr: recv: %s\n", std::strerror(-n));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (d[i].len <= max_payload) (void)tx.send(d[i].data, d[i].len, &d[i].from);
            zc_rx_release(s, d[i].data);
        }
    }
}

int run_client(const args& a) {
    int s = open_sock(a);
    if (s < 0) return 1;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(a.port);
    if (inet_pton(AF_INET, a.host.c_str(), &to.sin_addr) != 1) return usage();
    if (int rc = zc_connect(s, &to); rc < 0) {
        std::fprintf(stderr, "zc-rr: connect: %s\n", std::strerror(-rc));
        return 1;
    }
    tx_bufs tx;
    if (int rc = tx.init(s, 8); rc < 0) {
        std::fprintf(stderr, "zc-rr: buffers: %s\n", std::strerror(-rc));
        return 1;
    }
    const size_t size = std::clamp(a.size, sizeof(hdr), max_payload);
    const uint32_t session = uint32_t(now_ns() ^ uint64_t(::getpid()) << 16) | 1;
    uint8_t req[max_payload];
    std::vector<double> rtts;
    uint64_t lost = 0, bad = 0, stale = 0;
    const uint64_t t0 = now_ns(), until = t0 + uint64_t(a.seconds * 1e9);
    for (uint64_t seq = 0; now_ns() < until; seq++) {
        const uint64_t t = now_ns();
        hdr h{magic, session, seq};
        std::memcpy(req, &h, sizeof h);
        fill(req, size, seq);
        if (int rc = tx.send(req, size, nullptr); rc < 0) {
            std::fprintf(stderr, "zc-rr: send: %s\n", std::strerror(-rc));
            return 1;
        }
        bool got = false;
        while (!got) {
            const int64_t left_ms = (int64_t(t + 1'000'000'000) - int64_t(now_ns())) / 1'000'000;
            if (left_ms < 0) break;
            zc_rxd d[8];
            int n = zc_recv_wait(s, d, 8, int(left_ms));
            if (n == -EAGAIN || n == -EINTR) continue;
            if (n < 0) {
                std::fprintf(stderr, "zc-rr: recv: %s\n", std::strerror(-n));
                return 1;
            }
            const uint64_t t1 = now_ns();
            for (int k = 0; k < n; k++) {
                hdr r{};
                if (d[k].len >= sizeof r) std::memcpy(&r, d[k].data, sizeof r);
                if (r.magic == magic && r.session == session && r.seq == seq) {
                    got = true;
                    if (d[k].len != size || !intact(static_cast<const uint8_t*>(d[k].data), size, seq)) bad++;
                    else rtts.push_back(double(t1 - t) / 1000.0);
                } else {
                    stale++; // an answer that came after its 1 s
                }
                zc_rx_release(s, d[k].data);
            }
        }
        if (!got) lost++;
    }
    const double secs = double(now_ns() - t0) / 1e9;
    std::sort(rtts.begin(), rtts.end());
    auto pct = [&](double q) {
        return rtts.empty() ? 0.0 : rtts[std::min(rtts.size() - 1, size_t(q * double(rtts.size())))];
    };
    if (a.json)
        std::printf("{\"tool\":\"zc-rr\",\"size\":%zu,\"seconds\":%.3f,\"samples\":%zu,\"lost\":%" PRIu64
                    ",\"bad\":%" PRIu64 ",\"stale\":%" PRIu64 ",\"p50\":%.2f,\"p99\":%.2f,\"p999\":%.2f}\n",
                    size, secs, rtts.size(), lost, bad, stale, pct(0.5), pct(0.99), pct(0.999));
    else
        std::printf("zc-rr %zu-byte requests, %.2f s: %zu round trips (%.0f/s), %" PRIu64 " lost, %" PRIu64
                    " bad\n  rtt p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n",
                    size, secs, rtts.size(), double(rtts.size()) / secs, lost, bad, pct(0.5), pct(0.99),
                    pct(0.999));
    zc_close(s);
    return rtts.empty() || bad ? 3 : 0;
}

} // namespace

int main(int argc, char** argv) {
    args a;
    bool client = false;
    for (int i = 1; i < argc; i++) {
        std::string k = argv[i];
        auto v = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        const char* x = nullptr;
        if (k == "-s") a.server = true;
        else if (k == "-c" && (x = v())) client = true, a.host = x;
        else if (k == "--port" && (x = v())) a.port = uint16_t(std::atoi(x));
        else if (k == "--size" && (x = v())) a.size = size_t(std::atol(x));
        else if (k == "--time" && (x = v())) a.seconds = std::atof(x);
        else if (k == "--json") a.json = true;
        else if (k == "--busy-poll") a.busy_poll = true;
        else if (k == "--service" && (x = v())) a.service = x;
        else return usage();
    }
    if (a.server == client) return usage();
    return a.server ? run_server(a) : run_client(a);
}
