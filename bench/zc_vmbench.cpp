// SPDX-License-Identifier: MIT
// zc-vmbench: VM-to-VM throughput on an emulated Xen host, with its
// baselines measured in the same run.
//
// The runner starts an emulated hypervisor (in-process broker), zc-netback
// as dom0, and guest processes (this same binary in the `guest` role) that
// speak the netif protocol through the userspace netfront. Pair p is guest
// 2p+1 (sender) -> guest 2p+2 (receiver). For each mode and frame size the
// receiver counts and verifies every frame; the runner reads zc-netback's
// counters (grant-copy segments, batches, notifications) and the CPU time of
// every process, and prints Gbit/s and Mpps next to memcpy and the kernel
// path (two network namespaces joined by veth).
#include <algorithm>
#include <arpa/inet.h>
#include <cstdarg>
#include <ctime>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench/kernel_path.hpp"
#include "hv/emu/host.hpp"
#include "hv/emu/emu_port.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "netback/counters.hpp"
#include "netback/toolstack.hpp"

using namespace zc;
using clk = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------------------
// Frames: Ethernet header, then our header, then a pattern that depends only
// on the offset (so the receiver compares against a template).
constexpr uint16_t ethertype = 0x88B5; // IEEE local experimental
constexpr uint32_t magic = 0x7a637662; // "zcvb"
enum kind : uint32_t { k_data = 0, k_end = 1, k_hello = 2 };

struct __attribute__((packed)) bench_hdr {
    uint8_t dst[6], src[6];
    uint16_t type_be;
    uint32_t magic;
    uint32_t phase;
    uint64_t seq;
    uint32_t len;
    uint32_t kind;
};
constexpr size_t hdr_len = sizeof(bench_hdr);
static_assert(hdr_len == 38);

uint8_t pat(size_t off) { return uint8_t(off * 13 + (off >> 8) * 7 + 1); }

std::vector<uint8_t> make_template(size_t len) {
    std::vector<uint8_t> t(len);
    for (size_t i = hdr_len; i < len; i++) t[i] = pat(i);
    return t;
}

double now_s() { return std::chrono::duration<double>(clk::now().time_since_epoch()).count(); }

// ---------------------------------------------------------------------------
// Guest role. Commands on stdin, one per line; answers on stdout.
//   connect               -> "connected <mac>" | "error <why>"
//   run <phase> <size> <seconds> <dst-mac>   (sender)
//   run <phase> <size> <seconds>             (receiver) -> "ready" first
//   quit
struct guest_opts {
    std::string role;
    uint32_t rx_buffers = link::netif_rx_ring_size;
    uint32_t queues = 1;
};

bool read_line(std::string& out, int timeout_ms) {
    out.clear();
    for (;;) {
        pollfd p{0, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) return false;
        char c;
        ssize_t n = ::read(0, &c, 1);
        if (n <= 0) return false;
        if (c == '\n') return true;
        out += c;
    }
}

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::vprintf(fmt, ap);
    va_end(ap);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

int guest_send(link::netfront& nf, uint32_t phase, size_t size, double seconds, const link::mac_addr& dst) {
    auto tmpl = make_template(size);
    auto* h = reinterpret_cast<bench_hdr*>(tmpl.data());
    std::memcpy(h->dst, dst.data(), 6);
    std::memcpy(h->src, nf.mac().data(), 6);
    h->type_be = htons(ethertype);
    h->magic = magic;
    h->phase = phase;
    h->len = uint32_t(size);
    h->kind = k_data;
    uint64_t sent = 0, busy = 0;
    uint32_t nq = nf.queues();
    double t0 = now_s(), end = t0 + seconds;
    while (now_s() < end) {
        h->seq = sent;
        int rc = nf.send(tmpl.data(), size, uint32_t(sent % nq));
        if (rc == -EAGAIN) {
            busy++;
            nf.wait(20); // TX responses free pages; never spin
            continue;
        }
        if (rc < 0) {
            say("{\"error\":\"send: %s\"}", std::strerror(-rc));
            return 1;
        }
        sent++;
        if ((sent & 63) == 0) nf.process_events();
    }
    double t1 = now_s();
    // End markers: sent on every queue, after the data, so they arrive last.
    h->kind = k_end;
    h->seq = sent;
    for (uint32_t q = 0; q < nq; q++)
        for (int tries = 0; tries < 500; tries++) {
            int rc = nf.send(tmpl.data(), std::max<size_t>(size, 60), q);
            if (rc != -EAGAIN) break;
            nf.wait(20);
        }
    // Let the last TX responses come back before reporting.
    for (int i = 0; i < 50; i++) nf.wait(10);
    say("{\"sent\":%" PRIu64 ",\"busy\":%" PRIu64 ",\"seconds\":%.6f}", sent, busy, t1 - t0);
    return 0;
}

int guest_recv(link::netfront& nf, uint32_t phase, size_t size, double seconds) {
    auto tmpl = make_template(size);
    std::vector<uint8_t> buf(std::max<size_t>(size, 65536) + 64);
    say("ready");
    uint64_t frames = 0, bytes = 0, bad = 0, stale = 0, ends = 0;
    double first = 0, last = 0;
    uint32_t nq = nf.queues();
    double deadline = now_s() + seconds + 10;
    while (ends < nq && now_s() < deadline) {
        bool any = false;
        for (uint32_t q = 0; q < nq; q++) {
            for (;;) {
                auto n = nf.recv(buf.data(), buf.size(), q);
                if (!n) break;
                any = true;
                auto* h = reinterpret_cast<const bench_hdr*>(buf.data());
                if (*n < hdr_len || h->magic != magic || h->type_be != htons(ethertype)) continue;
                if (h->phase != phase) {
                    stale++;
                    continue;
                }
                if (h->kind == k_end) {
                    ends++;
                    continue;
                }
                if (h->kind != k_data) continue;
                if (frames == 0) first = now_s();
                last = now_s();
                frames++;
                bytes += *n;
                if (*n != size || h->len != size ||
                    std::memcmp(buf.data() + hdr_len, tmpl.data() + hdr_len, size - hdr_len) != 0)
                    bad++;
            }
        }
        if (!any) nf.wait(50);
    }
    double span = frames > 1 ? last - first : 0;
    say("{\"frames\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"bad\":%" PRIu64 ",\"stale\":%" PRIu64
        ",\"ends\":%" PRIu64 ",\"seconds\":%.6f}",
        frames, bytes, bad, stale, ends, span);
    return 0;
}

// Request/response (rr mode): one frame out, wait for its echo, repeat for
// `seconds`; the round-trip times' percentiles. Never spins: waits on the
// event channel between frames.
double pct(std::vector<double>& v, double q) {
    if (v.empty()) return 0;
    size_t k = std::min(v.size() - 1, size_t(q * double(v.size())));
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
}

int guest_ping(link::netfront& nf, uint32_t phase, size_t size, double seconds, const link::mac_addr& dst) {
    auto tmpl = make_template(size);
    auto* h = reinterpret_cast<bench_hdr*>(tmpl.data());
    std::memcpy(h->dst, dst.data(), 6);
    std::memcpy(h->src, nf.mac().data(), 6);
    h->type_be = htons(ethertype);
    h->magic = magic;
    h->phase = phase;
    h->len = uint32_t(size);
    h->kind = k_data;
    std::vector<uint8_t> buf(std::max<size_t>(size, 2048) + 64);
    std::vector<double> rtt;
    uint64_t lost = 0, bad = 0;
    const double end = now_s() + seconds;
    for (uint64_t seq = 0; now_s() < end; ++seq) {
        h->seq = seq;
        const double t0 = now_s();
        int rc;
        while ((rc = nf.send(tmpl.data(), size)) == -EAGAIN && now_s() - t0 < 1.0) nf.wait(20);
        if (rc == -EAGAIN) {
            ++lost; // the ring stayed full for a second
            continue;
        }
        if (rc < 0) {
            say("{\"error\":\"send: %s\"}", std::strerror(-rc));
            return 1;
        }
        bool got = false;
        while (!got && now_s() - t0 < 1.0) {
            auto n = nf.recv(buf.data(), buf.size());
            if (!n) {
                nf.wait(50);
                continue;
            }
            auto* r = reinterpret_cast<const bench_hdr*>(buf.data());
            if (*n < hdr_len || r->magic != magic || r->phase != phase || r->kind != k_data || r->seq != seq) continue;
            if (*n != size) ++bad;
            rtt.push_back((now_s() - t0) * 1e6);
            got = true;
        }
        if (!got) ++lost;
    }
    h->kind = k_end;
    for (int i = 0; i < 3; ++i) nf.send(tmpl.data(), size);
    const size_t n = rtt.size();
    const double p50 = pct(rtt, 0.5), p99 = pct(rtt, 0.99), p999 = pct(rtt, 0.999);
    say("{\"samples\":%zu,\"lost\":%" PRIu64 ",\"bad\":%" PRIu64 ",\"p50\":%.2f,\"p99\":%.2f,\"p999\":%.2f}", n,
        lost, bad, p50, p99, p999);
    return 0;
}

