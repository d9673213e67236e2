// SPDX-License-Identifier: MIT
// Micro-benchmarks of zc-netback's hot pieces, each reported as
// items/s (requests, packets, frames or segments) so that the per-item cost
// can be compared across pieces:
//
//   BM_ring_tx_cycle/<n>      backend side of a TX ring pass over <n> requests:
//                             req_prod, RING_COPY_REQUEST of each request, a
//                             response each, RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
//                             and RING_FINAL_CHECK_FOR_REQUESTS (ring.hpp)
//   BM_ring_rx_cycle/<n>      the same for the RX ring (request in, response out)
//   BM_ring_copy_request/<n>  RING_COPY_REQUEST alone (read_once, XSA-155) ...
//   BM_ring_copy_plain/<n>    ... next to a plain memcpy of the same slots,
//                             so that the price of the safe copy is visible
//   BM_tx_check/<layout>      netback/tx_check.cpp (xenvif_get_extras,
//                             xenvif_count_requests, header/page/GSO checks),
//                             the very function the datapath's worker calls,
//                             over a batch of chains of one layout
//   BM_switch_unicast/<vifs>  l2_switch learn (known source) + lookup (known
//                             destination) with <vifs> vifs' MACs in the table
//   BM_switch_flood/<vifs>    learn + lookup of a broadcast: the flood decision
//                             and the list of <vifs>-1 destinations
//   BM_gcopy_build/<n>        filling <n> gref->gref copy segments from TX slots
//                             to RX slots, into a ready array
//   BM_gcopy_build_in_place/<n>  the same, fields written in place (no
//                             temporary segment: see build_batch_in_place)
//   BM_gcopy_build_dp/<n>     the same as copy_and_publish does it (fresh
//                             vectors, owner records, two counter bumps per
//                             segment); a copy of that loop: it is not callable
//                             on its own
//   BM_gcopy_emu/<n>/<bytes>  the copy itself: one batched grant copy of those
//                             segments through the emulated hypervisor
//                             (in-process broker, dom0 copies guest 1 -> guest 2)
//
// Ring benchmarks run frontend and backend in one thread: they measure the
// instructions and barriers of the ring protocol, not the cache-line transfer
// between the cores of two domains (which zc-vmbench sees end to end).
//
// JSON for tools: bench_netback --benchmark_format=json (or
// --benchmark_out=FILE --benchmark_out_format=json); --benchmark_filter=REGEX
// selects benchmarks. Compare BM_gcopy_build with BM_gcopy_emu at the same
// <n> for the build/copy ratio.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "bench/copy_host.hpp"
#include "hv/emu/emu_port.hpp"
#include "ring/netif_ring.hpp"
#include "netback/switch.hpp"
#include "netback/tx_check.hpp"
#include "pool/frame.hpp"

using namespace zc;
using namespace zc::netback;

