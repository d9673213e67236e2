// SPDX-License-Identifier: MIT
// zc-perf: an iperf-like UDP throughput, packet-rate and latency tool
// written against the zc socket API (zc.h) only.
//
//   zc-perf -s [--port P] [--once]                     server
//   zc-perf -c IP [--port P] [--size N] [--time S] [--mode strict|fallback]
//           [--verify] [--rtt N] [--window N] [--json]  client
//
// The client sends datagrams for --time seconds (each carries a header with
// a session id and sequence number; with --verify the whole payload is a
// pattern derived from them, which the server checks byte for byte), then
// measures --rtt round trips of small datagrams the server echoes, then asks
// the server for what it received. strict: every datagram is written into a
// pool buffer and sent without a copy. fallback: written into ordinary
// memory and sent on a ZC_SOCK_COPY_FALLBACK socket (the library copies and
// counts it).
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
#include "zc_perf_wire.h"

namespace {

// The wire format, shared with the lab's kernel-socket peer (zc_perf_wire.h).
enum : uint32_t { t_data = ZCPF_DATA, t_ping = ZCPF_PING, t_pong = ZCPF_PONG, t_fin = ZCPF_FIN, t_report = ZCPF_REPORT };
constexpr uint32_t magic = ZCPF_MAGIC;
using hdr = zcpf_hdr;
static_assert(sizeof(hdr) == 32);
using report = zcpf_report;

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

void pattern(uint8_t* p, size_t len, uint32_t session, uint64_t seq) { zcpf_pattern(p, len, session, seq); }
bool pattern_ok(const uint8_t* p, size_t len, uint32_t session, uint64_t seq) {
    return zcpf_pattern_ok(p, len, session, seq) != 0;
}

struct args {
    bool server = false;
    std::string host;
    uint16_t port = 5201;
    size_t size = 1472;
    double seconds = 2;
    bool fallback = false;
    bool verify = false;
    bool json = false;
    bool once = false;
    uint32_t rtt = 1000;
    uint32_t window = 128;
    const char* service = nullptr;
};

int usage() {
    std::fputs("usage: zc-perf -s [--port P] [--once] [--service PATH]\n"
               "       zc-perf -c IP [--port P] [--size 32..1472] [--time S] [--mode strict|fallback]\n"
               "               [--verify] [--rtt N] [--window N] [--json] [--service PATH]\n",
               stderr);
    return 2;
}

int open_sock(const args& a, uint32_t flags) {
    zc_socket_opts o{};
    o.sz = sizeof o;
    o.flags = flags;
    o.tx_bufs = 512;
    o.rx_bufs = 1024;
    o.ring_entries = 1024;
    o.service = a.service;
    int s = zc_socket(&o);
    if (s < 0) std::fprintf(stderr, "zc-perf: zc_socket: %s: %s\n", zc_service_path(a.service), std::strerror(-s));
    return s;
}

bool wait_in(int s, int ms) {
    pollfd p{s, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

// Send one small control datagram from a pool buffer and wait for its completion.
int send_ctl(int s, const void* data, size_t len, const sockaddr_in* to) {
    void* b = nullptr;
    int rc = zc_buf_alloc(s, &b);
    for (int i = 0; rc == -ENOBUFS && i < 1000; i++) {
        zc_completion c[64];
        zc_completions(s, c, 64);
        wait_in(s, 1);
        rc = zc_buf_alloc(s, &b);
    }
    if (rc < 0) return rc;
    std::memcpy(b, data, len);
    for (int i = 0; i < 1000; i++) {
        rc = zc_send(s, b, len, to, 0, ~0ull);
        if (rc != -EAGAIN) break;
        wait_in(s, 1);
    }
    if (rc < 0) {
        zc_buf_free(s, b);
        return rc;
    }
    for (int i = 0; i < 5000; i++) {
        zc_completion c[64];
        int n = zc_completions(s, c, 64);
        for (int k = 0; k < n; k++)
            if (c[k].user_data == ~0ull) {
                zc_buf_free(s, b);
                return c[k].res < 0 ? c[k].res : 0;
            }
        wait_in(s, 1);
    }
    return -ETIMEDOUT;
}

// ---- server ----------------------------------------------------------------------

int run_server(const args& a) {
    int s = open_sock(a, ZC_SOCK_STRICT);
    if (s < 0) return 1;
    sockaddr_in b{};
    b.sin_family = AF_INET;
    b.sin_port = htons(a.port);
    if (int rc = zc_bind(s, &b); rc < 0) {
        std::fprintf(stderr, "zc-perf: bind: %s\n", std::strerror(-rc));
        return 1;
    }
    std::fprintf(stderr, "zc-perf: server on port %u\n", a.port);
    uint32_t session = 0;
    uint64_t received = 0, bytes = 0, corrupt = 0, max_seq = 0;
    for (;;) {
        zc_rxd d[64];
        int n = zc_recv(s, d, 64);
        if (n == -EAGAIN) {
            zc_completion c[64];
            zc_completions(s, c, 64);
            wait_in(s, 100);
            continue;
        }
        if (n < 0) {
            std::fprintf(stderr, "zc-perf: recv: %s\n", std::strerror(-n));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            const uint8_t* p = static_cast<const uint8_t*>(d[i].data);
            hdr h{};
            if (d[i].len >= sizeof h) std::memcpy(&h, p, sizeof h);
            if (d[i].len < sizeof h || h.magic != magic) {
                corrupt++;
            } else if (h.type == t_data) {
                if (h.session != session) { // a new client run
                    session = h.session;
                    received = bytes = corrupt = max_seq = 0;
                }
                received++;
                bytes += d[i].len;
                max_seq = std::max(max_seq, h.seq + 1);
                if (h.pad && !pattern_ok(p, d[i].len, h.session, h.seq)) corrupt++;
            } else if (h.type == t_ping) {
                hdr r = h;
                r.type = t_pong;
                (void)send_ctl(s, &r, sizeof r, &d[i].from);
            } else if (h.type == t_fin) {
                report r{};
                r.h = h;
                r.h.type = t_report;
                if (h.session == session) {
                    r.received = received;
                    r.bytes = bytes;
                    r.corrupt = corrupt;
                    r.max_seq_plus1 = max_seq;
                }
                (void)send_ctl(s, &r, sizeof r, &d[i].from);
                if (a.once) {
                    zc_rx_release(s, d[i].data);
                    zc_close(s);
                    return 0;
                }
            }
            zc_rx_release(s, d[i].data);
        }
    }
}

// ---- client ----------------------------------------------------------------------

int run_client(const args& a) {
    int s = open_sock(a, a.fallback ? ZC_SOCK_COPY_FALLBACK : ZC_SOCK_STRICT);
    if (s < 0) return 1;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(a.port);
    if (inet_pton(AF_INET, a.host.c_str(), &to.sin_addr) != 1) return usage();
    if (int rc = zc_connect(s, &to); rc < 0) {
        std::fprintf(stderr, "zc-perf: connect: %s\n", std::strerror(-rc));
        return 1;
    }
    zc_pool_info pi{};
    pi.sz = sizeof pi;
    zc_pool_mmap(s, &pi);
    const uint32_t session = uint32_t(now_ns() ^ uint64_t(::getpid()) << 16) | 1;
    const size_t size = std::clamp<size_t>(a.size, sizeof(hdr), pi.max_payload);

    // Buffers: strict sends from pool buffers; fallback from ordinary memory.
    uint32_t window = std::min<uint32_t>(a.window, pi.tx_bufs - 8);
    std::vector<void*> free_bufs;
    std::vector<std::vector<uint8_t>> heap;
    for (uint32_t i = 0; i < window; i++) {
        if (a.fallback) {
            heap.emplace_back(size);
            free_bufs.push_back(heap.back().data());
        } else {
            void* b = nullptr;
            if (zc_buf_alloc(s, &b) < 0) break;
            free_bufs.push_back(b);
        }
    }
    std::vector<void*> by_id(free_bufs); // user_data = index
    std::vector<uint32_t> free_ids;
    for (uint32_t i = 0; i < by_id.size(); i++) free_ids.push_back(i);
    for (void* b : by_id) pattern(static_cast<uint8_t*>(b), size, session, 0);

    uint64_t seq = 0, sent = 0, send_err = 0, copied = 0;
    const uint64_t t0 = now_ns(), until = t0 + uint64_t(a.seconds * 1e9);
    zc_completion c[256];
    zc_iov v[32];
    for (;;) {
        uint64_t t = now_ns();
        if (t >= until) break;
        int n = zc_completions(s, c, 256);
        for (int k = 0; k < n; k++) {
            if (c[k].res < 0) send_err++;
            if (c[k].user_data < by_id.size()) free_ids.push_back(uint32_t(c[k].user_data));
        }
        if (free_ids.empty()) {
            wait_in(s, 5);
            continue;
        }
        unsigned batch = unsigned(std::min<size_t>(free_ids.size(), 32));
        for (unsigned k = 0; k < batch; k++) {
            uint32_t id = free_ids[free_ids.size() - 1 - k];
            uint8_t* p = static_cast<uint8_t*>(by_id[id]);
            if (a.verify) pattern(p, size, session, seq + k);
            hdr h{magic, t_data, session, a.verify ? 1u : 0u, seq + k, t};
            std::memcpy(p, &h, sizeof h);
            v[k] = zc_iov{p, uint32_t(size), 0, id};
        }
        unsigned nc = 0;
        int rc = zc_sendv(s, v, batch, nullptr, 0, &nc);
        if (rc == -EAGAIN) {
            wait_in(s, 1);
            continue;
        }
        if (rc < 0) {
            std::fprintf(stderr, "zc-perf: send: %s\n", std::strerror(-rc));
            return 1;
        }
        copied += nc;
        if (a.fallback) { // copied: the memory is ours again at once; the completion is only a count
            seq += unsigned(rc);
            sent += unsigned(rc);
            continue;
        }
        free_ids.resize(free_ids.size() - unsigned(rc));
        seq += unsigned(rc);
        sent += unsigned(rc);
    }
    const uint64_t t1 = now_ns();
    // Drain completions.
    for (int i = 0; i < 2000; i++) {
        zc_stats st{};
        st.sz = sizeof st;
        zc_socket_stats(s, &st);
        if (st.completions >= st.zc_sends + st.copied_sends) break;
        int n = zc_completions(s, c, 256);
        for (int k = 0; k < n; k++)
            if (c[k].res < 0) send_err++;
        if (n <= 0) wait_in(s, 1);
    }

    // Latency: ping-pong.
    std::vector<double> rtts;
    rtts.reserve(a.rtt);
    for (uint32_t i = 0; i < a.rtt; i++) {
        hdr h{magic, t_ping, session, 0, i, now_ns()};
        if (send_ctl(s, &h, sizeof h, nullptr) < 0) break;
        bool got = false;
        for (int w = 0; w < 1000 && !got; w++) {
            zc_rxd d[8];
            int n = zc_recv(s, d, 8);
            for (int k = 0; k < n; k++) {
                hdr r{};
                if (d[k].len >= sizeof r) std::memcpy(&r, d[k].data, sizeof r);
                if (r.magic == magic && r.type == t_pong && r.session == session && r.seq == i) {
                    rtts.push_back(double(now_ns() - r.t_ns) / 1000.0);
                    got = true;
                }
                zc_rx_release(s, d[k].data);
            }
            if (!got) wait_in(s, 1);
        }
    }
    std::sort(rtts.begin(), rtts.end());
    auto pct = [&](double q) { return rtts.empty() ? 0.0 : rtts[std::min(rtts.size() - 1, size_t(q * double(rtts.size())))]; };

    // What did the server see?
    report rep{};
    bool have_report = false;
    for (int attempt = 0; attempt < 5 && !have_report; attempt++) {
        hdr h{magic, t_fin, session, 0, 0, now_ns()};
        if (send_ctl(s, &h, sizeof h, nullptr) < 0) continue;
        for (int w = 0; w < 1000 && !have_report; w++) {
            zc_rxd d[8];
            int n = zc_recv(s, d, 8);
            for (int k = 0; k < n; k++) {
                report r{};
                if (d[k].len >= sizeof r) std::memcpy(&r, d[k].data, sizeof r);
                if (r.h.magic == magic && r.h.type == t_report && r.h.session == session) {
                    rep = r;
                    have_report = true;
                }
                zc_rx_release(s, d[k].data);
            }
            if (!have_report) wait_in(s, 1);
        }
    }
    zc_stats st{};
    st.sz = sizeof st;
    zc_socket_stats(s, &st);
    double secs = double(t1 - t0) / 1e9;
    double gbps = double(sent) * double(size) * 8 / secs / 1e9;
    double mpps = double(sent) / secs / 1e6;
    double rx_gbps = double(rep.bytes) * 8 / secs / 1e9;
    uint64_t lost = rep.max_seq_plus1 > rep.received ? rep.max_seq_plus1 - rep.received : 0;
    if (a.json) {
        std::printf("{\"tool\":\"zc-perf\",\"mode\":\"%s\",\"size\":%zu,\"seconds\":%.3f,\"verify\":%s,"
                    "\"sent\":%" PRIu64 ",\"send_errors\":%" PRIu64 ",\"copied\":%" PRIu64 ","
                    "\"tx_gbps\":%.4f,\"tx_mpps\":%.5f,"
                    "\"server\":{\"report\":%s,\"received\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"corrupt\":%" PRIu64
                    ",\"lost\":%" PRIu64 ",\"rx_gbps\":%.4f},"
                    "\"latency_us\":{\"samples\":%zu,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
                    "\"stats\":{\"zc_sends\":%" PRIu64 ",\"copied_sends\":%" PRIu64 ",\"completions\":%" PRIu64
                    ",\"send_errors\":%" PRIu64 ",\"rx_packets\":%" PRIu64 ",\"rx_drops\":%" PRIu64 "}}\n",
                    a.fallback ? "fallback" : "strict", size, secs, a.verify ? "true" : "false", sent, send_err,
                    copied, gbps, mpps, have_report ? "true" : "false", rep.received, rep.bytes, rep.corrupt,
                    lost, rx_gbps, rtts.size(), pct(0.5), pct(0.99), rtts.empty() ? 0.0 : rtts.back(),
                    st.zc_sends, st.copied_sends, st.completions, st.send_errors, st.rx_packets, st.rx_drops);
    } else {
        std::printf("zc-perf %s, %zu-byte datagrams, %.2f s%s\n", a.fallback ? "fallback" : "strict", size, secs,
                    a.verify ? ", payload verified" : "");
        std::printf("  sent      %" PRIu64 " (%.3f Gbit/s, %.4f Mpps), %" PRIu64 " copied, %" PRIu64 " errors\n",
                    sent, gbps, mpps, copied, send_err);
        if (have_report)
            std::printf("  received  %" PRIu64 " (%.3f Gbit/s), %" PRIu64 " lost, %" PRIu64 " corrupt\n",
                        rep.received, rx_gbps, lost, rep.corrupt);
        else
            std::printf("  received  (no report from the server)\n");
        std::printf("  latency   p50 %.1f us, p99 %.1f us (%zu round trips)\n", pct(0.5), pct(0.99), rtts.size());
    }
    zc_close(s);
    if (!have_report || rep.corrupt) return 3;
    return 0;
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
        else if (k == "--mode" && (x = v())) a.fallback = !std::strcmp(x, "fallback");
        else if (k == "--verify") a.verify = true;
        else if (k == "--json") a.json = true;
        else if (k == "--once") a.once = true;
        else if (k == "--rtt" && (x = v())) a.rtt = uint32_t(std::atol(x));
        else if (k == "--window" && (x = v())) a.window = uint32_t(std::atol(x));
        else if (k == "--service" && (x = v())) a.service = x;
        else return usage();
    }
    if (a.server == client) return usage();
    return a.server ? run_server(a) : run_client(a);
}