// The other end: every frame of this phase goes back to its sender.
int guest_echo(link::netfront& nf, uint32_t phase, double seconds) {
    std::vector<uint8_t> buf(65536 + 64);
    say("ready");
    uint64_t echoed = 0;
    const double deadline = now_s() + seconds + 10;
    while (now_s() < deadline) {
        auto n = nf.recv(buf.data(), buf.size());
        if (!n) {
            nf.wait(50);
            continue;
        }
        auto* h = reinterpret_cast<bench_hdr*>(buf.data());
        if (*n < hdr_len || h->magic != magic || h->phase != phase) continue;
        if (h->kind == k_end) break;
        uint8_t mac[6];
        std::memcpy(mac, h->dst, 6);
        std::memcpy(h->dst, h->src, 6);
        std::memcpy(h->src, mac, 6);
        int rc;
        for (int tries = 0; (rc = nf.send(buf.data(), *n)) == -EAGAIN && tries < 50; ++tries) nf.wait(20);
        if (rc >= 0) ++echoed;
    }
    say("{\"echoed\":%" PRIu64 "}", echoed);
    return 0;
}

int run_guest(const guest_opts& o) {
    std::signal(SIGPIPE, SIG_IGN);
    std::string why;
    auto port = hv::open(&why);
    if (!port) {
        say("error %s", why.c_str());
        return 1;
    }
    say("up");
    std::string line;
    std::unique_ptr<link::netfront> nf;
    while (read_line(line, 600000)) {
        if (line == "connect") {
            link::netfront_options no;
            no.rx_buffers = o.rx_buffers;
            no.max_queues = o.queues;
            auto n = link::netfront::connect(**port, no, &why);
            if (!n) {
                say("error %s", why.c_str());
                return 1;
            }
            nf = std::move(*n);
            // Tell the switch where we are (it learns source MACs).
            std::vector<uint8_t> hello(60, 0);
            auto* h = reinterpret_cast<bench_hdr*>(hello.data());
            std::memset(h->dst, 0xff, 6);
            std::memcpy(h->src, nf->mac().data(), 6);
            h->type_be = htons(ethertype);
            h->magic = magic;
            h->kind = k_hello;
            h->phase = UINT32_MAX;
            nf->send(hello.data(), hello.size());
            say("connected %s", to_string(nf->mac()).c_str());
        } else if (line.rfind("run ", 0) == 0 && nf) {
            unsigned phase = 0;
            size_t size = 0;
            double secs = 0;
            char mac[32] = {};
            int k = std::sscanf(line.c_str(), "run %u %zu %lf %31s", &phase, &size, &secs, mac);
            if (k < 3 || size < 60 || size > 65535) {
                say("{\"error\":\"bad command\"}");
                continue;
            }
            if (o.role == "send") {
                link::mac_addr dst{};
                if (k < 4 || !parse_mac(mac, dst, mac_allow_short)) {
                    say("{\"error\":\"bad mac\"}");
                    continue;
                }
                guest_send(*nf, phase, size, secs, dst);
            } else {
                guest_recv(*nf, phase, size, secs);
            }
        } else if (line.rfind("rr ", 0) == 0 && nf) {
            // rr <phase> <size> <seconds> [<dst-mac>]: the sender pings, the receiver echoes.
            unsigned phase = 0;
            size_t size = 0;
            double secs = 0;
            char mac[32] = {};
            int k = std::sscanf(line.c_str(), "rr %u %zu %lf %31s", &phase, &size, &secs, mac);
            link::mac_addr dst{};
            if (k < 3 || size < 60 || size > 65535) say("{\"error\":\"bad command\"}");
            else if (o.role == "recv") guest_echo(*nf, phase, secs);
            else if (k < 4 || !parse_mac(mac, dst, mac_allow_short)) say("{\"error\":\"bad mac\"}");
            else guest_ping(*nf, phase, size, secs, dst);
        } else if (line == "stats" && nf) {
            auto s = nf->stats(0);
            say("{\"tx_packets\":%" PRIu64 ",\"rx_packets\":%" PRIu64 ",\"tx_errors\":%" PRIu64
                ",\"rx_errors\":%" PRIu64 "}",
                s.tx_packets, s.rx_packets, s.tx_errors, s.rx_errors);
        } else if (line == "quit") {
            break;
        }
    }
    if (nf) nf->disconnect();
    return 0;
}

// ---------------------------------------------------------------------------
// Runner side.

struct child {
    pid_t pid = -1;
    int in = -1, out = -1; // our ends: write commands, read answers
    std::string buf;

    bool send(const std::string& s) {
        std::string l = s + "\n";
        return ::write(in, l.data(), l.size()) == ssize_t(l.size());
    }
    // Next line, bounded wait.
    bool line(std::string& l, int timeout_ms) {
        auto deadline = clk::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            auto nl = buf.find('\n');
            if (nl != std::string::npos) {
                l = buf.substr(0, nl);
                buf.erase(0, nl + 1);
                return true;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clk::now()).count();
            if (left <= 0) return false;
            pollfd p{out, POLLIN, 0};
            if (::poll(&p, 1, int(left)) <= 0) return false;
            char tmp[4096];
            ssize_t n = ::read(out, tmp, sizeof tmp);
            if (n <= 0) return false;
            buf.append(tmp, size_t(n));
        }
    }
    // Guests: ask them to quit. Others: SIGTERM. Either way 3 s, then SIGKILL.
    void stop() {
        if (pid > 0) send("quit");
        end();
    }
    void terminate() {
        if (pid > 0) ::kill(pid, SIGTERM);
        end();
    }

private:
    void end() {
        if (pid > 0) {
            bool reaped = false;
            for (int i = 0; i < 300 && !reaped; i++) {
                reaped = ::waitpid(pid, nullptr, WNOHANG) == pid;
                if (!reaped) ::usleep(10000);
            }
            if (!reaped) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
            pid = -1;
        }
        if (in >= 0) ::close(in);
        if (out >= 0) ::close(out);
        in = out = -1;
    }
};

// Start `argv` with environment `env` added; stdin/stdout are pipes to us.
// `log`: the child's stderr goes there (its start-up chatter would break up
// the table); see log_tail() for errors.
child spawn(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env,
            bool pipes = true, const std::string& log = "") {
    child c;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1};
    if (pipes && (::pipe2(pin, O_CLOEXEC) < 0 || ::pipe2(pout, O_CLOEXEC) < 0)) return c;
    c.pid = ::fork();
    if (c.pid == 0) {
        if (pipes) {
            ::dup2(pin[0], 0);
            ::dup2(pout[1], 1);
        }
        if (!log.empty()) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) ::dup2(fd, 2);
        }
        for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> a;
        for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        ::execv(a[0], a.data());
        std::fprintf(stderr, "zc-vmbench: exec %s: %s\n", a[0], std::strerror(errno));
        std::_Exit(127);
    }
    if (pipes) {
        ::close(pin[0]);
        ::close(pout[1]);
        c.in = pin[1];
        c.out = pout[0];
    }
    return c;
}

// The last lines of a child's log, for an error message.
std::string log_tail(const std::string& path, size_t max = 600) {
    std::string t;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) t.append(buf, n);
        std::fclose(f);
    }
    if (t.size() > max) t.erase(0, t.size() - max);
    while (!t.empty() && t.back() == '\n') t.pop_back();
    return t.empty() ? "" : " (" + path.substr(path.rfind('/') + 1) + ": " + t + ")";
}

// CPU seconds (user + system) a process has used so far.
double cpu_of(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
    FILE* f = std::fopen(path, "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')');
    if (!p) return 0;
    unsigned long ut = 0, st = 0;
    // Fields after ")": state(3) ... utime(14) stime(15).
    if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
    return double(ut + st) / double(::sysconf(_SC_CLK_TCK));
}

std::string netback_stats(const std::string& ctl) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ctl.c_str());
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
        (void)!::write(fd, "stats\n", 6);
        char buf[8192];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    }
    ::close(fd);
    return out;
}