namespace {

constexpr uint32_t ring_entries = tx_back_ring::size; // 256, as rx_back_ring
constexpr uint32_t batch = 64;                        // datapath_options::batch default

// A page-aligned, zeroed shared ring page set up as SHARED_RING_INIT does.
template <class Sring>
struct ring_page {
    Sring* s = nullptr;
    ring_page() {
        s = static_cast<Sring*>(std::aligned_alloc(hv::page_size, hv::page_size));
        std::memset(static_cast<void*>(s), 0, hv::page_size);
        s->req_prod = s->rsp_prod = 0;
        s->req_event = s->rsp_event = 1;
    }
    ~ring_page() { std::free(s); }
    ring_page(const ring_page&) = delete;
    ring_page& operator=(const ring_page&) = delete;
};

// What the frontend does per pass, kept to the two stores that matter so the
// numbers are the backend's: publish `n` more requests (release, as
// RING_PUSH_REQUESTS' wmb) and ask to be notified of the next response (as
// RING_FINAL_CHECK_FOR_RESPONSES), so push_responses_and_check_notify
// takes its notify branch as it would for a sleeping frontend.
template <class Sring>
void frontend_publish(Sring* s, RING_IDX& prod, uint32_t n, RING_IDX rsp_prod) {
    prod += n;
    __atomic_store_n(&s->req_prod, prod, __ATOMIC_RELEASE);
    __atomic_store_n(&s->rsp_event, rsp_prod + 1, __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------------------
// Rings. The slots are filled once: the indices are free-running, so the
// same slots are consumed lap after lap (a response overwrites the first
// bytes of its slot; the request read next lap is stale but the cost is the
// same).

void BM_ring_tx_cycle(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    ring_page<netif_tx_sring> pg;
    for (uint32_t i = 0; i < ring_entries; ++i)
        pg.s->ring[i].req = netif_tx_request{i, 0, 0, uint16_t(i), 1500};
    tx_back_ring r;
    if (!r.attach(pg.s)) {
        st.SkipWithError("attach");
        return;
    }
    RING_IDX prod = 0;
    uint64_t notifies = 0;
    for (auto _ : st) {
        frontend_publish(pg.s, prod, n, r.rsp_prod_pvt);
        for (uint32_t todo = r.unconsumed(); todo; --todo) {
            const auto req = r.read_request<netif_tx_request>(r.req_cons++);
            benchmark::DoNotOptimize(req);
            r.write_response(r.rsp_prod_pvt++, netif_tx_response{req.id, NETIF_RSP_OKAY});
        }
        notifies += r.push_responses_and_check_notify();
        bool more = r.final_check_for_requests();
        benchmark::DoNotOptimize(more);
    }
    if (!st.error_occurred() && notifies != uint64_t(st.iterations()))
        st.SkipWithError("notify check did not fire once per pass");
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

void BM_ring_rx_cycle(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    ring_page<netif_rx_sring> pg;
    for (uint32_t i = 0; i < ring_entries; ++i) pg.s->ring[i].req = netif_rx_request{uint16_t(i), 0, i};
    rx_back_ring r;
    if (!r.attach(pg.s)) {
        st.SkipWithError("attach");
        return;
    }
    RING_IDX prod = 0;
    uint64_t notifies = 0;
    for (auto _ : st) {
        frontend_publish(pg.s, prod, n, r.rsp_prod_pvt);
        // The datapath reserves a frame's slots only when enough are posted.
        if (r.unconsumed() < n) {
            st.SkipWithError("RX ring short of requests");
            break;
        }
        for (uint32_t i = 0; i < n; ++i) {
            const auto req = r.read_request<netif_rx_request>(r.req_cons++);
            benchmark::DoNotOptimize(req);
            r.write_response(r.rsp_prod_pvt++, netif_rx_response{req.id, 0, NETRXF_data_validated, 1500});
        }
        notifies += r.push_responses_and_check_notify();
    }
    if (!st.error_occurred() && notifies != uint64_t(st.iterations()))
        st.SkipWithError("notify check did not fire once per pass");
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

void BM_ring_copy_request(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    ring_page<netif_tx_sring> pg;
    for (uint32_t i = 0; i < ring_entries; ++i)
        pg.s->ring[i].req = netif_tx_request{i, 0, 0, uint16_t(i), 1500};
    tx_back_ring r;
    r.attach(pg.s);
    RING_IDX idx = 0;
    // The fields are used (summed), as the checks use them: only the result
    // is kept opaque, so the compiler must load every word but may keep the
    // copy in registers.
    uint32_t acc = 0;
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; ++i) {
            const auto req = r.read_request<netif_tx_request>(idx++);
            acc += req.gref + req.offset + req.flags + req.id + req.size;
        }
        benchmark::DoNotOptimize(acc);
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

// Baseline: what a backend that trusts the shared page would do.
void BM_ring_copy_plain(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    ring_page<netif_tx_sring> pg;
    for (uint32_t i = 0; i < ring_entries; ++i)
        pg.s->ring[i].req = netif_tx_request{i, 0, 0, uint16_t(i), 1500};
    RING_IDX idx = 0;
    uint32_t acc = 0;
    for (auto _ : st) {
        for (uint32_t i = 0; i < n; ++i) {
            netif_tx_request req;
            std::memcpy(&req, &pg.s->ring[idx++ & (ring_entries - 1)].req, sizeof req);
            acc += req.gref + req.offset + req.flags + req.id + req.size;
        }
        benchmark::DoNotOptimize(acc);
        benchmark::ClobberMemory(); // the shared page may have changed: reload it
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

BENCHMARK(BM_ring_tx_cycle)->Arg(1)->Arg(batch);
BENCHMARK(BM_ring_rx_cycle)->Arg(1)->Arg(batch);
BENCHMARK(BM_ring_copy_request)->Arg(1)->Arg(batch);
BENCHMARK(BM_ring_copy_plain)->Arg(1)->Arg(batch);

// ---------------------------------------------------------------------------
// TX request validation.

struct chain_layout {
    uint32_t frame;    // bytes
    uint16_t first_off;
    bool gso;          // a GSO extra after the first request
    tx_verdict expect;
};

// Write one chain at ring index `idx` the way netfront lays out a frame:
// the first slot up to the end of its page, then whole pages. Returns the
// ring entries used.
uint32_t put_chain(netif_tx_sring* s, RING_IDX idx, const chain_layout& l, uint32_t& gref) {
    std::vector<uint16_t> sizes;
    uint32_t left = l.frame;
    sizes.push_back(uint16_t(std::min<uint32_t>(left, uint32_t(hv::page_size) - l.first_off)));
    left -= sizes[0];
    while (left) {
        sizes.push_back(uint16_t(std::min<uint32_t>(left, hv::page_size)));
        left -= sizes.back();
    }
    uint32_t used = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
        netif_tx_request r{};
        r.gref = gref++;
        r.offset = i == 0 ? l.first_off : 0;
        r.id = uint16_t((idx + used) & (ring_entries - 1));
        r.size = i == 0 ? uint16_t(l.frame) : sizes[i];
        r.flags = uint16_t(i + 1 < sizes.size() ? NETTXF_more_data : 0);
        if (i == 0) r.flags |= NETTXF_csum_blank | NETTXF_data_validated | (l.gso ? NETTXF_extra_info : 0);
        s->ring[(idx + used++) & (ring_entries - 1)].req = r;
        if (i == 0 && l.gso) {
            netif_extra_info e{};
            e.type = XEN_NETIF_EXTRA_TYPE_GSO;
            e.u.gso.size = 1448;
            e.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV4;
            std::memcpy(&s->ring[(idx + used++) & (ring_entries - 1)], &e, sizeof e);
        }
    }
    return used;
}

// A ring holding as many chains as fit (at most one TX batch): the chains
// are checked from index 0 every iteration, as the worker would after the
// frontend published them all.
void BM_tx_check(benchmark::State& st, chain_layout l) {
    ring_page<netif_tx_sring> pg;
    uint32_t gref = 8, used = 0, pkts = 0;
    // Ring entries per chain: the first slot, whole pages after it, the extra.
    const uint32_t first = std::min<uint32_t>(l.frame, uint32_t(hv::page_size) - l.first_off);
    const uint32_t len = 1 + (l.frame - first + hv::page_size - 1) / hv::page_size + (l.gso ? 1 : 0);
    while (pkts < batch && used + len <= ring_entries) {
        used += put_chain(pg.s, used, l, gref);
        ++pkts;
    }
    if (used != pkts * len) {
        st.SkipWithError("chain length");
        return;
    }
    pg.s->req_prod = used;
    tx_back_ring r;
    if (!r.attach(pg.s)) {
        st.SkipWithError("attach");
        return;
    }
    tx_check_result res;
    // Once outside the timing: the layout gets the verdict it is meant to.
    for (RING_IDX cons = 0; cons < used; cons += res.consumed) {
        check_tx_packet(r, cons, int(used - cons), res);
        if (res.verdict != l.expect) {
            st.SkipWithError(("unexpected verdict: " + tx_fault_text(res)).c_str());
            return;
        }
    }
    uint64_t slots = 0;
    for (auto _ : st) {
        RING_IDX cons = 0;
        for (uint32_t k = 0; k < pkts; ++k) {
            check_tx_packet(r, cons, int(used - cons), res);
            benchmark::DoNotOptimize(res.verdict);
            cons += res.consumed;
            slots += 1 + res.nfrags;
        }
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * pkts);
    st.counters["pkts_per_batch"] = pkts;
    st.counters["slots"] = benchmark::Counter(double(slots), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_tx_check, 64B_1slot, chain_layout{64, 0, false, tx_verdict::accept});
BENCHMARK_CAPTURE(BM_tx_check, 1500B_1slot, chain_layout{1500, 0, false, tx_verdict::accept});
// 9000 B from mid-page: 4 slots.
BENCHMARK_CAPTURE(BM_tx_check, 9000B_sg, chain_layout{9000, 2048, false, tx_verdict::accept});
// The largest GSO frame: a GSO extra and 16 slots.
BENCHMARK_CAPTURE(BM_tx_check, 65535B_gso, chain_layout{65535, 0, true, tx_verdict::accept});
// A runt (no room for an Ethernet header): the xenvif_tx_err path.
BENCHMARK_CAPTURE(BM_tx_check, runt_drop, chain_layout{10, 0, false, tx_verdict::drop});

// ---------------------------------------------------------------------------
// Switch. The datapath's Port is its vif; the switch only stores and compares
// it, so any type measures the same thing.

struct fake_vif {
    uint32_t id;
};

mac_addr mac_of(uint32_t i) { return {0x02, 0x00, uint8_t(i >> 16), uint8_t(i >> 8), uint8_t(i), 0x01}; }

struct switch_fixture {
    l2_switch<fake_vif> sw;
    std::vector<std::shared_ptr<fake_vif>> ports;
    std::vector<mac_addr> macs;
    explicit switch_fixture(uint32_t vifs) {
        for (uint32_t i = 0; i < vifs; ++i) {
            ports.push_back(std::make_shared<fake_vif>(fake_vif{i}));
            macs.push_back(mac_of(i));
            sw.add(ports.back(), macs.back());
        }
    }
};

// Frames from vif k to vif k+1 (mod vifs), as process_tx handles them: learn
// the source (already known: the read-locked fast path), look the
// destination up into a reused vector.
void BM_switch_unicast(benchmark::State& st) {
    const uint32_t vifs = uint32_t(st.range(0));
    switch_fixture f(vifs);
    std::vector<std::shared_ptr<fake_vif>> out;
    uint32_t k = 0;
    uint64_t flooded = 0;
    for (auto _ : st) {
        for (uint32_t i = 0; i < batch; ++i) {
            const uint32_t s = k, d = k + 1 == vifs ? 0 : k + 1;
            k = d;
            f.sw.learn(f.macs[s].data(), f.ports[s]);
            flooded += f.sw.lookup(f.macs[d].data(), f.ports[s].get(), out);
            benchmark::DoNotOptimize(out.data());
        }
    }
    if (flooded) st.SkipWithError("a known unicast destination was flooded");
    st.SetItemsProcessed(int64_t(st.iterations()) * batch);
}

void BM_switch_flood(benchmark::State& st) {
    const uint32_t vifs = uint32_t(st.range(0));
    switch_fixture f(vifs);
    const mac_addr bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    std::vector<std::shared_ptr<fake_vif>> out;
    uint32_t k = 0;
    uint64_t dests = 0;
    for (auto _ : st) {
        for (uint32_t i = 0; i < batch; ++i) {
            const uint32_t s = k;
            k = k + 1 == vifs ? 0 : k + 1;
            f.sw.learn(f.macs[s].data(), f.ports[s]);
            f.sw.lookup(bcast.data(), f.ports[s].get(), out);
            dests += out.size();
            benchmark::DoNotOptimize(out.data());
        }
    }
    if (dests != uint64_t(st.iterations()) * batch * (vifs - 1)) st.SkipWithError("flood list is wrong");
    st.SetItemsProcessed(int64_t(st.iterations()) * batch);
    st.counters["dests"] = benchmark::Counter(double(dests), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_switch_unicast)->Arg(2)->Arg(16)->Arg(64);
BENCHMARK(BM_switch_flood)->Arg(2)->Arg(16)->Arg(64);

// ---------------------------------------------------------------------------
// Grant-copy batches: frames from guest 1's TX slots to guest 2's RX slots,
// page-aligned slots: one segment per RX slot (copy_and_publish fills
// every RX page, so a page-aligned frame copies slot for slot).

constexpr hv::domid_t src_dom = 1, dst_dom = 2;

struct copy_job {
    std::vector<pool::frame> tx;          // the source slots (stamp_foreign's frames)
    std::vector<netif_rx_request> rx;     // the destination's private RX requests
};

copy_job make_job(uint32_t n, uint16_t len, const hv::gref_t* src_refs, const hv::gref_t* dst_refs) {
    copy_job j;
    for (uint32_t i = 0; i < n; ++i) {
        pool::frame f{};
        f.kind = pool::seg_kind::foreign;
        f.gref = src_refs ? src_refs[i] : 1000 + i;
        f.domid = src_dom;
        f.offset = 0;
        f.len = len;
        j.tx.push_back(f);
        j.rx.push_back(netif_rx_request{uint16_t(i), 0, dst_refs ? dst_refs[i] : 2000 + i});
    }
    return j;
}

// The floor: the fields a gref->gref segment needs, into a ready array.
void build_batch(const copy_job& j, hv::copy_segment* out) noexcept {
    const uint32_t n = uint32_t(j.tx.size());
    for (uint32_t i = 0; i < n; ++i) {
        const pool::frame& s = j.tx[i];
        hv::copy_segment c{};
        c.source.foreign.ref = s.gref;
        c.source.foreign.offset = s.offset;
        c.source.foreign.domid = s.domid;
        c.dest.foreign.ref = j.rx[i].gref;
        c.dest.foreign.offset = 0;
        c.dest.foreign.domid = dst_dom;
        c.len = s.len;
        c.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
        out[i] = c;
    }
}

// The same fields written in place. build_batch assembles each segment in a
// stack temporary with narrow stores and then copies it out with wide loads,
// which x86 cannot forward from the store buffer; the datapath's add() does
// the same (a temporary, then push_back). This variant shows what that costs.
void build_batch_in_place(const copy_job& j, hv::copy_segment* out) noexcept {
    const uint32_t n = uint32_t(j.tx.size());
    for (uint32_t i = 0; i < n; ++i) {
        const pool::frame& s = j.tx[i];
        hv::copy_segment& c = out[i];
        c.source.foreign.ref = s.gref;
        c.source.foreign.offset = s.offset;
        c.source.foreign.domid = s.domid;
        c.dest.foreign.ref = j.rx[i].gref;
        c.dest.foreign.offset = 0;
        c.dest.foreign.domid = dst_dom;
        c.len = s.len;
        c.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
        c.status = 0;
    }
}

void BM_gcopy_build_in_place(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    const copy_job j = make_job(n, 1500, nullptr, nullptr);
    std::vector<hv::copy_segment> segs(n);
    for (auto _ : st) {
        build_batch_in_place(j, segs.data());
        benchmark::DoNotOptimize(segs.data());
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

void BM_gcopy_build(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    const copy_job j = make_job(n, 1500, nullptr, nullptr);
    std::vector<hv::copy_segment> segs(n);
    for (auto _ : st) {
        build_batch(j, segs.data());
        benchmark::DoNotOptimize(segs.data());
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

// copy_and_publish's delivery loop for one-slot frames: fresh vectors per
// pass, an owner record per segment (to route statuses back), and the two
// relaxed counter increments (vm_to_vm_segments, grant_copy_segments) it
// does per segment.
void BM_gcopy_build_dp(benchmark::State& st) {
    const uint32_t n = uint32_t(st.range(0));
    const copy_job j = make_job(n, 1500, nullptr, nullptr);
    struct owner {
        int32_t del, conv;
        uint8_t slot;
    };
    std::atomic<uint64_t> vm_to_vm{0}, segments{0};
    for (auto _ : st) {
        std::vector<hv::copy_segment> segs;
        std::vector<owner> own;
        for (uint32_t di = 0; di < n; ++di) {
            const pool::frame& s = j.tx[di];
            hv::copy_segment c{};
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = s.offset;
            c.source.foreign.domid = s.domid;
            c.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
            vm_to_vm.fetch_add(1, std::memory_order_relaxed);
            c.dest.foreign.ref = j.rx[di].gref;
            c.dest.foreign.offset = 0;
            c.dest.foreign.domid = dst_dom;
            c.len = s.len;
            segs.push_back(c);
            own.push_back({int32_t(di), -1, 0});
            segments.fetch_add(1, std::memory_order_relaxed);
        }
        benchmark::DoNotOptimize(segs.data());
        benchmark::DoNotOptimize(own.data());
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
}

BENCHMARK(BM_gcopy_build)->Arg(1)->Arg(batch);
BENCHMARK(BM_gcopy_build_in_place)->Arg(1)->Arg(batch);
BENCHMARK(BM_gcopy_build_dp)->Arg(1)->Arg(batch);

// One emulated host for the run (bench/copy_host.hpp): dom0 as the copier,
// guest src_dom granting TX pages (read-only), dst_dom RX pages (writable).
using host = bench::copy_host;

host& the_host() {
    static host h(src_dom, dst_dom, batch);
    return h;
}

// The same segments as BM_gcopy_build, built once, copied every iteration
// (a copy only writes the status field, so the batch can be reissued).
void BM_gcopy_emu(benchmark::State& st) {
    host& h = the_host();
    if (!h.ok()) {
        st.SkipWithError(("emulated host did not start: " + h.error).c_str());
        return;
    }
    const uint32_t n = uint32_t(st.range(0));
    const uint16_t len = uint16_t(st.range(1));
    const copy_job j = make_job(n, len, h.src_pages.refs.data(), h.dst_pages.refs.data());
    std::vector<hv::copy_segment> segs(n);
    build_batch(j, segs.data());
    for (auto _ : st) {
        const int rc = h.gt->copy(segs.data(), n);
        if (rc < 0 || segs[n - 1].status != GNTST_okay) {
            st.SkipWithError(rc < 0 ? "grant copy failed" : hv::gntst_name(segs[n - 1].status));
            break;
        }
        benchmark::ClobberMemory();
    }
    st.SetItemsProcessed(int64_t(st.iterations()) * n);
    st.SetBytesProcessed(int64_t(st.iterations()) * n * len);
}

BENCHMARK(BM_gcopy_emu)->Args({1, 64})->Args({batch, 64})->Args({batch, 1500})->Args({batch, 4096});

} // namespace

BENCHMARK_MAIN();
