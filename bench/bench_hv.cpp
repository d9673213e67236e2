// SPDX-License-Identifier: MIT
// Micro-benchmarks of the hypervisor port (emulated Xen), each next to its
// baseline in the same run:
//   BM_grant_copy/<segments>/<bytes>  one batched grant copy, gref -> gref
//                                     between two guests (the VM-to-VM path)
//   BM_memcpy/<segments>/<bytes>      the same bytes with memcpy
//   BM_guest_grant_copy/<segments>/<bytes>
//                                     the same batch by an unprivileged
//                                     guest from another guest's grant to it
//                                     into its own memory (the direct path's
//                                     receiver copy; the broker pins each
//                                     grant, docs/ARCHITECTURE.md "Direct
//                                     path (guest to guest)")
//   BM_guest_mapped_read/<segments>/<bytes>
//                                     memcpy out of that guest's read-only
//                                     mapping of the grants (mapped once)
//   BM_evtchn_round_trip              notify -> wake -> notify back -> wake
// Report the ratios (grant copy / memcpy), never the absolute numbers alone.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <poll.h>
#include <thread>
#include <vector>

#include "bench/copy_host.hpp"
#include "hv/emu/emu_port.hpp"

using namespace zc;

namespace {

constexpr uint32_t max_batch = 64;

// One emulated host for the whole run: dom0 (copier) and two guests that
// share `max_batch` pages each with dom0.
using host = bench::copy_host;

host& the_host() {
    static host h(1, 2, max_batch);
    return h;
}

void BM_grant_copy(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok()) {
        st.SkipWithError("emulated host did not start");
        return;
    }
    uint32_t n = uint32_t(st.range(0));
    uint16_t len = uint16_t(st.range(1));
    std::vector<hv::copy_segment> segs(n);
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; i++) {
            auto& s = segs[i];
            s.source.foreign = {h.src_pages.refs[i], 0, 1};
            s.dest.foreign = {h.dst_pages.refs[i], 0, 2};
            s.len = len;
            s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
            s.status = 0;
        }
        h.gt->copy(segs.data(), n);
        if (segs[n - 1].status != GNTST_okay) {
            st.SkipWithError(hv::gntst_name(segs[n - 1].status));
            break;
        }
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * n * len);
    st.counters["segments"] = benchmark::Counter(double(st.iterations()) * n, benchmark::Counter::kIsRate);
}

void BM_memcpy(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok()) {
        st.SkipWithError("emulated host did not start");
        return;
    }
    uint32_t n = uint32_t(st.range(0));
    size_t len = size_t(st.range(1));
    auto* src = static_cast<uint8_t*>(h.src_pages.addr);
    auto* dst = static_cast<uint8_t*>(h.dst_pages.addr);
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; i++) std::memcpy(dst + i * hv::page_size, src + i * hv::page_size, len);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * n * int64_t(len));
    st.counters["segments"] = benchmark::Counter(double(st.iterations()) * n, benchmark::Counter::kIsRate);
}

void copy_args(benchmark::internal::Benchmark* b) {
    for (int n : {1, 16, 64})
        for (int len : {64, 1500, 4096}) b->Args({n, len});
}
BENCHMARK(BM_grant_copy)->Apply(copy_args);
BENCHMARK(BM_memcpy)->Apply(copy_args);

// Guest 2 (unprivileged) and guest 1's exportable share of `max_batch`
// pages granted read-only to it, on the same host.
struct guest_pair {
    std::unique_ptr<hv::gnttab> tab; // guest 2's
    hv::shared_pages pages;          // guest 1's share to guest 2
    hv::mapping map;                 // guest 2's mapping of all of it
    std::vector<uint8_t> local = std::vector<uint8_t>(max_batch * hv::page_size);
    bool ok = false;
};

guest_pair& the_pair() {
    static guest_pair g = [] {
        guest_pair p;
        host& h = the_host();
        if (!h.ok()) return p;
        auto t = h.dst->open_gnttab();
        auto s = h.src_sh->share_exportable(2, max_batch, false);
        if (!t || !s) return p;
        p.tab = std::move(*t);
        p.pages = std::move(*s);
        std::memset(p.pages.addr, 0x5a, max_batch * hv::page_size);
        std::vector<hv::domid_t> doms(max_batch, 1);
        auto m = p.tab->map(max_batch, doms.data(), p.pages.refs.data(), false);
        if (!m) return p;
        p.map = *m;
        p.ok = true;
        return p;
    }();
    return g;
}

void BM_guest_grant_copy(benchmark::State& st) {
    guest_pair& g = the_pair();
    if (!g.ok) {
        st.SkipWithError("guest pair did not start");
        return;
    }
    uint32_t n = uint32_t(st.range(0));
    uint16_t len = uint16_t(st.range(1));
    std::vector<hv::copy_segment> segs(n);
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; i++) {
            auto& s = segs[i];
            s.source.foreign = {g.pages.refs[i], 0, 1};
            s.dest.virt = g.local.data() + i * hv::page_size;
            s.len = len;
            s.flags = GNTCOPY_source_gref;
            s.status = 0;
        }
        g.tab->copy(segs.data(), n);
        if (segs[n - 1].status != GNTST_okay) {
            st.SkipWithError(hv::gntst_name(segs[n - 1].status));
            break;
        }
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * n * len);
    st.counters["segments"] = benchmark::Counter(double(st.iterations()) * n, benchmark::Counter::kIsRate);
}

void BM_guest_mapped_read(benchmark::State& st) {
    guest_pair& g = the_pair();
    if (!g.ok) {
        st.SkipWithError("guest pair did not start");
        return;
    }
    uint32_t n = uint32_t(st.range(0));
    size_t len = size_t(st.range(1));
    const auto* src = static_cast<const uint8_t*>(g.map.addr);
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; i++) std::memcpy(g.local.data() + i * hv::page_size, src + i * hv::page_size, len);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * n * int64_t(len));
    st.counters["segments"] = benchmark::Counter(double(st.iterations()) * n, benchmark::Counter::kIsRate);
}

BENCHMARK(BM_guest_grant_copy)->Apply(copy_args);
BENCHMARK(BM_guest_mapped_read)->Apply(copy_args);

// dom1 answers every event from dom0 with one of its own; the benchmark
// thread (dom0) blocks in poll() as a real backend does.
void BM_evtchn_round_trip(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok()) {
        st.SkipWithError("emulated host did not start");
        return;
    }
    auto e0 = h.dom0->open_evtchn();
    auto e1 = h.src->open_evtchn();
    if (!e0 || !e1) {
        st.SkipWithError("evtchn open");
        return;
    }
    auto p1 = (*e1)->bind_unbound(0);
    auto p0 = (*e0)->bind_interdomain(1, *p1);
    if (!p1 || !p0) {
        st.SkipWithError("evtchn bind");
        return;
    }
    std::atomic<bool> stop{false};
    auto wait = [](hv::evtchn& e, std::atomic<bool>* stop_flag) {
        pollfd p{e.fd(), POLLIN, 0};
        for (;;) {
            if (auto port = e.pending()) {
                e.unmask(*port);
                return true;
            }
            if (stop_flag && stop_flag->load()) return false;
            ::poll(&p, 1, stop_flag ? 100 : -1);
        }
    };
    std::thread peer([&] {
        while (wait(**e1, &stop)) (*e1)->notify(*p1);
    });
    for (auto _ : st) {
        (*e0)->notify(*p0);
        wait(**e0, nullptr);
    }
    stop = true;
    peer.join();
}
BENCHMARK(BM_evtchn_round_trip)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