std::string jfield(const std::string& json, const std::string& key) {
    std::string k = "\"" + key + "\":";
    auto p = json.find(k);
    if (p == std::string::npos) return "";
    p += k.size();
    auto e = json.find_first_of(",}", p);
    return json.substr(p, e - p);
}
double jnum(const std::string& json, const std::string& key) { return std::atof(jfield(json, key).c_str()); }

// zc-netback's counters summed over every vif of its stats JSON (the keys
// are vif_stats' counter list, netback/counters.hpp).
netback::vif_stats netback_totals(const std::string& ctl) {
    const std::string json = netback_stats(ctl);
    netback::vif_stats total;
    const size_t end = json.find("],\"devices\"");
    for (size_t p = json.find("{\"frontend\":"); p < end; p = json.find("{\"frontend\":", p + 1)) {
        const std::string obj = json.substr(p, json.find("]}", p) - p);
        netback::vif_stats v;
#define ZC_VMBENCH_PARSE_(name, unit, drop, help) v.name = std::strtoull(jfield(obj, #name).c_str(), nullptr, 10);
        ZC_NETBACK_VIF_COUNTERS(ZC_VMBENCH_PARSE_)
#undef ZC_VMBENCH_PARSE_
        total += v;
    }
    return total;
}
// One counter of vif_stats (per-frame figures are deltas of one counter).
using vif_counter = uint64_t netback::vif_stats::*;

struct row {
    std::string mode;
    size_t frame = 0;
    uint32_t pairs = 1, queues = 1;
    double gbps = 0, mpps = 0, cpu_s_per_gb = 0;
    uint64_t frames = 0, sent = 0;
    bool intact = false;
    double segs_per_pkt = 0, batches_per_pkt = 0, notifies_per_pkt = 0, fallbacks_per_pkt = 0;
    double nb_us_per_pkt = 0; // zc-netback's own CPU (user + system) per delivered frame
    double gbps_min = 0, gbps_max = 0; // --repeat: the spread of the passes (gbps is their median)
    uint32_t passes = 1;
    std::string note;
};

// A request/response measurement: round-trip times in microseconds.
struct rr_row {
    std::string mode; // zc-rr (through zc-netback) or kernel-rr (veth, UDP)
    size_t frame = 0;
    uint64_t samples = 0, lost = 0;
    double p50 = 0, p99 = 0, p999 = 0;
};

struct run_opts {
    std::vector<size_t> sizes{64, 256, 1500, 4096, 9000, 65535}; // 65535: XEN_NETIF_MAX_TX_SIZE
    std::vector<std::string> modes{"zc", "double-copy", "pressure", "kernel", "memcpy", "app", "rr"};
    std::vector<uint32_t> pairs{1};
    std::vector<uint32_t> queues{1};
    uint32_t workers = 0; // zc-netback data-path threads; 0: one per queue, at most the CPUs
    double seconds = 1.0;
    uint32_t repeat = 1; // the modes run this many times, interleaved; rows report the median
    std::string json = "zc-vmbench.json", csv = "zc-vmbench.csv", png = "zc-vmbench.png";
    std::string netback, self;
    std::string stackd, perf; // app mode: zc-stackd and zc-perf
};

std::string exe_dir(const std::string& self) {
    auto s = self.rfind('/');
    return s == std::string::npos ? "." : self.substr(0, s);
}

// A program zc-vmbench runs: in the build tree at ../<build_rel>, installed
// (cmake --install, the zcnet package) next to zc-vmbench itself.
std::string sibling(const std::string& self, const std::string& build_rel, const std::string& name) {
    std::string in_tree = exe_dir(self) + "/../" + build_rel + "/" + name;
    return ::access(in_tree.c_str(), X_OK) == 0 ? in_tree : exe_dir(self) + "/" + name;
}

// The part of an emulated host every mode shares: a broker (the
// hypervisor) in a temporary directory, dom0's port and xenstore, and
// zc-netback serving dom0's vifs with a control socket for its counters.
struct dom0_host {
    std::unique_ptr<hv::emu::host> emu; // hv/emu/host.hpp: broker thread + directory
    std::string dir;                    // emu->dir(), where logs and sockets go
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs;
    child netback;
    std::string ctl;
    std::vector<std::pair<std::string, std::string>> env; // what every domain's process gets

    bool start_dom0(const char* tag, const run_opts& o, const std::vector<std::string>& nb_args, std::string* why) {
        auto h = hv::emu::host::create(tag, why);
        if (!h) return false;
        emu = std::move(*h);
        dir = emu->dir();
        auto p = emu->domain(0, 0, why);
        if (!p) return false;
        dom0 = std::move(*p);
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return *why = "xenstore", false;
        xs = std::move(*x);
        // The domains' processes create their own domains: they get the
        // toolstack's token (hv/emu/broker.hpp).
        env = {{"ZCNET_HV", "emu"}, {"ZCNET_EMU_SOCK", emu->sock()}, {"ZCNET_EMU_TOKEN", emu->admin_token()},
               {"ZCNET_LOG", "warn"}};
        ctl = dir + "/netback.sock";
        std::vector<std::string> nb{o.netback, "run", "--ctl", ctl};
        nb.insert(nb.end(), nb_args.begin(), nb_args.end());
        netback = spawn(nb, domain_env(0, true), false);
        for (int i = 0; i < 500 && ::access(ctl.c_str(), F_OK) != 0; i++) ::usleep(10000);
        if (::access(ctl.c_str(), F_OK) != 0) return *why = "zc-netback did not start", false;
        return true;
    }

    std::vector<std::pair<std::string, std::string>> domain_env(hv::domid_t d, bool attach = false) const {
        auto e = env;
        e.push_back({"ZCNET_DOMID", std::to_string(d)});
        if (attach) e.push_back({"ZCNET_EMU_ATTACH", "1"});
        return e;
    }

    void stop_dom0() {
        netback.terminate();
        xs.reset();
        dom0.reset();
        emu.reset(); // stops the broker, removes the directory
        dir.clear();
    }
};

// One emulated host: broker, zc-netback with `nb_args`, `pairs` guest pairs.
struct host : dom0_host {
    std::vector<child> guests; // 2 per pair: sender, receiver
    std::vector<std::string> macs;

    ~host() { shutdown(); }

    bool start(const run_opts& o, uint32_t pairs, const std::vector<std::string>& nb_args, uint32_t rx_buffers,
               uint32_t queues, std::string* why) {
        if (!start_dom0("vmbench", o, nb_args, why)) return false;
        for (uint32_t g = 0; g < 2 * pairs; g++) {
            hv::domid_t d = hv::domid_t(g + 1);
            std::vector<std::string> a{o.self, "guest", "--role", g % 2 == 0 ? "send" : "recv", "--rx-buffers",
                                       std::to_string(rx_buffers), "--queues", std::to_string(queues)};
            guests.push_back(spawn(a, domain_env(d)));
            std::string l;
            if (!guests.back().line(l, 10000) || l != "up") return *why = "guest " + std::to_string(d) + ": " + l, false;
            netback::vif_spec s;
            s.frontend = d;
            s.mtu = 65535; // non-GSO frames up to 64 KiB between the guests
            if (netback::vif_create(*xs, s, why) < 0) return false;
        }
        for (size_t g = 0; g < guests.size(); g++) {
            guests[g].send("connect");
            std::string l;
            if (!guests[g].line(l, 20000) || l.rfind("connected ", 0) != 0)
                return *why = "guest " + std::to_string(g + 1) + " did not connect: " + l, false;
            macs.push_back(l.substr(10));
        }
        return true;
    }

    std::vector<pid_t> pids() const {
        std::vector<pid_t> v{netback.pid};
        for (auto& g : guests) v.push_back(g.pid);
        return v;
    }

    void shutdown() {
        for (auto& g : guests) g.stop();
        guests.clear();
        stop_dom0();
    }

