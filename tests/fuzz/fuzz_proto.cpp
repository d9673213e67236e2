// SPDX-License-Identifier: MIT
// Fuzz target for proto's receive path: every input is a short conversation
// with a fresh host (so ARP state carries across its frames), checked
// against the invariants a peer must never be able to break: no read or
// write outside the given buffers (ASan), outcome counters that add up, UDP
// payload offsets inside the frame, replies inside the reply buffer and
// themselves valid, and every ARP waiter cookie handed back exactly once.
#include "fuzz_proto.hpp"

#include <cstring>
#include <memory>

#include "proto/arp.hpp"
#include "proto/checksum.hpp"
#include "proto/icmp.hpp"

namespace zc::proto::fuzz {

totals& stats() noexcept {
    static totals t;
    return t;
}

namespace {

#define FUZZ_CHECK(x)                                                          \
    do {                                                                       \
        if (!(x)) __builtin_trap();                                            \
    } while (0)

const mac_addr our_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}};
const ipv4_addr our_ip = ipv4_addr::of(10, 0, 0, 1);

uint64_t outcomes(const host_counters& n) {
    return n.udp_delivered + n.icmp_echo_replied + n.arp_request_replied + n.arp_learned + n.bad_eth +
           n.vlan_tagged + n.not_for_us_mac + n.unknown_ethertype + n.bad_ip_hdr + n.bad_ip_csum +
           n.ip_fragments + n.ip_bad_src + n.not_for_us + n.unknown_ip_proto + n.bad_udp + n.bad_udp_csum +
           n.bad_icmp + n.bad_icmp_csum + n.icmp_ignored + n.arp_bad + n.arp_conflict + n.arp_ignored +
           n.reply_no_space;
}

// Outstanding ARP waiter cookies: each must come back exactly once.
struct waiters {
    static constexpr size_t cap = 64;
    uint64_t live[cap];
    size_t n = 0;
    void add(uint64_t c) {
        FUZZ_CHECK(n < cap);
        live[n++] = c;
    }
    void back(uint64_t c) {
        for (size_t i = 0; i < n; i++)
            if (live[i] == c) {
                live[i] = live[--n];
                return;
            }
        __builtin_trap();  // unknown or returned twice
    }
};

