// SPDX-License-Identifier: MIT
// stack/proto micro-benchmarks, each next to a memcpy of the same bytes in
// the same run, so that results are quoted as ratios (docs/ARCHITECTURE.md, "Measuring"):
//
//   BM_memcpy/<bytes>              memcpy of <bytes> between two buffers: the baseline
//   BM_checksum/<bytes>            csum_partial (RFC 1071) over <bytes>
//   BM_checksum_naive/<bytes>      a 16-bit-word-at-a-time loop, for scale
//   BM_dispatch_udp/<frame bytes>  host::receive of a UDP frame for us, L4 checksum
//                                  verified in software (rx_csum::verify)
//   BM_dispatch_udp_offload/<b>    the same frame marked NETRXF_data_validated:
//                                  header checks only, so constant in size
//   BM_dispatch_ping/<frame bytes> host::receive of an echo request, reply into
//                                  a second buffer (verify + copy + incremental csum)
//   BM_udp_tx_headroom/<b>/<mode>  host::udp_in_headroom: headers written in front
//                                  of a payload in place; mode 0 = software checksum
//                                  (one pass over the payload), 1 = offload
//   BM_arp_resolve_hit             host::resolve of a cached neighbour
//
// Sizes 64/1500/9000 are whole Ethernet frames (no FCS); the UDP payload is
// the frame minus 42 bytes of headers.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "proto/checksum.hpp"
#include "proto/host.hpp"
#include "proto/icmp.hpp"

namespace {

using namespace zc::proto;

const mac_addr mac_a{{0x02, 0, 0, 0, 0, 0x0a}};
const mac_addr mac_b{{0x02, 0, 0, 0, 0, 0x0b}};
const ipv4_addr ip_a = ipv4_addr::of(10, 0, 0, 1);
const ipv4_addr ip_b = ipv4_addr::of(10, 0, 0, 2);

host make_host(const mac_addr& m, ipv4_addr ip) {
    host_config c;
    c.mac = m;
    c.ip = ip;
    c.mtu = 9000;
    auto h = host::create(c);
    if (!h) std::abort();
    return std::move(*h);
}

std::vector<uint8_t> pattern(size_t n) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; i++) b[i] = uint8_t(i * 31 + 7);
    return b;
}

// A UDP frame of `frame_len` bytes from b to a, built by proto's own TX path.
std::vector<uint8_t> udp_frame(size_t frame_len) {
    host b = make_host(mac_b, ip_b);
    std::vector<uint8_t> f = pattern(frame_len);
    udp_flow fl{mac_a, ip_a, 4000, 5000};
    tx_headers t;
    if (b.udp_in_headroom(f, udp_headroom, frame_len - udp_headroom, fl, tx_csum::full, t) < 0) std::abort();
    return f;
}

void BM_memcpy(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> src = pattern(n), dst(n);
    for (auto _ : st) {
        std::memcpy(dst.data(), src.data(), n);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}

void BM_checksum(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> src = pattern(n);
    for (auto _ : st) {
        benchmark::DoNotOptimize(src.data());
        uint32_t s = csum_partial(src.data(), n);
        benchmark::DoNotOptimize(s);
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}

void BM_checksum_naive(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> src = pattern(n);
    for (auto _ : st) {
        benchmark::DoNotOptimize(src.data());
        uint32_t s = 0;
        for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(src[i]) << 8 | src[i + 1];
        while (s >> 16) s = (s & 0xffff) + (s >> 16);
        benchmark::DoNotOptimize(s);
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}

void dispatch_udp(benchmark::State& st, rx_csum csum) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> f = udp_frame(n);
    host a = make_host(mac_a, ip_a);
    for (auto _ : st) {
        benchmark::DoNotOptimize(f.data());
        rx_verdict v = a.receive(f, csum, {}, 0);
        if (v.action != rx_action::udp) st.SkipWithError("not delivered");
        benchmark::DoNotOptimize(v);
    }
    st.SetItemsProcessed(int64_t(st.iterations()));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}
void BM_dispatch_udp(benchmark::State& st) { dispatch_udp(st, rx_csum::verify); }
void BM_dispatch_udp_offload(benchmark::State& st) { dispatch_udp(st, rx_csum::validated); }

void BM_dispatch_ping(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> f = pattern(n);
    // Echo request from b to a, checksums by proto's own builders.
    mac_a.store(&f[0]);
    mac_b.store(&f[6]);
    f[12] = 0x08;
    f[13] = 0x00;
    ipv4_params p;
    p.src = ip_b;
    p.dst = ip_a;
    p.proto = ip_proto::icmp;
    p.payload_len = uint16_t(n - 34);
    write_ipv4(std::span(f).subspan(14), p);
    f[34] = icmp_type::echo_request;
    f[35] = 0;
    f[36] = f[37] = 0;
    store_be16(&f[36], internet_checksum(&f[34], n - 34));
    std::vector<uint8_t> out(n);
    host a = make_host(mac_a, ip_a);
    for (auto _ : st) {
        rx_verdict v = a.receive(f, rx_csum::verify, out, 0);
        if (v.action != rx_action::reply) st.SkipWithError("not answered");
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}

void BM_udp_tx_headroom(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    const tx_csum mode = st.range(1) ? tx_csum::offload : tx_csum::full;
    std::vector<uint8_t> buf = pattern(n);
    host b = make_host(mac_b, ip_b);
    udp_flow fl{mac_a, ip_a, 4000, 5000};
    for (auto _ : st) {
        tx_headers t;
        int rc = b.udp_in_headroom(buf, udp_headroom, n - udp_headroom, fl, mode, t);
        benchmark::DoNotOptimize(rc);
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()));
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n));
}

void BM_arp_resolve_hit(benchmark::State& st) {
    host a = make_host(mac_a, ip_a);
    // A table as a guest has it: the gateway and a few peers; look up the last.
    for (uint8_t i = 2; i < 10; i++) a.arp().update(ipv4_addr::of(10, 0, 0, i), mac_b, 0, true);
    for (auto _ : st) {
        auto r = a.resolve(ipv4_addr::of(10, 0, 0, 9), 1, nullptr);
        benchmark::DoNotOptimize(r);
    }
    st.SetItemsProcessed(int64_t(st.iterations()));
}

#define SIZES ->Arg(64)->Arg(1500)->Arg(9000)
BENCHMARK(BM_memcpy) SIZES;
BENCHMARK(BM_checksum) SIZES;
BENCHMARK(BM_checksum_naive) SIZES;
BENCHMARK(BM_dispatch_udp) SIZES;
BENCHMARK(BM_dispatch_udp_offload) SIZES;
BENCHMARK(BM_dispatch_ping) SIZES;
BENCHMARK(BM_udp_tx_headroom)->Args({64, 0})->Args({1500, 0})->Args({9000, 0})->Args({1500, 1});
BENCHMARK(BM_arp_resolve_hit);

} // namespace

BENCHMARK_MAIN();