    // Request/response between the first pair: round-trip percentiles.
    bool measure_rr(uint32_t phase, size_t size, double seconds, rr_row& r, std::string* why) {
        const std::string cmd = "rr " + std::to_string(phase) + " " + std::to_string(size) + " " +
                                std::to_string(seconds);
        std::string l, lr;
        guests[1].send(cmd);
        if (!guests[1].line(l, 10000) || l != "ready") return *why = "echo side not ready: " + l, false;
        guests[0].send(cmd + " " + macs[1]);
        const int timeout = int(seconds * 1000) + 30000;
        if (!guests[0].line(l, timeout) || !guests[1].line(lr, timeout)) return *why = "a guest did not report", false;
        if (!jfield(l, "error").empty()) return *why = "guest error: " + l, false;
        r.mode = "zc-rr";
        r.frame = size;
        r.samples = uint64_t(jnum(l, "samples"));
        r.lost = uint64_t(jnum(l, "lost")) + uint64_t(jnum(l, "bad"));
        r.p50 = jnum(l, "p50");
        r.p99 = jnum(l, "p99");
        r.p999 = jnum(l, "p999");
        return r.samples > 0 || (*why = "no round trip completed", false);
    }

    // One measurement: every pair at `size` for `seconds`.
    bool measure(uint32_t phase, size_t size, double seconds, row& r, std::string* why) {
        const netback::vif_stats s0 = netback_totals(ctl);
        double cpu0 = 0;
        for (pid_t p : pids()) cpu0 += cpu_of(p);
        const double nb0 = cpu_of(netback.pid);
        size_t pairs = guests.size() / 2;
        for (size_t p = 0; p < pairs; p++) {
            guests[2 * p + 1].send("run " + std::to_string(phase) + " " + std::to_string(size) + " " +
                                   std::to_string(seconds));
            std::string l;
            if (!guests[2 * p + 1].line(l, 10000) || l != "ready") return *why = "receiver not ready: " + l, false;
        }
        for (size_t p = 0; p < pairs; p++)
            guests[2 * p].send("run " + std::to_string(phase) + " " + std::to_string(size) + " " +
                               std::to_string(seconds) + " " + macs[2 * p + 1]);
        uint64_t frames = 0, bytes = 0, bad = 0, sent = 0;
        double span = 0;
        int timeout = int(seconds * 1000) + 30000;
        for (size_t p = 0; p < pairs; p++) {
            std::string ls, lr;
            if (!guests[2 * p].line(ls, timeout) || !guests[2 * p + 1].line(lr, timeout))
                return *why = "a guest did not report", false;
            if (!jfield(ls, "error").empty() || !jfield(lr, "error").empty())
                return *why = "guest error: " + ls + " " + lr, false;
            sent += uint64_t(jnum(ls, "sent"));
            frames += uint64_t(jnum(lr, "frames"));
            bytes += uint64_t(jnum(lr, "bytes"));
            bad += uint64_t(jnum(lr, "bad"));
            span = std::max(span, jnum(lr, "seconds"));
        }
        double cpu1 = 0;
        for (pid_t p : pids()) cpu1 += cpu_of(p);
        const double nb1 = cpu_of(netback.pid);
        const netback::vif_stats s1 = netback_totals(ctl);
        auto d = [&](vif_counter k) { return double(s1.*k - s0.*k); };
        r.frame = size;
        r.frames = frames;
        r.sent = sent;
        r.intact = frames > 0 && bad == 0;
        if (span > 0) {
            r.gbps = double(bytes) * 8 / span / 1e9;
            r.mpps = double(frames) / span / 1e6;
        }
        r.cpu_s_per_gb = bytes ? (cpu1 - cpu0) / (double(bytes) / 1e9) : 0;
        double pk = std::max(1.0, double(frames));
        r.segs_per_pkt = d(&netback::vif_stats::grant_copy_segments) / pk;
        r.batches_per_pkt = d(&netback::vif_stats::grant_copy_batches) / pk;
        r.notifies_per_pkt = d(&netback::vif_stats::notifies_sent) / pk;
        r.fallbacks_per_pkt = d(&netback::vif_stats::fallback_copies) / pk;
        r.nb_us_per_pkt = (nb1 - nb0) * 1e6 / pk;
        if (bad) r.note = std::to_string(bad) + " corrupt frames";
        if (sent > frames) r.note += (r.note.empty() ? "" : "; ") + std::to_string(sent - frames) + " not delivered";
        return true;
    }
};

row memcpy_row(size_t size, double seconds) {
    row r;
    r.mode = "memcpy";
    r.frame = size;
    constexpr size_t slots = 64;
    size_t stride = (size + 4095) & ~size_t(4095);
    std::vector<uint8_t> a(slots * stride, 1), b(slots * stride, 2);
    uint64_t bytes = 0, n = 0;
    double t0 = now_s(), c0 = double(std::clock()) / CLOCKS_PER_SEC;
    while (now_s() - t0 < seconds) {
        for (size_t i = 0; i < slots; i++) std::memcpy(b.data() + i * stride, a.data() + i * stride, size);
        asm volatile("" ::"r"(b.data()) : "memory");
        bytes += size * slots;
        n += slots;
    }
    double t = now_s() - t0, c = double(std::clock()) / CLOCKS_PER_SEC - c0;
    r.gbps = double(bytes) * 8 / t / 1e9;
    r.mpps = double(n) / t / 1e6;
    r.cpu_s_per_gb = c / (double(bytes) / 1e9);
    r.frames = n;
    r.intact = std::memcmp(a.data(), b.data(), size) == 0;
    return r;
}

// ---------------------------------------------------------------------------
// app mode: application to application. zc-netback in dom0, zc-stackd in
// guests 1 and 2 (10.0.0.1, 10.0.0.2), a zc-perf server attached to guest 2's
// stack and, per frame size, a zc-perf client on guest 1's stack sending
// strict zero-copy UDP with every payload verified. The row counts Ethernet
// frame bytes (UDP payload + 42) as the raw rows do, so app/zc is the cost of
// the socket layer (rings, stack service, headers, the RX copy into the
// socket's pool) over raw netfront frames.
struct app_host : dom0_host {
    child server;
    child stackd[2];
    std::string sock[2];

    ~app_host() {
        for (child* c : {&server, &stackd[0], &stackd[1]}) c->terminate();
        stop_dom0();
    }

    bool start(const run_opts& o, const std::string& tx_headers, std::string* why) {
        if (!start_dom0("vmbench-app", o, {}, why)) return false;
        for (int g = 0; g < 2; g++) {
            sock[g] = dir + "/stack" + std::to_string(g + 1) + ".sock";
            stackd[g] = spawn({o.stackd, "--ip", "10.0.0." + std::to_string(g + 1), "--listen", sock[g],
                               "--tx-headers", tx_headers},
                              domain_env(hv::domid_t(g + 1)), false, dir + "/stack" + std::to_string(g + 1) + ".log");
            // The domain exists once zc-stackd is connected to the broker; it
            // waits for its vif (--wait-vif), which we create as the toolstack.
            for (int i = 0; i < 500; i++) {
                auto l = hv::emu::client_of(*dom0)->list_domains();
                if (l && std::find(l->begin(), l->end(), hv::domid_t(g + 1)) != l->end()) break;
                ::usleep(10000);
            }
            netback::vif_spec vs;
            vs.frontend = hv::domid_t(g + 1);
            vs.mtu = 65535;
            if (netback::vif_create(*xs, vs, why) < 0) return false;
        }
        for (int g = 0; g < 2; g++) {
            for (int i = 0; i < 1000 && ::access(sock[g].c_str(), F_OK) != 0; i++) ::usleep(10000);
            if (::access(sock[g].c_str(), F_OK) != 0)
                return *why = "zc-stackd did not start" + log_tail(dir + "/stack" + std::to_string(g + 1) + ".log"),
                       false;
        }
        server = spawn({o.perf, "-s", "--service", sock[1], "--port", "5201"}, {}, false, dir + "/perf-server.log");
        ::usleep(200000);
        return true;
    }