void check_reply(const uint8_t* r, size_t len) {
    eth_view e;
    FUZZ_CHECK(parse_eth({r, len}, e) == eth_error::none);
    FUZZ_CHECK(e.src == our_mac && !e.has_vlan);
    std::span<const uint8_t> l3{r + e.hdr_len, len - e.hdr_len};
    if (e.type == ethertype::arp) {
        arp_view a;
        FUZZ_CHECK(parse_arp(l3, a) == arp_error::none);
        FUZZ_CHECK(a.op == arp_op::reply && a.spa == our_ip && a.sha == our_mac && a.tha == e.dst);
        return;
    }
    FUZZ_CHECK(e.type == ethertype::ipv4);
    ipv4_view ip;
    FUZZ_CHECK(parse_ipv4(l3, ip) == ipv4_error::none);
    FUZZ_CHECK(ip.src == our_ip && ip.proto == ip_proto::icmp && ip.total_len == l3.size());
    auto msg = l3.subspan(ip.hdr_len);
    FUZZ_CHECK(msg.size() >= icmp_echo_hdr_len && msg[0] == icmp_type::echo_reply && msg[1] == 0);
    FUZZ_CHECK(csum_verify(msg.data(), msg.size()));
}

} // namespace
} // namespace zc::proto::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace zc::proto;
    using namespace zc::proto::fuzz;
    totals& t = stats();
    t.inputs++;
    if (size < 2) return 0;
    const uint8_t ctl = data[0];
    const rx_csum csum = (ctl & 3) == 3 ? rx_csum::verify : rx_csum(ctl & 3);
    const bool inplace = ctl & 4;
    const size_t reply_cap = (ctl & 8) ? data[1] : 65536 + 64;

    host_config c;
    c.mac = our_mac;
    c.ip = our_ip;
    c.gateway = ipv4_addr::of(10, 0, 0, 254);
    c.reply_broadcast_ping = ctl & 16;
    // Tiny ARP table so that eviction, full tables and full queues happen.
    c.arp.capacity = 3;
    c.arp.max_waiters = 2;
    c.arp.reachable_ms = 3000;
    c.arp.refresh_ms = 1000;
    c.arp.retry_ms = 500;
    c.arp.max_requests = 2;
    auto hr = host::create(c);
    FUZZ_CHECK(hr.ok());
    host& h = *hr;
    waiters w;
    uint64_t next_cookie = 1, now = 0;
    std::unique_ptr<uint8_t[]> reply(new uint8_t[reply_cap]);

    size_t pos = 2;
    for (size_t i = 0; i < max_frames && pos + 2 <= size; i++) {
        size_t len = size_t(data[pos]) << 8 | data[pos + 1];
        pos += 2;
        if (len > size - pos) len = size - pos;
        // An exactly-sized copy, so that ASan sees any read past `len`.
        std::unique_ptr<uint8_t[]> frame(new uint8_t[len ? len : 1]);
        if (len) std::memcpy(frame.get(), data + pos, len);
        pos += len;
        now += 400;

        // Packets waiting for ARP: to the frame's IPv4 source when it has one.
        if (len >= 34) {
            uint64_t k = next_cookie++;
            auto r = h.resolve(ipv4_addr::load(frame.get() + 26), now, &k);
            if (r.st == zc::proto::arp_cache::status::pending) w.add(k);
        }

        const uint64_t before = h.counters().rx_frames;
        rx_verdict v = inplace ? h.receive_inplace({frame.get(), len}, csum, now)
                               : h.receive({frame.get(), len}, csum, {reply.get(), reply_cap}, now);
        const host_counters& n = h.counters();
        FUZZ_CHECK(n.rx_frames == before + 1);
        FUZZ_CHECK(outcomes(n) == n.rx_frames);
        t.frames++;
        t.by_action[size_t(v.action)]++;
        t.by_reason[size_t(v.reason)]++;
        FUZZ_CHECK((v.action == rx_action::drop) == (v.reason != drop_reason::none));
        switch (v.action) {
        case rx_action::udp:
            FUZZ_CHECK(v.udp.payload_off >= udp_headroom);
            FUZZ_CHECK(size_t(v.udp.payload_off) + v.udp.payload_len <= len);
            FUZZ_CHECK(v.udp.dst_ip == our_ip || v.udp.broadcast);
            break;
        case rx_action::reply:
            FUZZ_CHECK(v.reply_len <= (inplace ? len : reply_cap));
            check_reply(inplace ? frame.get() : reply.get(), v.reply_len);
            break;
        case rx_action::drop:
        case rx_action::consumed:
            FUZZ_CHECK(v.reply_len == 0);
            break;
        }
        if (v.echo.valid) {
            FUZZ_CHECK(v.reason == drop_reason::icmp_ignored);
            FUZZ_CHECK(v.echo.data_off >= 42 && size_t(v.echo.data_off) + v.echo.data_len <= len);
            t.echo_replies++;
        }
        for (uint64_t k : v.released) w.back(k);
        t.released += v.released.size();

        zc::proto::arp_cache::event ev;
        while (h.arp_expire(now, ev)) {
            for (uint64_t k : ev.waiters) w.back(k);
            t.failed += ev.waiters.size();
        }
    }
    zc::proto::arp_cache::event ev;
    while (h.arp().drain(ev)) {
        for (uint64_t k : ev.waiters) w.back(k);
        t.failed += ev.waiters.size();
    }
    FUZZ_CHECK(w.n == 0);
    FUZZ_CHECK(h.arp().size() == 0);
    return 0;
}
