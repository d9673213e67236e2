// SPDX-License-Identifier: MIT
// zc-vmbench's guest role (guest.hpp): sends, receives, pings or echoes
// frames through the userspace netfront, never spinning.
#include "guest.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <poll.h>
#include <unistd.h>
#include <vector>

#include "bench/kernel_path.hpp"
#include "hv/hv.hpp"
#include "proto/ether.hpp"
#include "proto/ipv4.hpp"
#include "proto/offload.hpp"
#include "proto/udp.hpp"
#include "proc.hpp"

namespace zc::vmbench {
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

// ---------------------------------------------------------------------------
// Guest role: the commands of guest.hpp.

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

// The header of a data frame of this phase from `src` to `dst`, written
// into `tmpl` (a template of make_template()).
bench_hdr* data_header(std::vector<uint8_t>& tmpl, const link::mac_addr& src, const link::mac_addr& dst,
                       uint32_t phase) {
    auto* h = reinterpret_cast<bench_hdr*>(tmpl.data());
    std::memcpy(h->dst, dst.data(), 6);
    std::memcpy(h->src, src.data(), 6);
    h->type_be = htons(ethertype);
    h->magic = magic;
    h->phase = phase;
    h->len = uint32_t(tmpl.size());
    h->kind = k_data;
    return h;
}

// Sends frames for `seconds` as fast as the TX ring takes them, waiting on
// the event channel when it is full (never spinning), then `end_copies` end
// markers on every queue, after the data so they arrive last; reports
// {"sent","busy","seconds"}. `frame(seq, end)` is the frame of sequence
// number `seq`, or the end marker after `seq` frames.
template <class Frame>
int send_for(link::netfront& nf, size_t size, double seconds, Frame frame, int end_copies = 1) {
    uint64_t sent = 0, busy = 0;
    uint32_t nq = nf.queues();
    double t0 = now_s(), end = t0 + seconds;
    while (now_s() < end) {
        int rc = nf.send(frame(sent, false), size, uint32_t(sent % nq));
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
    // A TX ring that stays full (zc-netback gone) ends them: 10 s in all.
    int tries = 0;
    for (int c = 0; c < end_copies && tries < 500; c++) {
        for (uint32_t q = 0; q < nq; q++)
            for (; tries < 500; tries++) {
                int rc = nf.send(frame(sent, true), std::max<size_t>(size, 60), q);
                if (rc != -EAGAIN) break;
                nf.wait(20);
            }
        if (c + 1 < end_copies) nf.wait(2); // spaced out: a full receive queue drops some
    }
    // Let the last TX responses come back before reporting.
    for (int i = 0; i < 50; i++) nf.wait(10);
    say("{\"sent\":%" PRIu64 ",\"busy\":%" PRIu64 ",\"seconds\":%.6f}", sent, busy, t1 - t0);
    return 0;
}

int guest_send(link::netfront& nf, uint32_t phase, size_t size, double seconds, const link::mac_addr& dst) {
    auto tmpl = make_template(size);
    auto* h = data_header(tmpl, nf.mac(), dst, phase);
    return send_for(nf, size, seconds, [&](uint64_t seq, bool end) {
        h->seq = seq;
        h->kind = end ? k_end : k_data;
        return tmpl.data();
    });
}

// Uplink mode: UDP/IPv4 datagrams to a kernel socket behind an uplink, in
// the kernel path's payload format (bench/kernel_path.hpp), so its receiver
// checks every byte. The payload past the sequence number depends only on
// seq & 0xff: one prepared frame per value, and only the sequence number is
// written per frame, as guest_send writes its header. UDP checksum 0 (none,
// RFC 768), as the kernel path's sender leaves it to veth's offload.
int guest_send_udp(link::netfront& nf, size_t size, double seconds, const link::mac_addr& dst,
                   proto::ipv4_addr src_ip, proto::ipv4_addr dst_ip, uint16_t port) {
    constexpr size_t l2_l4 = bench::eth_ip_udp_overhead;
    const size_t payload = size - l2_l4;
    auto build = [&](std::vector<uint8_t>& f, uint64_t seq, bool end) {
        f.assign(size, 0);
        std::span<uint8_t> out(f);
        proto::write_eth(out, dst, nf.mac(), proto::ethertype::ipv4);
        proto::ipv4_params ip;
        ip.src = src_ip;
        ip.dst = dst_ip;
        ip.proto = proto::ip_proto::udp;
        ip.payload_len = uint16_t(size - 14 - proto::ipv4_min_hdr_len);
        proto::write_ipv4(out.subspan(14), ip);
        proto::udp_params u;
        u.src = src_ip;
        u.dst = dst_ip;
        u.src_port = u.dst_port = port;
        u.payload_len = uint16_t(payload);
        proto::write_udp(out.subspan(14 + proto::ipv4_min_hdr_len), u, 0, proto::tx_csum::none);
        bench::write_udp_payload(f.data() + l2_l4, payload, seq, end);
    };
    std::vector<std::vector<uint8_t>> frames(256);
    for (uint64_t k = 0; k < frames.size(); k++) build(frames[k], k, false);
    std::vector<uint8_t> end_frame;
    return send_for(
        nf, size, seconds,
        [&](uint64_t seq, bool end) {
            if (end) {
                build(end_frame, seq, true);
                return end_frame.data();
            }
            uint8_t* f = frames[seq & 0xff].data();
            std::memcpy(f + l2_l4, &seq, sizeof seq);
            return f;
        },
        8);
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
    auto* h = data_header(tmpl, nf.mac(), dst, phase);
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

// Soak: every guest sends to one peer and receives from whoever sends to
// it, both at once, never spinning. Frame sizes cycle through soak_sizes
// (mixed: minimum, small, MTU, a page, jumbo, the largest netif frame); the
// pattern depends only on the offset, so one template checks every size.
// After `seconds` it sends end markers and drains until its own sender's
// end marker or `grace` seconds. Reports {"sent","received","bytes","bad",
// "foreign","stale","ends"}: received counts this phase's data frames
// addressed to it; foreign, frames addressed to another MAC (flooded while
// that MAC's vif was gone).
constexpr size_t soak_sizes[] = {60, 1514, 64, 9000, 128, 4096, 1500, 256, 65535, 576};

int guest_soak(link::netfront& nf, uint32_t phase, double seconds, const link::mac_addr& dst, double grace,
               double rate) {
    auto tmpl = make_template(65535);
    auto* h = data_header(tmpl, nf.mac(), dst, phase);
    std::vector<uint8_t> buf(65536 + 64);
    uint64_t sent = 0, received = 0, bytes = 0, bad = 0, foreign = 0, stale = 0, ends = 0;
    auto drain = [&] {
        bool any = false;
        while (auto n = nf.recv(buf.data(), buf.size())) {
            any = true;
            auto* r = reinterpret_cast<const bench_hdr*>(buf.data());
            if (*n < hdr_len || r->magic != magic || r->type_be != htons(ethertype) || r->kind == k_hello) continue;
            if (std::memcmp(r->dst, nf.mac().data(), 6) != 0) {
                foreign++;
                continue;
            }
            if (r->phase != phase) {
                stale++;
                continue;
            }
            if (r->kind == k_end) {
                ends++;
                continue;
            }
            received++;
            bytes += *n;
            if (*n != r->len || std::memcmp(buf.data() + hdr_len, tmpl.data() + hdr_len, *n - hdr_len) != 0) bad++;
        }
        return any;
    };
    const double start = now_s(), end = start + seconds;
    while (now_s() < end) {
        if (rate > 0) {
            // Paced: `rate` frames a second; between them the guest sleeps
            // on its event channel (RX frames wake it), as a receiver that
            // keeps posting buffers does.
            const double due = start + double(sent) / rate;
            if (now_s() < due) {
                if (!drain()) nf.wait(std::max(1, int((due - now_s()) * 1000)));
                continue;
            }
        }
        h->seq = sent;
        h->kind = k_data;
        const size_t size = soak_sizes[sent % std::size(soak_sizes)];
        h->len = uint32_t(size);
        int rc = nf.send(tmpl.data(), size);
        if (rc == -EAGAIN) {
            if (!drain()) nf.wait(5); // TX responses or RX frames wake us
            continue;
        }
        if (rc < 0) {
            say("{\"error\":\"send: %s\"}", std::strerror(-rc));
            return 1;
        }
        sent++;
        if ((sent & 15) == 0) drain();
    }
    h->kind = k_end;
    h->len = 60;
    for (int tries = 0; tries < 200 && nf.send(tmpl.data(), 60) == -EAGAIN; tries++) {
        drain();
        nf.wait(10);
    }
    const double until = now_s() + grace;
    while (ends == 0 && now_s() < until)
        if (!drain()) nf.wait(20);
    drain();
    say("{\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"bad\":%" PRIu64
        ",\"foreign\":%" PRIu64 ",\"stale\":%" PRIu64 ",\"ends\":%" PRIu64 "}",
        sent, received, bytes, bad, foreign, stale, ends);
    return 0;
}

} // namespace

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
        } else if (line.rfind("udp ", 0) == 0 && nf) {
            // udp <size> <seconds> <dst-mac> <src-ip> <dst-ip> <port>: uplink mode's sender.
            size_t size = 0;
            double secs = 0;
            char mac[32] = {}, sip[32] = {}, dip[32] = {};
            unsigned port = 0;
            link::mac_addr dst{};
            proto::ipv4_addr src_ip, dst_ip;
            int k = std::sscanf(line.c_str(), "udp %zu %lf %31s %31s %31s %u", &size, &secs, mac, sip, dip, &port);
            if (k < 6 || size < bench::eth_ip_udp_overhead + bench::min_udp_payload || size > 65535 || port == 0 ||
                port > 65535 || !parse_mac(mac, dst, mac_allow_short) || !proto::parse_ipv4_addr(sip, src_ip) ||
                !proto::parse_ipv4_addr(dip, dst_ip))
                say("{\"error\":\"bad command\"}");
            else guest_send_udp(*nf, size, secs, dst, src_ip, dst_ip, uint16_t(port));
        } else if (line.rfind("soak ", 0) == 0 && nf) {
            // soak <phase> <seconds> <dst-mac> <grace> <rate>: send to dst-mac
            // (rate frames/s, 0: as fast as the ring takes them) and receive at once.
            unsigned phase = 0;
            double secs = 0, grace = 0, rate = 0;
            char mac[32] = {};
            link::mac_addr dst{};
            if (std::sscanf(line.c_str(), "soak %u %lf %31s %lf %lf", &phase, &secs, mac, &grace, &rate) != 5 ||
                !parse_mac(mac, dst, mac_allow_short))
                say("{\"error\":\"bad command\"}");
            else guest_soak(*nf, phase, secs, dst, grace, rate);
        } else if (line == "reopen" && nf) {
            // netfront closed and opened again inside the guest (a module
            // reload): Closing/Closed, then Initialising on the same vif.
            int rc = nf->disconnect();
            for (int i = 0; i < 100 && rc == -EBUSY; i++) { // grants the backend still maps
                ::usleep(20000);
                rc = nf->disconnect();
            }
            nf.reset();
            link::netfront_options no;
            no.rx_buffers = o.rx_buffers;
            no.max_queues = o.queues;
            auto n = link::netfront::connect(**port, no, &why);
            if (rc < 0 || !n) {
                say("error reopen: %s", rc < 0 ? std::strerror(-rc) : why.c_str());
                continue;
            }
            nf = std::move(*n);
            say("connected %s", to_string(nf->mac()).c_str());
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

} // namespace zc::vmbench