    bool measure(size_t frame, double seconds, row& r, std::string* why) {
        size_t payload = std::max<size_t>(32, frame - 42);
        std::vector<pid_t> pids{netback.pid, stackd[0].pid, stackd[1].pid, server.pid};
        const netback::vif_stats s0 = netback_totals(ctl);
        double cpu0 = 0;
        for (pid_t p : pids) cpu0 += cpu_of(p);
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.3f", seconds);
        child c = spawn({o_perf, "-c", "10.0.0.2", "--service", sock[0], "--port", "5201", "--size",
                         std::to_string(payload), "--time", secs, "--verify", "--rtt", "200", "--json"},
                        {}, true);
        std::string l;
        bool got = c.line(l, int(seconds * 1000) + 30000);
        int st = 0;
        rusage ru{};
        ::wait4(c.pid, &st, 0, &ru);
        c.pid = -1;
        if (c.in >= 0) ::close(c.in);
        if (c.out >= 0) ::close(c.out);
        if (!got) return *why = "zc-perf client did not report" + log_tail(dir + "/perf-server.log"), false;
        double cpu1 = 0;
        for (pid_t p : pids) cpu1 += cpu_of(p);
        double client_cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                            double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
        auto srv = l.find("\"server\":");
        std::string s = srv == std::string::npos ? "" : l.substr(srv);
        double t = jnum(l, "seconds");
        uint64_t received = uint64_t(jnum(s, "received"));
        r.mode = mode;
        r.frame = payload + 42;
        r.frames = received;
        r.sent = uint64_t(jnum(l, "sent"));
        r.intact = jfield(s, "report") == "true" && jnum(s, "corrupt") == 0 && received > 0;
        r.gbps = t > 0 ? double(received) * double(r.frame) * 8 / t / 1e9 : 0;
        r.mpps = t > 0 ? double(received) / t / 1e6 : 0;
        double bytes = double(received) * double(r.frame);
        r.cpu_s_per_gb = bytes > 0 ? (cpu1 - cpu0 + client_cpu) / (bytes / 1e9) : 0;
        // Per frame zc-netback moved (data, control and ping-pong frames alike).
        const netback::vif_stats s1 = netback_totals(ctl);
        auto d = [&](vif_counter k) { return double(s1.*k - s0.*k); };
        double pk = std::max(1.0, d(&netback::vif_stats::rx_packets));
        r.segs_per_pkt = d(&netback::vif_stats::grant_copy_segments) / pk;
        r.batches_per_pkt = d(&netback::vif_stats::grant_copy_batches) / pk;
        r.notifies_per_pkt = d(&netback::vif_stats::notifies_sent) / pk;
        r.fallbacks_per_pkt = d(&netback::vif_stats::fallback_copies) / pk;
        auto lat = l.find("\"latency_us\":");
        char note[160];
        std::snprintf(note, sizeof note, "zc-perf strict, p50 %.0f us p99 %.0f us%s%s",
                      lat == std::string::npos ? 0.0 : jnum(l.substr(lat), "p50"),
                      lat == std::string::npos ? 0.0 : jnum(l.substr(lat), "p99"),
                      r.sent > received ? ", UDP loss " : "",
                      r.sent > received ? std::to_string(r.sent - received).c_str() : "");
        r.note = note;
        return true;
    }
    std::string o_perf;
    std::string mode = "app";
};

void print_row(const row& r, const row* mc, const row* kern) {
    char rm[32] = "-", rk[32] = "-";
    if (mc && mc->gbps > 0) std::snprintf(rm, sizeof rm, "%.3f", r.gbps / mc->gbps);
    if (kern && kern->gbps > 0) std::snprintf(rk, sizeof rk, "%.2f", r.gbps / kern->gbps);
    std::printf("%-12s %7zu %5u %3u %9.3f %8.3f %9.2f %8s %8s %7.2f %7.3f %7.2f %6.2f %7.3f %-6s %s\n",
                r.mode.c_str(), r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, rm, rk, r.segs_per_pkt,
                r.batches_per_pkt, r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.intact ? "yes" : "NO",
                r.note.c_str());
    std::fflush(stdout);
}

const char* usage_text =
    "usage: zc-vmbench [--quick] [--sizes LIST] [--modes LIST] [--pairs LIST] [--queues LIST]\n"
    "                  [--workers N] [--seconds S] [--repeat N] [--json FILE] [--csv FILE]\n"
    "                  [--png FILE] [--netback PATH]\n"
    "\n"
    "VM-to-VM throughput through zc-netback on an emulated Xen host, with the kernel\n"
    "path (two network namespaces joined by veth, UDP) and memcpy measured in the same run.\n"
    "\n"
    "  --sizes LIST    frame sizes in bytes (default 64,256,1500,4096,9000,65535; 65535 is\n"
    "                  the largest netif frame, XEN_NETIF_MAX_TX_SIZE)\n"
    "  --modes LIST    zc,double-copy,pressure,kernel,memcpy,app,app-headroom,rr (default all\n"
    "                  but app-headroom)\n"
    "                  zc: one gref->gref grant copy per slot; double-copy: through a bounce\n"
    "                  buffer (zc-netback --force-bounce); pressure: receivers post few RX\n"
    "                  buffers so fallback engages; app: zc-perf between applications through\n"
    "                  zc-stackd in each guest (zc socket API, frames up to 1514 bytes);\n"
    "                  app-headroom: the same with zc-stackd --tx-headers headroom (one slot);\n"
    "                  rr: request/response round trips (p50/p99/p99.9) at the sizes up to\n"
    "                  1514, through zc-netback and over the kernel's veth (UDP) in the same run\n"
    "  --pairs LIST    guest pairs, e.g. 1,2,4,8 (default 1)\n"
    "  --queues LIST   netif queues per vif, e.g. 1,2 (default 1)\n"
    "  --workers N     zc-netback data-path threads (default: one per queue, at most the CPUs)\n"
    "  --seconds S     per measurement (default 1.0)\n"
    "  --repeat N      run every mode N times, interleaved (all modes, then again), and report\n"
    "                  the median of each row with its min-max; ratios are taken within each\n"
    "                  pass, then their median (default 1)\n"
    "  --quick         sizes 64,1500,9000, 0.3 s each (what CI runs)\n"
    "  --json/--csv/--png FILE   outputs (default zc-vmbench.{json,csv,png}); the PNG needs gnuplot\n"
    "\n"
    "nb-us/pkt is zc-netback's own CPU time (user + system) per delivered frame.\n";

std::vector<std::string> split(const std::string& s);

// A comma-separated list of whole numbers in [lo, hi]; on a bad one, says
// which and returns false.
template <class T>
bool parse_list(const char* arg, long lo, long hi, const char* what, std::vector<T>& out) {
    out.clear();
    for (auto& s : split(arg)) {
        char* end = nullptr;
        long v = std::strtol(s.c_str(), &end, 10);
        if (end == s.c_str() || *end || v < lo || v > hi) {
            std::fprintf(stderr, "zc-vmbench: %s are %ld..%ld, not '%s'\n", what, lo, hi, s.c_str());
            return false;
        }
        out.push_back(T(v));
    }
    if (out.empty()) std::fprintf(stderr, "zc-vmbench: empty list of %s\n", what);
    return !out.empty();
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> v;
    size_t p = 0;
    while (p <= s.size()) {
        auto e = s.find(',', p);
        if (e == std::string::npos) e = s.size();
        if (e > p) v.push_back(s.substr(p, e - p));
        p = e + 1;
    }
    return v;
}

// Live progress on a terminal: one line on stderr, rewritten before each
// measurement and erased before the row it announces is printed. Nothing when
// stderr is not a terminal (logs get the rows, each printed as it completes).
struct progress {
    bool tty = ::isatty(2) == 1;
    uint32_t done = 0, total = 0;
    void step(const std::string& what, double seconds) {
        ++done;
        if (!tty) return;
        std::fprintf(stderr, "\r\033[K[%u/%u] %s (%.1f s)...", done, total, what.c_str(), seconds);
        std::fflush(stderr);
    }
    void clear() {
        if (!tty) return;
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    }
};

// After the table: the zc rows next to every baseline of the same run, the
// ratios the README and the closing notes quote.
void print_summary(const std::vector<row>& rows, std::map<size_t, row>& mc, std::map<size_t, row>& kern) {
    auto find = [&](const char* mode, const row& like) -> const row* {
        for (auto& r : rows)
            if (r.mode == mode && r.frame == like.frame && r.pairs == like.pairs && r.queues == like.queues) return &r;
        return nullptr;
    };
    bool header = false;
    for (auto& z : rows) {
        if (z.mode != "zc") continue;
        if (!header) {
            std::printf("\nzc against the baselines of this run (ratios of Gbit/s):\n");
            std::printf("%7s %5s %6s %9s %9s %9s %12s %9s\n", "frame", "pairs", "queues", "zc", "zc/memcpy",
                        "zc/kernel", "zc/dbl-copy", "zc/press");
            header = true;
        }
        auto ratio = [](double a, const row* b, char* out, size_t n) {
            if (b && b->gbps > 0) std::snprintf(out, n, "%.3f", a / b->gbps);
            else std::snprintf(out, n, "-");
        };
        char rm[32], rk[32], rd[32], rp[32];
        ratio(z.gbps, mc.count(z.frame) ? &mc[z.frame] : nullptr, rm, sizeof rm);
        ratio(z.gbps, kern.count(z.frame) ? &kern[z.frame] : nullptr, rk, sizeof rk);
        ratio(z.gbps, find("double-copy", z), rd, sizeof rd);
        ratio(z.gbps, find("pressure", z), rp, sizeof rp);
        std::printf("%7zu %5u %6u %9.3f %9s %9s %12s %9s\n", z.frame, z.pairs, z.queues, z.gbps, rm, rk, rd, rp);
    }
}

