// SPDX-License-Identifier: MIT
// Pool micro-benchmarks: alloc+free pair (single-threaded and contended) and
// the cost of staging a frame per size, straight into the destination pool
// and through the bounce fallback, next to a plain memcpy of the same bytes
// in the same run (compare ratios, not absolute numbers).
//
// Runs against the emulated hypervisor (a broker in a temporary directory):
// grants are made once at setup; the measured paths never touch them.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "hv/emu/host.hpp"
#include "hv/emu/emu_port.hpp"
#include "pool/manager.hpp"

namespace {

namespace hv = zc::hv;
using zc::pool::frame;
using zc::pool::manager;
using zc::pool::manager_options;

constexpr hv::domid_t self_dom = 1, dom_src = 2, dom_dst = 3, dom_full = 4;

// One emulated host and one manager for the whole run.
struct rig {
    std::unique_ptr<hv::emu::host> emu;
    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<manager> m;
    bool ok = false;

    rig() {
        std::string why;
        auto h = hv::emu::host::create("bench-pool", &why);
        if (!h) return;
        emu = std::move(*h);
        auto p = emu->domain(self_dom, 0, &why);
        if (!p) return;
        port = std::move(*p);
        auto s = port->open_gntshr();
        if (!s) return;
        shr = std::move(*s);
        manager_options mo;
        mo.pool.buf_size = 2048;
        mo.pool.chunk_pages = 16;
        mo.pool.initial_chunks = 4;
        mo.pool.max_pages = 64;
        mo.pool.max_grants = 64;
        mo.bounce_buf_size = 2048;
        mo.bounce_buffers = 64;
        auto mm = manager::create(*shr, nullptr, mo);
        if (!mm) return;
        m = std::move(*mm);
        ok = m->open_peer(dom_src).ok() && m->open_peer(dom_dst).ok() && m->open_peer(dom_full).ok();
        // dom_full's pool is drained to its quota and never given back:
        // every frame for it falls back to bounce buffers.
        if (ok) {
            zc::pool::pool* full = m->find(dom_full);
            for (;;) {
                auto x = full->alloc();
                if (!x) break;
                hogged.push_back(*x);
            }
        }
    }
    ~rig() {
        if (m)
            if (zc::pool::pool* full = m->find(dom_full))
                for (auto& x : hogged) (void)full->free(x);
        m.reset();
        shr.reset();
        port.reset();
        emu.reset();
    }
    std::vector<zc::pool::buffer> hogged;
};

rig& the_rig() {
    static rig r;
    return r;
}

// A source frame of `len` bytes in dom_src's pool (chained in 2 KiB buffers).
struct source {
    frame segs[8];
    bool ok = false;
    source(manager& m, uint32_t len) {
        int n = m.alloc_for(dom_src, len, 0, segs, 8);
        ok = n > 0;
        for (int i = 0; i < n; ++i) std::memset(segs[i].owner->data(segs[i]), 0x5A, segs[i].len);
    }
};

void BM_alloc_free_pair(benchmark::State& st) {
    rig& r = the_rig();
    if (!r.ok) {
        st.SkipWithError("emulated hypervisor unavailable");
        return;
    }
    zc::pool::pool* p = r.m->find(dom_dst);
    for (auto _ : st) {
        auto b = p->alloc();
        benchmark::DoNotOptimize(b);
        if (b) (void)p->free(*b);
    }
    st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_alloc_free_pair)->Threads(1)->Threads(2)->UseRealTime();

void BM_memcpy(benchmark::State& st) {
    const size_t n = size_t(st.range(0));
    std::vector<uint8_t> a(n, 0x5A), b(n);
    for (auto _ : st) {
        std::memcpy(b.data(), a.data(), n);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(int64_t(st.iterations() * n));
}

// The one copy: into the destination pool, then released (B consumed it).
void BM_stage_direct(benchmark::State& st) {
    rig& r = the_rig();
    if (!r.ok) {
        st.SkipWithError("emulated hypervisor unavailable");
        return;
    }
    source src(*r.m, uint32_t(st.range(0)));
    frame out[8];
    for (auto _ : st) {
        int n = r.m->stage(dom_dst, src.segs[0], out, 8);
        if (n <= 0) {
            st.SkipWithError("stage failed");
            break;
        }
        (void)r.m->release(out[0]);
    }
    st.SetBytesProcessed(int64_t(st.iterations() * st.range(0)));
    (void)r.m->release(src.segs[0]);
}

// The fallback: the destination pool is exhausted, the frame is copied into
// bounce buffers (and released, as after its restage).
void BM_stage_fallback(benchmark::State& st) {
    rig& r = the_rig();
    if (!r.ok) {
        st.SkipWithError("emulated hypervisor unavailable");
        return;
    }
    source src(*r.m, uint32_t(st.range(0)));
    frame out[8];
    uint64_t fb0 = r.m->counters().fallbacks;
    for (auto _ : st) {
        int n = r.m->stage(dom_full, src.segs[0], out, 8);
        if (n <= 0) {
            st.SkipWithError("stage failed");
            break;
        }
        (void)r.m->release(out[0]);
    }
    st.counters["fallbacks"] = double(r.m->counters().fallbacks - fb0);
    st.SetBytesProcessed(int64_t(st.iterations() * st.range(0)));
    (void)r.m->release(src.segs[0]);
}

#define ZC_SIZES ->Arg(64)->Arg(1500)->Arg(4096)->Arg(9000)
BENCHMARK(BM_memcpy) ZC_SIZES;
BENCHMARK(BM_stage_direct) ZC_SIZES;
BENCHMARK(BM_stage_fallback) ZC_SIZES;

} // namespace

BENCHMARK_MAIN();
