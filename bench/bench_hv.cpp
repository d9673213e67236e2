// SPDX-License-Identifier: MIT
// Micro-benchmarks of the hypervisor port (emulated Xen), each next to its
// baseline in the same run:
//   BM_grant_copy/<segments>/<bytes>  one batched grant copy, gref -> gref
//                                     between two guests (the VM-to-VM path)
//   BM_memcpy/<segments>/<bytes>      the same bytes with memcpy
//   BM_evtchn_round_trip              notify -> wake -> notify back -> wake
// Report the ratios (grant copy / memcpy), never the absolute numbers alone.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <poll.h>
#include <thread>
#include <vector>

#include "hv/emu/broker.hpp"
#include "hv/emu/emu_port.hpp"

using namespace zc;

namespace {

constexpr uint32_t max_batch = 64;

// One emulated host for the whole run: dom0 (copier) and two guests that
// share `max_batch` pages each with dom0.
struct host {
    std::string dir;
    std::unique_ptr<hv::emu::broker> broker;
    std::unique_ptr<hv::port> dom0, src, dst;
    std::unique_ptr<hv::gntshr> src_sh, dst_sh;
    std::unique_ptr<hv::gnttab> gt;
    hv::shared_pages src_pages, dst_pages;
    bool ok = false;

    host() {
        char tmpl[] = "/tmp/zcnet-bench-XXXXXX";
        if (!::mkdtemp(tmpl)) return;
        dir = tmpl;
        std::string why;
        auto b = hv::emu::broker::create({dir, true}, &why);
        if (!b) return;
        broker = std::move(*b);
        broker->start_thread();
        auto open = [&](hv::domid_t d) -> std::unique_ptr<hv::port> {
            hv::emu::connect_options o;
            o.sock = broker->socket_path();
            o.dom = d;
            auto p = hv::emu::open_port(o, &why);
            return p ? std::move(*p) : nullptr;
        };
        dom0 = open(0);
        src = open(1);
        dst = open(2);
        if (!dom0 || !src || !dst) return;
        auto s1 = src->open_gntshr();
        auto s2 = dst->open_gntshr();
        auto g = dom0->open_gnttab();
        if (!s1 || !s2 || !g) return;
        src_sh = std::move(*s1);
        dst_sh = std::move(*s2);
        gt = std::move(*g);
        auto p1 = src_sh->share(0, max_batch, false);
        auto p2 = dst_sh->share(0, max_batch, true);
        if (!p1 || !p2) return;
        src_pages = std::move(*p1);
        dst_pages = std::move(*p2);
        std::memset(src_pages.addr, 0x5a, max_batch * hv::page_size);
        ok = true;
    }
    ~host() {
        gt.reset();
        if (src_sh) src_sh->unshare(src_pages);
        if (dst_sh) dst_sh->unshare(dst_pages);
        src_sh.reset();
        dst_sh.reset();
        dom0.reset();
        src.reset();
        dst.reset();
        if (broker) broker->stop();
        if (!dir.empty()) std::filesystem::remove_all(dir);
    }
};

host& the_host() {
    static host h;
    return h;
}

void BM_grant_copy(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok) {
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
    if (!h.ok) {
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

// dom1 answers every event from dom0 with one of its own; the benchmark
// thread (dom0) blocks in poll() as a real backend does.
void BM_evtchn_round_trip(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok) {
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