// One pass over every mode: its rows, and the baselines of this pass.
struct pass {
    std::vector<row> rows;
    std::map<size_t, row> mc, kern;
    std::vector<rr_row> rr;
};

void print_rr(const rr_row& r) {
    std::printf("%-12s %7zu  rtt p50 %8.1f us  p99 %8.1f us  p99.9 %8.1f us  (%" PRIu64 " round trips, %" PRIu64
                " lost)\n",
                r.mode.c_str(), r.frame, r.p50, r.p99, r.p999, r.samples, r.lost);
    std::fflush(stdout);
}

// rr mode: request/response through zc-netback (the first pair) and over
// the kernel's veth (UDP), at every measured size up to a standard frame.
bool run_rr(const run_opts& o, progress& prog, uint32_t& phase, pass& ps) {
    bool ok = true;
    std::vector<size_t> sizes;
    for (size_t s : o.sizes)
        if (s <= link::eth_frame_len) sizes.push_back(s);
    if (sizes.empty()) return true;
    {
        host h;
        std::string why;
        const uint32_t workers = o.workers ? o.workers : 1;
        std::vector<std::string> nb{"--workers", std::to_string(workers)};
        if (!h.start(o, 1, nb, link::netif_rx_ring_size, 1, &why)) {
            std::fprintf(stderr, "zc-vmbench: rr: cannot start the emulated host: %s\n", why.c_str());
            return false;
        }
        for (size_t s : sizes) {
            rr_row r;
            prog.step("zc-rr " + std::to_string(s) + " B", o.seconds);
            const bool measured = h.measure_rr(++phase, s, o.seconds, r, &why);
            prog.clear();
            if (!measured) {
                std::fprintf(stderr, "zc-vmbench: zc-rr %zu B: %s\n", s, why.c_str());
                ok = false;
                continue;
            }
            print_rr(r);
            ps.rr.push_back(r);
        }
    }
    for (size_t s : sizes) {
        std::string why;
        prog.step("kernel-rr " + std::to_string(s) + " B", o.seconds);
        auto k = bench::run_kernel_udp_rr(s, o.seconds, &why);
        prog.clear();
        if (!k || !k->error.empty()) {
            std::printf("%-12s %7zu  skipped: %s\n", "kernel-rr", s, k ? k->error.c_str() : why.c_str());
            continue;
        }
        rr_row r;
        r.mode = "kernel-rr";
        r.frame = s;
        r.samples = k->frames_received;
        r.lost = k->frames_lost + k->bad_frames;
        r.p50 = k->rtt_p50_us;
        r.p99 = k->rtt_p99_us;
        r.p999 = k->rtt_p999_us;
        print_rr(r);
        ps.rr.push_back(r);
    }
    return ok;
}

