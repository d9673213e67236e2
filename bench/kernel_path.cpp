// SPDX-License-Identifier: MIT
// Kernel path baseline: see kernel_path.hpp for what is measured and how.
//
// Structure: the parent creates the namespace pair (kernel_netns.cpp), opens
// both /run/netns files, allocates every buffer
// the children will need, then forks the receiver, waits for its "ready"
// report, forks the sender, and collects a fixed-size report from each over a
// pipe plus its rusage from wait4. The children only make system calls and
// touch memory allocated before fork: the runner that calls us may have
// threads, and after fork only async-signal-safe work is safe there.
#include "bench/kernel_path_impl.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstring>

#include "common/clock.hpp"
#include "common/log.hpp"

namespace zc::bench {
namespace detail {

// ---------------------------------------------------------------------------
// Children

void send_report(int fd, report& r, uint32_t phase) noexcept {
    r.phase = phase;
    ssize_t n;
    do n = write(fd, &r, sizeof r); while (n < 0 && errno == EINTR);
}

[[noreturn]] void child_fail(int fd, report& r, const char* what) noexcept {
    r.err = -(errno ? errno : EIO);
    snprintf(r.what, sizeof r.what, "%s: %s", what, strerror(-r.err));
    send_report(fd, r, 2);
    _exit(1);
}

void child_enter(int ns_fd, pid_t parent, int report_fd, report& r) noexcept {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    default_signals();
    if (setns(ns_fd, CLONE_NEWNET) < 0) child_fail(report_fd, r, "setns");
}

sockaddr_in make_addr(const std::string& ip, uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    return sa;
}

void set_rcvtimeo(int s, int ms) noexcept {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

void set_rcvbuf(int s, int bytes) noexcept {
    // Root may exceed rmem_max; the larger buffer absorbs scheduling hiccups
    // on a 2-core machine, so drops measure throughput rather than jitter.
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

[[noreturn]] void udp_receiver(int ns_fd, pid_t parent, int wfd, sockaddr_in self, size_t payload,
                               int64_t hard_deadline_ns, buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(wfd, r, "socket");
    set_rcvbuf(s, 8 << 20);
    set_rcvtimeo(s, 100);
    if (bind(s, reinterpret_cast<sockaddr*>(&self), sizeof self) < 0) child_fail(wfd, r, "bind");
    for (int i = 0; i < batch; ++i) {
        b.iovs[i] = {b.rx.data() + size_t(i) * rx_slot, rx_slot};
        b.msgs[i] = {};
        b.msgs[i].msg_hdr.msg_iov = &b.iovs[i];
        b.msgs[i].msg_hdr.msg_iovlen = 1;
    }
    send_report(wfd, r, 1);
    uint64_t next_seq = 0;
    bool done = false;
    while (!done) {
        int n = recvmmsg(s, b.msgs.data(), batch, MSG_WAITFORONE, nullptr);
        int64_t t = mono_ns();
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) child_fail(wfd, r, "recvmmsg");
            // Every end marker lost, or the sender died: stop when idle.
            if ((r.frames && t - r.last_ns > rx_idle_ns) || t > hard_deadline_ns) break;
            continue;
        }
        for (int i = 0; i < n; ++i) {
            const uint8_t* p = static_cast<const uint8_t*>(b.iovs[i].iov_base);
            size_t len = b.msgs[i].msg_len;
            if (len < hdr_size || (b.msgs[i].msg_hdr.msg_flags & MSG_TRUNC)) {
                ++r.bad;
                continue;
            }
            uint64_t seq;
            uint32_t kind;
            memcpy(&seq, p, 8);
            memcpy(&kind, p + 8, 4);
            if (kind == tag_end) {
                done = true;
                continue;
            }
            if (kind != tag_data || len != payload ||
                memcmp(p + hdr_size, b.pattern.data() + (seq & 0xff) + hdr_size, len - hdr_size) != 0) {
                ++r.bad;
                continue;
            }
            if (!r.frames) r.first_ns = t;
            r.last_ns = t;
            ++r.frames;
            r.bytes += len;
            // Gaps are drops (counted by the parent as sent - received);
            // going backwards is reordering or duplication.
            if (seq >= next_seq) next_seq = seq + 1;
            else ++r.reordered;
        }
    }
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

[[noreturn]] void udp_sender(int ns_fd, pid_t parent, int wfd, sockaddr_in peer, size_t payload,
                             double seconds, buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(wfd, r, "socket");
    // Connected: no per-datagram route lookup, as a real sender would do.
    if (connect(s, reinterpret_cast<sockaddr*>(&peer), sizeof peer) < 0) child_fail(wfd, r, "connect");
    for (int i = 0; i < batch; ++i) {
        b.iovs[2 * i] = {b.hdrs.data() + size_t(i) * 16, hdr_size};
        b.msgs[i] = {};
        b.msgs[i].msg_hdr.msg_iov = &b.iovs[2 * i];
        b.msgs[i].msg_hdr.msg_iovlen = 2;
    }
    auto fill = [&](int i, uint64_t seq, uint32_t kind) {
        uint8_t* h = b.hdrs.data() + size_t(i) * 16;
        memcpy(h, &seq, 8);
        memcpy(h + 8, &kind, 4);
        b.iovs[2 * i + 1] = {b.pattern.data() + (seq & 0xff) + hdr_size, payload - hdr_size};
    };
    int64_t start = mono_ns();
    int64_t deadline = start + int64_t(seconds * 1e9);
    uint64_t seq = 0;
    r.first_ns = start;
    while (mono_ns() < deadline) {
        for (int i = 0; i < batch; ++i) fill(i, seq + uint64_t(i), tag_data);
        int n = sendmmsg(s, b.msgs.data(), batch, 0);
        if (n < 0) {
            // ENOBUFS: a transient device queue limit; those frames were not sent.
            if (errno == EINTR || errno == ENOBUFS) continue;
            child_fail(wfd, r, "sendmmsg");
        }
        seq += uint64_t(n);
        r.frames += uint64_t(n);
        r.bytes += uint64_t(n) * payload;
    }
    r.last_ns = mono_ns();
    // End markers, spaced out so they do not all land in a full receive queue.
    for (int k = 0; k < end_markers; ++k) {
        fill(0, seq, tag_end);
        sendmmsg(s, b.msgs.data(), 1, 0);
        timespec ts{0, 2'000'000};
        nanosleep(&ts, nullptr);
    }
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

[[noreturn]] void tcp_receiver(int ns_fd, pid_t parent, int wfd, sockaddr_in self, int64_t hard_deadline_ns,
                               buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) child_fail(wfd, r, "socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, reinterpret_cast<sockaddr*>(&self), sizeof self) < 0) child_fail(wfd, r, "bind");
    if (listen(ls, 1) < 0) child_fail(wfd, r, "listen");
    set_rcvtimeo(ls, 100);
    send_report(wfd, r, 1);
    int s = -1;
    while (s < 0) {
        s = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
        if (s < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) child_fail(wfd, r, "accept");
            if (mono_ns() > hard_deadline_ns) {
                errno = ETIMEDOUT;
                child_fail(wfd, r, "accept");
            }
        }
    }
    close(ls);
    set_rcvtimeo(s, 100);
    uint64_t off = 0;
    for (;;) {
        ssize_t n = recv(s, b.rx.data(), tcp_rx_buf, 0);
        int64_t t = mono_ns();
        if (n == 0) break; // EOF: the sender is done
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) child_fail(wfd, r, "recv");
            if ((r.bytes && t - r.last_ns > rx_idle_ns) || t > hard_deadline_ns) {
                errno = ETIMEDOUT;
                child_fail(wfd, r, "recv");
            }
            continue;
        }
        if (memcmp(b.rx.data(), b.pattern.data() + off % tcp_period, size_t(n)) != 0) ++r.bad;
        if (!r.bytes) r.first_ns = t;
        r.last_ns = t;
        off += uint64_t(n);
        r.bytes += uint64_t(n);
    }
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

[[noreturn]] void tcp_sender(int ns_fd, pid_t parent, int wfd, sockaddr_in peer, size_t bulk, double seconds,
                             buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(wfd, r, "socket");
    if (connect(s, reinterpret_cast<sockaddr*>(&peer), sizeof peer) < 0) child_fail(wfd, r, "connect");
    int64_t start = mono_ns();
    int64_t deadline = start + int64_t(seconds * 1e9);
    r.first_ns = start;
    uint64_t off = 0;
    while (mono_ns() < deadline) {
        ssize_t n = send(s, b.pattern.data() + off % tcp_period, bulk, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            child_fail(wfd, r, "send");
        }
        off += uint64_t(n);
        r.bytes += uint64_t(n);
    }
    r.frames = r.bytes / bulk;
    r.last_ns = mono_ns();
    // Stay until the receiver has read everything and closed, so the tail of
    // the transfer is charged to this run, not to whatever runs next.
    shutdown(s, SHUT_WR);
    for (;;) {
        char c;
        ssize_t n = recv(s, &c, 1, 0);
        if (n > 0 || (n < 0 && errno == EINTR)) continue;
        break;
    }
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

// Request/response: the echo side sends every datagram back to its sender.
[[noreturn]] void udp_echo(int ns_fd, pid_t parent, int wfd, sockaddr_in self, int64_t hard_deadline_ns,
                           buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(wfd, r, "socket");
    set_rcvtimeo(s, 100);
    if (bind(s, reinterpret_cast<sockaddr*>(&self), sizeof self) < 0) child_fail(wfd, r, "bind");
    send_report(wfd, r, 1);
    for (;;) {
        sockaddr_in from{};
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, b.rx.data(), rx_slot, 0, reinterpret_cast<sockaddr*>(&from), &fl);
        int64_t t = mono_ns();
        if (n < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) child_fail(wfd, r, "recvfrom");
            if ((r.frames && t - r.last_ns > rx_idle_ns) || t > hard_deadline_ns) break;
            continue;
        }
        uint32_t kind = 0;
        if (n >= ssize_t(hdr_size)) memcpy(&kind, b.rx.data() + 8, 4);
        if (kind == tag_end) break;
        sendto(s, b.rx.data(), size_t(n), 0, reinterpret_cast<sockaddr*>(&from), fl);
        r.last_ns = t;
        ++r.frames;
    }
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

// Request/response: one datagram out, wait for its echo (1 s at most),
// repeat for `seconds`; the round trips' percentiles go into the report.
[[noreturn]] void udp_ping(int ns_fd, pid_t parent, int wfd, sockaddr_in peer, size_t payload, double seconds,
                           buffers& b) noexcept {
    report r;
    child_enter(ns_fd, parent, wfd, r);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) child_fail(wfd, r, "socket");
    if (connect(s, reinterpret_cast<sockaddr*>(&peer), sizeof peer) < 0) child_fail(wfd, r, "connect");
    set_rcvtimeo(s, 1000);
    std::vector<uint8_t>& out = b.pattern; // header written over the pattern's start
    const int64_t start = mono_ns(), deadline = start + int64_t(seconds * 1e9);
    r.first_ns = start;
    size_t n = 0;
    for (uint64_t seq = 0; mono_ns() < deadline && n < b.rtt.size(); ++seq) {
        memcpy(out.data(), &seq, 8);
        memcpy(out.data() + 8, &tag_data, 4);
        const int64_t t0 = mono_ns();
        if (send(s, out.data(), payload, 0) < 0) {
            if (errno == EINTR || errno == ENOBUFS) continue;
            child_fail(wfd, r, "send");
        }
        bool got = false;
        while (!got) {
            ssize_t k = recv(s, b.rx.data(), rx_slot, 0);
            if (k < 0) {
                if (errno == EINTR) continue;
                break; // timed out: lost
            }
            uint64_t back;
            memcpy(&back, b.rx.data(), 8);
            if (k != ssize_t(payload)) ++r.bad;
            if (back == seq) got = true;
        }
        if (!got) {
            ++r.lost;
            continue;
        }
        b.rtt[n++] = mono_ns() - t0;
    }
    r.last_ns = mono_ns();
    r.frames = n;
    r.bytes = n * payload;
    auto pct = [&](double q) {
        if (!n) return int64_t(0);
        const size_t k = std::min(n - 1, size_t(q * double(n)));
        std::nth_element(b.rtt.begin(), b.rtt.begin() + long(k), b.rtt.begin() + long(n));
        return b.rtt[k];
    };
    r.p50_ns = pct(0.5);
    r.p99_ns = pct(0.99);
    r.p999_ns = pct(0.999);
    memcpy(out.data() + 8, &tag_end, 4);
    for (int k = 0; k < end_markers; ++k) send(s, out.data(), payload, 0);
    close(s);
    send_report(wfd, r, 2);
    _exit(0);
}

// ---------------------------------------------------------------------------
// Parent side

// Busy CPU seconds of the whole machine so far (all CPUs, /proc/stat), or -1.
double machine_busy_seconds() noexcept {
    FILE* f = fopen("/proc/stat", "re");
    if (!f) return -1;
    unsigned long long v[10] = {};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return -1;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user, so it is not added again.
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? double(busy) / double(hz) : -1;
}

bool read_report(int fd, report& r, int timeout_ms) noexcept {
    int64_t deadline = mono_ns() + int64_t(timeout_ms) * 1'000'000;
    size_t got = 0;
    auto* p = reinterpret_cast<uint8_t*>(&r);
    while (got < sizeof r) {
        int left = int(std::max<int64_t>(0, (deadline - mono_ns()) / 1'000'000));
        pollfd pfd{fd, POLLIN, 0};
        int rc = poll(&pfd, 1, left);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) return false;
        ssize_t n = read(fd, p + got, sizeof r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        got += size_t(n);
    }
    return true;
}

// One measurement: receiver in b, sender in a.
void measure(const netns_pair& ns, proto pr, size_t payload, double seconds, buffers& b, kernel_result& out) {
    const pid_t me = getpid();
    const int64_t hard_deadline = mono_ns() + int64_t((seconds + 20) * 1e9);
    const sockaddr_in rx_addr = make_addr(ns.addr(2), pr == proto::udp ? udp_port : tcp_port);
    child rx, tx;
    int rc = spawn(rx, [&](int wfd) {
        if (pr == proto::udp) udp_receiver(ns.fd(1), me, wfd, rx_addr, payload, hard_deadline, b);
        tcp_receiver(ns.fd(1), me, wfd, rx_addr, hard_deadline, b);
    });
    if (rc < 0) {
        out.error = std::string("fork receiver: ") + strerror(-rc);
        return;
    }
    report rr, tr;
    if (!read_report(rx.rfd, rr, 10'000) || rr.phase != 1) {
        out.error = rr.what[0] ? std::string("receiver: ") + rr.what : "receiver did not start";
        return;
    }
    const double busy0 = machine_busy_seconds();
    rc = spawn(tx, [&](int wfd) {
        if (pr == proto::udp) udp_sender(ns.fd(0), me, wfd, rx_addr, payload, seconds, b);
        tcp_sender(ns.fd(0), me, wfd, rx_addr, payload, seconds, b);
    });
    if (rc < 0) {
        out.error = std::string("fork sender: ") + strerror(-rc);
        return;
    }
    const int wait_ms = int((seconds + 15) * 1000);
    bool tx_ok = read_report(tx.rfd, tr, wait_ms);
    // A failed sender sends nothing; do not wait for the receiver's idle timeout.
    bool rx_ok = read_report(rx.rfd, rr, tx_ok && !tr.err ? 15'000 : 0);
    tx.reap(!tx_ok);
    rx.reap(!rx_ok);
    const double busy1 = machine_busy_seconds();
    if (busy0 >= 0 && busy1 >= busy0) out.machine_cpu_seconds = busy1 - busy0;
    out.cpu_tx_seconds = cpu_of(tx.ru);
    out.cpu_rx_seconds = cpu_of(rx.ru);
    out.cpu_seconds = out.cpu_tx_seconds + out.cpu_rx_seconds;
    if (!tx_ok) out.error = "sender did not report (timed out or died)";
    else if (tr.err) out.error = std::string("sender: ") + tr.what;
    else if (!rx_ok) out.error = "receiver did not report (timed out or died)";
    else if (rr.err) out.error = std::string("receiver: ") + rr.what;

    out.frames_sent = tr.frames;
    out.bytes_sent = tr.bytes;
    set_rates(out, pr, payload, rr, tr.last_ns - tr.first_ns);
}

void set_rates(kernel_result& out, proto pr, size_t payload, const report& rr, int64_t tx_window_ns) {
    out.bytes_received = rr.bytes;
    out.bad_frames = rr.bad;
    out.reordered = rr.reordered;
    if (pr == proto::udp) {
        out.frames_received = rr.frames;
        out.frames_lost = out.frames_sent > rr.frames ? out.frames_sent - rr.frames : 0;
    } else {
        out.frames_received = payload ? rr.bytes / payload : 0;
    }
    int64_t win = rr.last_ns - rr.first_ns;
    if (out.frames_received < 2 || win <= 0) win = tx_window_ns;
    out.seconds = win > 0 ? double(win) / 1e9 : 0;
    if (out.seconds > 0) {
        double wire_bytes = pr == proto::udp ? double(out.frames_received) * double(out.wire_frame)
                                             : double(out.bytes_received);
        out.gbps = wire_bytes * 8 / out.seconds / 1e9;
        out.payload_gbps = double(out.bytes_received) * 8 / out.seconds / 1e9;
        out.mpps = (pr == proto::udp ? double(out.frames_received) : double(out.bytes_received) / double(payload)) /
                   out.seconds / 1e6;
    }
    if (out.error.empty() && out.bytes_received == 0) out.error = "nothing received";
    out.integrity_ok = out.bytes_received > 0 && out.bad_frames == 0;
}

// Common checks before touching namespaces.

} // namespace detail

using namespace detail;

size_t udp_payload_for_frame(size_t frame, bool* capped) noexcept {
    if (capped) *capped = false;
    if (frame < eth_ip_udp_overhead + min_udp_payload) return 0;
    size_t p = frame - eth_ip_udp_overhead;
    if (p > max_udp_payload) {
        if (capped) *capped = true;
        p = max_udp_payload;
    }
    return p;
}

result<std::vector<kernel_result>> run_kernel_udp(const std::vector<size_t>& frame_sizes, double seconds_per_size,
                                                  std::string* why, const kernel_progress& progress) {
    std::string dummy;
    if (!why) why = &dummy;
    if (int rc = precheck(why); rc < 0) return err(rc);
    std::lock_guard lk(g_run_mutex);
    netns_pair ns;
    if (int rc = ns.setup(why); rc < 0) return err(rc);

    buffers b;
    b.pattern.resize(256 + rx_slot + 256);
    for (size_t i = 0; i < b.pattern.size(); ++i) b.pattern[i] = uint8_t(i);
    b.rx.resize(size_t(batch) * rx_slot);
    b.hdrs.resize(size_t(batch) * 16);
    b.msgs.resize(batch);
    b.iovs.resize(size_t(batch) * 2);

    std::vector<kernel_result> rows;
    for (size_t frame : frame_sizes) {
        kernel_result r;
        r.proto = "udp";
        r.frame = frame;
        r.mtu = veth_mtu;
        r.payload = udp_payload_for_frame(frame, &r.capped);
        if (r.payload == 0) {
            r.error = "frame below " + std::to_string(eth_ip_udp_overhead + min_udp_payload) + " bytes";
        } else {
            r.wire_frame = r.payload + eth_ip_udp_overhead;
            measure(ns, proto::udp, r.payload, seconds_per_size, b, r);
        }
        if (!r.error.empty()) ZC_LOG(warn, tag, "udp frame %zu: %s", frame, r.error.c_str());
        if (progress) progress(r);
        rows.push_back(std::move(r));
    }
    return rows;
}

result<kernel_result> run_kernel_udp_rr(size_t frame, double seconds, std::string* why) {
    std::string dummy;
    if (!why) why = &dummy;
    kernel_result r;
    r.proto = "udp-rr";
    r.frame = frame;
    r.mtu = veth_mtu;
    r.payload = udp_payload_for_frame(frame, &r.capped);
    if (r.payload == 0) {
        *why = "frame below " + std::to_string(eth_ip_udp_overhead + min_udp_payload) + " bytes";
        return err(-EINVAL);
    }
    r.wire_frame = r.payload + eth_ip_udp_overhead;
    if (int rc = precheck(why); rc < 0) return err(rc);
    std::lock_guard lk(g_run_mutex);
    netns_pair ns;
    if (int rc = ns.setup(why); rc < 0) return err(rc);
    buffers b;
    b.pattern.assign(r.payload, 0x5a);
    b.rx.resize(rx_slot);
    // Allocated before fork: at most one round trip per 2 us.
    b.rtt.resize(size_t(seconds * 500000) + 16);
    const pid_t me = getpid();
    const int64_t hard_deadline = mono_ns() + int64_t((seconds + 20) * 1e9);
    const sockaddr_in echo_addr = make_addr(ns.addr(2), udp_port);
    child echo, ping;
    int rc = spawn(echo, [&](int wfd) { udp_echo(ns.fd(1), me, wfd, echo_addr, hard_deadline, b); });
    report er, pr;
    if (rc < 0 || !read_report(echo.rfd, er, 10'000) || er.phase != 1) {
        r.error = er.what[0] ? std::string("echo: ") + er.what : "echo side did not start";
        return r;
    }
    rc = spawn(ping, [&](int wfd) { udp_ping(ns.fd(0), me, wfd, echo_addr, r.payload, seconds, b); });
    if (rc < 0) {
        r.error = std::string("fork: ") + strerror(-rc);
        return r;
    }
    const bool ping_ok = read_report(ping.rfd, pr, int((seconds + 15) * 1000));
    const bool echo_ok = read_report(echo.rfd, er, ping_ok ? 5'000 : 0);
    ping.reap(!ping_ok);
    echo.reap(!echo_ok);
    if (!ping_ok) r.error = "ping side did not report";
    else if (pr.err) r.error = std::string("ping: ") + pr.what;
    else if (pr.frames == 0) r.error = "no round trip completed";
    r.frames_sent = pr.frames + pr.lost;
    r.frames_received = pr.frames;
    r.frames_lost = pr.lost;
    r.bad_frames = pr.bad;
    r.bytes_received = pr.bytes;
    r.seconds = double(pr.last_ns - pr.first_ns) / 1e9;
    r.integrity_ok = pr.frames > 0 && pr.bad == 0;
    r.cpu_seconds = cpu_of(ping.ru) + cpu_of(echo.ru);
    r.rtt_p50_us = double(pr.p50_ns) / 1e3;
    r.rtt_p99_us = double(pr.p99_ns) / 1e3;
    r.rtt_p999_us = double(pr.p999_ns) / 1e3;
    return r;
}

result<kernel_result> run_kernel_tcp(size_t bulk, double seconds, std::string* why) {
    std::string dummy;
    if (!why) why = &dummy;
    if (bulk == 0) {
        *why = "bulk size 0";
        return err(-EINVAL);
    }
    if (int rc = precheck(why); rc < 0) return err(rc);
    std::lock_guard lk(g_run_mutex);
    netns_pair ns;
    if (int rc = ns.setup(why); rc < 0) return err(rc);

    buffers b;
    b.pattern.resize(tcp_period + std::max(bulk, tcp_rx_buf));
    for (size_t i = 0; i < b.pattern.size(); ++i) b.pattern[i] = uint8_t(i % tcp_period);
    b.rx.resize(tcp_rx_buf);

    kernel_result r;
    r.proto = "tcp";
    r.frame = bulk;
    r.payload = bulk;
    r.wire_frame = bulk;
    r.mtu = veth_mtu;
    measure(ns, proto::tcp, bulk, seconds, b, r);
    if (!r.error.empty()) ZC_LOG(warn, tag, "tcp bulk %zu: %s", bulk, r.error.c_str());
    return r;
}

} // namespace zc::bench