bool run_pass(const run_opts& o, progress& prog, uint32_t& phase, pass& ps) {
    std::vector<row>& rows = ps.rows;
    std::map<size_t, row>& mc = ps.mc;
    std::map<size_t, row>& kern = ps.kern;
    auto want = [&](const char* m) { return std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end(); };
    // Baselines first, so every later row prints its ratios.
    for (size_t s : o.sizes) {
        prog.step("memcpy " + std::to_string(s) + " B", std::min(o.seconds, 0.5));
        mc[s] = memcpy_row(s, std::min(o.seconds, 0.5));
        prog.clear();
        if (want("memcpy")) {
            rows.push_back(mc[s]);
            print_row(mc[s], nullptr, nullptr);
        }
    }
    if (want("kernel")) {
        std::string why;
        prog.step("kernel-udp " + std::to_string(o.sizes.front()) + " B", o.seconds);
        size_t ki = 0;
        auto k = bench::run_kernel_udp(o.sizes, o.seconds, &why, [&](const bench::kernel_result&) {
            if (++ki < o.sizes.size()) {
                prog.clear();
                prog.step("kernel-udp " + std::to_string(o.sizes[ki]) + " B", o.seconds);
            }
        });
        prog.clear();
        if (!k) {
            std::printf("%-12s skipped: %s\n", "kernel-udp", why.c_str());
        } else {
            for (auto& kr : *k) {
                row r;
                r.mode = "kernel-udp";
                r.frame = kr.frame;
                r.gbps = kr.gbps;
                r.mpps = kr.mpps;
                r.frames = kr.frames_received;
                r.sent = kr.frames_sent;
                r.intact = kr.integrity_ok;
                r.cpu_s_per_gb = kr.bytes_received ? kr.cpu_seconds / (double(kr.bytes_received) / 1e9) : 0;
                if (kr.frames_sent > kr.frames_received)
                    r.note = std::to_string(kr.frames_sent - kr.frames_received) + " lost (UDP)";
                if (!kr.error.empty()) r.note = kr.error;
                kern[r.frame] = r;
                rows.push_back(r);
                print_row(r, &mc[r.frame], nullptr);
            }
            // TCP bulk: the kernel's best case (segmentation offload on the
            // veth), shown beside the frame-by-frame UDP rows.
            const size_t bulk = 65536;
            prog.step("kernel-tcp bulk", o.seconds);
            auto t = bench::run_kernel_tcp(bulk, o.seconds, &why);
            prog.clear();
            if (!t) {
                std::printf("%-12s skipped: %s\n", "kernel-tcp", why.c_str());
            } else {
                row r;
                r.mode = "kernel-tcp";
                r.frame = bulk;
                r.gbps = t->gbps;
                r.mpps = t->mpps;
                r.frames = t->frames_received;
                r.sent = t->frames_sent;
                r.intact = t->integrity_ok;
                r.cpu_s_per_gb = t->bytes_received ? t->cpu_seconds / (double(t->bytes_received) / 1e9) : 0;
                r.note = "bulk stream, 64 KiB writes";
                if (!t->error.empty()) r.note = t->error;
                rows.push_back(r);
                print_row(r, nullptr, nullptr);
            }
        }
    }
    bool ok = true;
    for (const char* mode : {"zc", "double-copy", "pressure"}) {
        if (!want(mode)) continue;
        for (uint32_t pairs : o.pairs)
        for (uint32_t queues : o.queues) {
            std::vector<std::string> nb;
            // One data-path thread per queue (as Linux netback has a kthread
            // per queue), at most one per CPU: these guests share the CPUs.
            uint32_t workers = o.workers ? o.workers
                                         : std::max(1u, std::min(queues, uint32_t(std::thread::hardware_concurrency())));
            nb.insert(nb.end(), {"--workers", std::to_string(workers), "--max-queues",
                                 std::to_string(std::max(queues, 4u))});
            uint32_t rxb = link::netif_rx_ring_size;
            if (!std::strcmp(mode, "double-copy")) nb.push_back("--force-bounce");
            if (!std::strcmp(mode, "pressure")) {
                rxb = link::netif_rx_slots_min;
                nb.insert(nb.end(), {"--rx-queue", "32"});
            }
            host h;
            std::string why;
            if (!h.start(o, pairs, nb, rxb, queues, &why)) {
                std::fprintf(stderr, "zc-vmbench: %s: cannot start the emulated host: %s\n", mode, why.c_str());
                ok = false;
                continue;
            }
            for (size_t s : o.sizes) {
                row r;
                r.mode = mode;
                r.pairs = pairs;
                r.queues = queues;
                prog.step(std::string(mode) + " " + std::to_string(s) + " B, " + std::to_string(pairs) +
                              " pair(s), " + std::to_string(queues) + " queue(s)",
                          o.seconds);
                bool measured = h.measure(++phase, s, o.seconds, r, &why);
                prog.clear();
                if (!measured) {
                    std::fprintf(stderr, "zc-vmbench: %s %zu B: %s\n", mode, s, why.c_str());
                    ok = false;
                    break;
                }
                rows.push_back(r);
                print_row(r, &mc[s], kern.count(s) ? &kern[s] : nullptr);
                ok = ok && r.intact;
            }
        }
    }
    for (const char* amode : {"app", "app-headroom"}) {
        if (!want(amode)) continue;
        app_host h;
        h.o_perf = o.perf;
        h.mode = amode;
        std::string why;
        if (::access(o.stackd.c_str(), X_OK) != 0 || ::access(o.perf.c_str(), X_OK) != 0) {
            std::printf("%-12s skipped: zc-stackd or zc-perf not found (%s, %s)\n", "app", o.stackd.c_str(),
                        o.perf.c_str());
        } else if (!h.start(o, std::strcmp(amode, "app") ? "headroom" : "private", &why)) {
            std::fprintf(stderr, "zc-vmbench: app: cannot start the emulated host: %s\n", why.c_str());
            ok = false;
        } else {
            for (size_t s : o.sizes) {
                if (s > link::eth_frame_len) continue; // one datagram per frame: no IP fragments
                row r;
                prog.step(std::string(amode) + " " + std::to_string(s) + " B", o.seconds);
                bool measured = h.measure(s, o.seconds, r, &why);
                prog.clear();
                if (!measured) {
                    std::fprintf(stderr, "zc-vmbench: app %zu B: %s\n", s, why.c_str());
                    ok = false;
                    break;
                }
                r.pairs = 1;
                r.queues = 1;
                rows.push_back(r);
                print_row(r, &mc[s], kern.count(s) ? &kern[s] : nullptr);
                ok = ok && r.intact;
                for (auto& z : rows)
                    if (z.mode == "zc" && z.frame == s && z.pairs == 1 && z.queues == 1 && z.gbps > 0)
                        std::printf("%-12s %7zu  app/raw = %.3f (zc-perf app to app over raw netfront frames)\n",
                                    (std::string(amode) + "/zc").c_str(), s, r.gbps / z.gbps);
            }
        }
    }
    if (want("rr")) ok = run_rr(o, prog, phase, ps) && ok;
    return ok;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The same row (mode, frame, pairs, queues) of a pass, or null.
const row* same_row(const pass& p, const row& like) {
    for (auto& r : p.rows)
        if (r.mode == like.mode && r.frame == like.frame && r.pairs == like.pairs && r.queues == like.queues) return &r;
    return nullptr;
}

row median_row(const std::vector<const row*>& rs) {
    row m = *rs.front();
    auto med = [&rs](double row::*f) {
        std::vector<double> v;
        for (const row* r : rs) v.push_back(r->*f);
        return median(std::move(v));
    };
    m.gbps = med(&row::gbps);
    m.mpps = med(&row::mpps);
    m.cpu_s_per_gb = med(&row::cpu_s_per_gb);
    m.segs_per_pkt = med(&row::segs_per_pkt);
    m.batches_per_pkt = med(&row::batches_per_pkt);
    m.notifies_per_pkt = med(&row::notifies_per_pkt);
    m.fallbacks_per_pkt = med(&row::fallbacks_per_pkt);
    m.nb_us_per_pkt = med(&row::nb_us_per_pkt);
    m.gbps_min = m.gbps_max = rs.front()->gbps;
    m.frames = m.sent = 0;
    m.intact = true;
    for (const row* r : rs) {
        m.gbps_min = std::min(m.gbps_min, r->gbps);
        m.gbps_max = std::max(m.gbps_max, r->gbps);
        m.frames += r->frames;
        m.sent += r->sent;
        m.intact = m.intact && r->intact;
    }
    m.passes = uint32_t(rs.size());
    m.note = "median of " + std::to_string(rs.size()) + " passes";
    return m;
}

// --repeat: every row (and baseline) as the median over the passes.
pass median_pass(const std::vector<pass>& passes) {
    pass agg;
    for (const row& r : passes.front().rows) {
        std::vector<const row*> rs;
        for (const pass& p : passes)
            if (const row* x = same_row(p, r)) rs.push_back(x);
        agg.rows.push_back(median_row(rs));
    }
    using baselines = std::map<size_t, row> pass::*;
    for (baselines which : {&pass::mc, &pass::kern})
        for (auto& [frame, r] : passes.front().*which) {
            std::vector<const row*> rs;
            for (const pass& p : passes)
                if (auto it = (p.*which).find(frame); it != (p.*which).end()) rs.push_back(&it->second);
            (agg.*which)[frame] = median_row(rs);
        }
    for (const rr_row& r : passes.front().rr) {
        std::vector<double> p50, p99, p999;
        rr_row m = r;
        m.samples = m.lost = 0;
        for (const pass& p : passes)
            for (const rr_row& x : p.rr)
                if (x.mode == r.mode && x.frame == r.frame) {
                    p50.push_back(x.p50);
                    p99.push_back(x.p99);
                    p999.push_back(x.p999);
                    m.samples += x.samples;
                    m.lost += x.lost;
                }
        m.p50 = median(p50);
        m.p99 = median(p99);
        m.p999 = median(p999);
        agg.rr.push_back(m);
    }
    return agg;
}

// --repeat: the zc rows with their spread, and each ratio taken within a
// pass (the baselines ran minutes apart otherwise), then its median and
// min-max over the passes.
void print_repeat_summary(const std::vector<pass>& passes) {
    std::printf("\nzc over %zu interleaved passes: median (min-max); ratios within each pass:\n", passes.size());
    std::printf("%7s %5s %6s %24s %20s %20s %20s %8s %9s\n", "frame", "pairs", "queues", "zc Gbit/s", "zc/dbl-copy",
                "zc/kernel-udp", "zc/kernel-tcp", "fb/pkt", "nb-us/pkt");
    auto spread = [](std::vector<double> v, const char* fmt, char* out, size_t n) {
        if (v.empty()) {
            std::snprintf(out, n, "-");
            return;
        }
        const double m = median(v);
        std::sort(v.begin(), v.end());
        char f[64];
        std::snprintf(f, sizeof f, "%s (%s-%s)", fmt, fmt, fmt);
        std::snprintf(out, n, f, m, v.front(), v.back());
    };
    for (const row& z : passes.front().rows) {
        if (z.mode != "zc") continue;
        std::vector<double> g, rd, rk, rt, fb, nb;
        for (const pass& p : passes) {
            const row* x = same_row(p, z);
            if (!x) continue;
            g.push_back(x->gbps);
            fb.push_back(x->fallbacks_per_pkt);
            nb.push_back(x->nb_us_per_pkt);
            row d = *x;
            d.mode = "double-copy";
            if (const row* y = same_row(p, d); y && y->gbps > 0) rd.push_back(x->gbps / y->gbps);
            if (auto k = p.kern.find(z.frame); k != p.kern.end() && k->second.gbps > 0)
                rk.push_back(x->gbps / k->second.gbps);
            for (const row& t : p.rows)
                if (t.mode == "kernel-tcp" && t.gbps > 0) rt.push_back(x->gbps / t.gbps);
        }
        char cg[64], cd[64], ck[64], ct[64];
        spread(g, "%.2f", cg, sizeof cg);
        spread(rd, "%.2f", cd, sizeof cd);
        spread(rk, "%.2f", ck, sizeof ck);
        spread(rt, "%.2f", ct, sizeof ct);
        std::printf("%7zu %5u %6u %24s %20s %20s %20s %8.3f %9.3f\n", z.frame, z.pairs, z.queues, cg, cd, ck, ct,
                    median(fb), median(nb));
    }
}

int run(run_opts o) {
    std::signal(SIGPIPE, SIG_IGN);
    progress prog;
    {
        uint32_t zc_modes = 0;
        for (const char* m : {"zc", "double-copy", "pressure"})
            zc_modes += std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end();
        bool kernel = std::find(o.modes.begin(), o.modes.end(), "kernel") != o.modes.end();
        uint32_t app_sizes = 0;
        for (size_t s : o.sizes) app_sizes += s <= link::eth_frame_len;
        uint32_t app_modes = 0;
        for (const char* m : {"app", "app-headroom"})
            app_modes += std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end();
        prog.total = o.repeat * (uint32_t(o.sizes.size()) * (1 + (kernel ? 1 : 0) +
                                                             zc_modes * uint32_t(o.pairs.size() * o.queues.size())) +
                                 (kernel ? 1 : 0) + app_modes * app_sizes +
                                 (std::find(o.modes.begin(), o.modes.end(), "rr") != o.modes.end() ? 2 * app_sizes : 0));
    }
    std::printf("%-12s %7s %5s %3s %9s %8s %9s %8s %8s %7s %7s %7s %6s %7s %-6s %s\n", "mode", "frame", "pairs", "q",
                "Gbit/s", "Mpps", "cpu-s/GB", "/memcpy", "/kernel", "seg/pkt", "hc/pkt", "ntf/pkt", "fb/pkt",
                "nb-us/pkt", "intact", "note");
    uint32_t phase = 0;
    bool ok = true;
    std::vector<pass> passes(o.repeat);
    for (uint32_t i = 0; i < o.repeat; ++i) {
        if (o.repeat > 1) std::printf("-- pass %u of %u\n", i + 1, o.repeat);
        ok = run_pass(o, prog, phase, passes[i]) && ok;
    }
    pass agg = o.repeat == 1 ? passes[0] : median_pass(passes);
    std::vector<row>& rows = agg.rows;
    std::map<size_t, row>& mc = agg.mc;
    std::map<size_t, row>& kern = agg.kern;
    if (o.repeat == 1) print_summary(rows, mc, kern);
    else print_repeat_summary(passes);
    if (!agg.rr.empty()) {
        std::printf("\nround trips%s:\n", o.repeat > 1 ? " (median of the passes' percentiles)" : "");
        for (const rr_row& r : agg.rr) print_rr(r);
    }
    // Machine-readable outputs.
    if (FILE* f = std::fopen(o.json.c_str(), "w")) {
        std::fprintf(f, "{\"tool\":\"zc-vmbench\",\"seconds\":%.3f,\"rows\":[", o.seconds);
        for (size_t i = 0; i < rows.size(); i++) {
            auto& r = rows[i];
            double rm = mc.count(r.frame) && mc[r.frame].gbps > 0 ? r.gbps / mc[r.frame].gbps : 0;
            double rk = kern.count(r.frame) && kern[r.frame].gbps > 0 ? r.gbps / kern[r.frame].gbps : 0;
            std::fprintf(f,
                         "%s{\"mode\":\"%s\",\"frame\":%zu,\"pairs\":%u,\"queues\":%u,\"gbps\":%.4f,\"mpps\":%.4f,"
                         "\"cpu_s_per_gb\":%.4f,\"ratio_memcpy\":%.4f,\"ratio_kernel\":%.4f,\"frames\":%" PRIu64
                         ",\"sent\":%" PRIu64 ",\"intact\":%s,\"grant_copy_segments_per_pkt\":%.3f,"
                         "\"grant_copy_batches_per_pkt\":%.4f,\"notifies_per_pkt\":%.4f,\"fallbacks_per_pkt\":%.4f,"
                         "\"netback_us_per_pkt\":%.4f,\"passes\":%u,\"gbps_min\":%.4f,\"gbps_max\":%.4f}",
                         i ? "," : "", r.mode.c_str(), r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, rm,
                         rk, r.frames, r.sent, r.intact ? "true" : "false", r.segs_per_pkt, r.batches_per_pkt,
                         r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.passes,
                         r.passes > 1 ? r.gbps_min : r.gbps, r.passes > 1 ? r.gbps_max : r.gbps);
        }
        std::fprintf(f, "],\"latency\":[");
        for (size_t i = 0; i < agg.rr.size(); i++) {
            const rr_row& r = agg.rr[i];
            std::fprintf(f,
                         "%s{\"mode\":\"%s\",\"frame\":%zu,\"samples\":%" PRIu64 ",\"lost\":%" PRIu64
                         ",\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f}",
                         i ? "," : "", r.mode.c_str(), r.frame, r.samples, r.lost, r.p50, r.p99, r.p999);
        }
        std::fprintf(f, "]}\n");
        std::fclose(f);
    }
    if (FILE* f = std::fopen(o.csv.c_str(), "w")) {
        std::fprintf(f, "mode,frame,pairs,queues,gbps,mpps,cpu_s_per_gb,intact,seg_per_pkt,batches_per_pkt,"
                        "notifies_per_pkt,fallbacks_per_pkt,netback_us_per_pkt,passes,gbps_min,gbps_max\n");
        for (auto& r : rows)
            std::fprintf(f, "%s,%zu,%u,%u,%.4f,%.4f,%.4f,%d,%.3f,%.4f,%.4f,%.4f,%.4f,%u,%.4f,%.4f\n", r.mode.c_str(),
                         r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, r.intact ? 1 : 0, r.segs_per_pkt,
                         r.batches_per_pkt, r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.passes,
                         r.passes > 1 ? r.gbps_min : r.gbps, r.passes > 1 ? r.gbps_max : r.gbps);
        std::fclose(f);
    }
    std::string plot = ZC_PLOT_SH;
    if (!o.png.empty() && ::access(plot.c_str(), X_OK) == 0) {
        std::string cmd = "ZC_PLOT_LOGY=1 '" + plot + "' '" + o.json + "' '" + o.png + "' >/dev/null 2>&1";
        if (std::system(cmd.c_str()) == 0) std::printf("plot: %s\n", o.png.c_str());
    }
    std::printf("json: %s  csv: %s\n", o.json.c_str(), o.csv.c_str());
    std::printf("ratios: /memcpy and /kernel are Gbit/s over the baseline of the same frame size in this run;\n"
                "seg/pkt, hc/pkt (grant-copy hypercalls), ntf/pkt and fb/pkt (bounce copies) are zc-netback's\n"
                "counters per delivered frame: they carry over to a real Xen host where emulated timings do not.\n");
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc > 1 && !std::strcmp(argv[1], "guest")) {
        guest_opts g;
        for (int i = 2; i + 1 < argc; i += 2) {
            std::string a = argv[i];
            if (a == "--role") g.role = argv[i + 1];
            else if (a == "--rx-buffers") g.rx_buffers = uint32_t(std::atoi(argv[i + 1]));
            else if (a == "--queues") g.queues = uint32_t(std::atoi(argv[i + 1]));
        }
        if (g.role != "send" && g.role != "recv") return 2;
        return run_guest(g);
    }
    run_opts o;
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    o.self = n > 0 ? std::string(self, size_t(n)) : argv[0];
    o.netback = sibling(o.self, "netback", "zc-netback");
    o.stackd = sibling(o.self, "uapi", "zc-stackd");
    o.perf = sibling(o.self, "apps", "zc-perf");
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        bool has = i + 1 < argc;
        if (a == "-h" || a == "--help") {
            std::fputs(usage_text, stdout);
            return 0;
        } else if (a == "--quick") {
            o.sizes = {64, 1500, 9000};
            o.seconds = 0.3;
        } else if (a == "--sizes" && has) {
            if (!parse_list(argv[++i], 60, 65535, "frame sizes", o.sizes)) return 2;
        } else if (a == "--modes" && has) {
            o.modes = split(argv[++i]);
            for (auto& m : o.modes)
                if (m != "zc" && m != "double-copy" && m != "pressure" && m != "kernel" && m != "memcpy" &&
                    m != "app" && m != "app-headroom" && m != "rr") {
                    std::fprintf(stderr, "zc-vmbench: unknown mode '%s'\n", m.c_str());
                    return 2;
                }
        } else if (a == "--pairs" && has) {
            if (!parse_list(argv[++i], 1, 64, "guest pairs", o.pairs)) return 2;
        } else if (a == "--queues" && has) {
            if (!parse_list(argv[++i], 1, 8, "queues", o.queues)) return 2;
        } else if (a == "--workers" && has) {
            long v = std::atol(argv[++i]);
            if (v < 1 || v > 64) {
                std::fprintf(stderr, "zc-vmbench: --workers takes 1..64\n");
                return 2;
            }
            o.workers = uint32_t(v);
        } else if (a == "--seconds" && has) {
            o.seconds = std::atof(argv[++i]);
            if (!(o.seconds >= 0.05 && o.seconds <= 600)) {
                std::fprintf(stderr, "zc-vmbench: --seconds takes 0.05..600\n");
                return 2;
            }
        } else if (a == "--repeat" && has) {
            long v = std::atol(argv[++i]);
            if (v < 1 || v > 100) {
                std::fprintf(stderr, "zc-vmbench: --repeat takes 1..100\n");
                return 2;
            }
            o.repeat = uint32_t(v);
        } else if (a == "--json" && has) o.json = argv[++i];
        else if (a == "--csv" && has) o.csv = argv[++i];
        else if (a == "--png" && has) o.png = argv[++i];
        else if (a == "--netback" && has) o.netback = argv[++i];
        else {
            std::fprintf(stderr, "zc-vmbench: bad or incomplete option '%s'\n\n%s", a.c_str(), usage_text);
            return 2;
        }
    }
    if (::access(o.netback.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "zc-vmbench: zc-netback not found at %s (use --netback PATH)\n", o.netback.c_str());
        return 2;
    }
    return run(o);
}
