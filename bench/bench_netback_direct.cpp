// SPDX-License-Identifier: MIT
// zc-netback's CPU per VM-to-VM frame, today's path (one grant copy of the
// payload) next to the direct path (docs/ARCHITECTURE.md, "Direct path
// (guest to guest)": headers and a descriptor, no payload copy), on the
// emulated host in this process: two raw frontends (the sender's frames in
// batches, the receiver reposting RX buffers and, on the direct path,
// releasing every cookie), one datapath worker. Counters per run:
// nb_cpu_ns_per_frame (the worker thread's CPU time from
// /proc/self/task/<tid>/stat over the frames), frames per second
// (items_per_second, the whole loop: both frontends and the worker share
// the machine).
//
//   build/release/bench/bench_netback_direct --benchmark_min_time=2
//
// ZCNET_BENCH_ITERATIONS=N runs every case for exactly N batches of 64
// frames (Google Benchmark 1.7 has no --benchmark_min_time=Nx): a fixed
// frame count, so that instruction counts under callgrind are comparable
// between builds (bench/PROFILE.md):
//
//   ZCNET_BENCH_ITERATIONS=2000 valgrind --tool=callgrind --separate-threads=yes
//       build/release/bench/bench_netback_direct --benchmark_filter=BM_vm_to_vm/0/64
#include <benchmark/benchmark.h>

#include <dirent.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hv/emu/host.hpp"
#include "netback/datapath.hpp"
#include "ring/netif_ring.hpp"
#include "ring/zc_direct.hpp"

using namespace zc;
namespace zd = zc::ring::zc_direct;

namespace {

constexpr uint32_t batch = 64;
constexpr uint32_t hdr = 42; // Ethernet + IPv4 + UDP

std::set<int> task_ids() {
    std::set<int> s;
    if (DIR* d = ::opendir("/proc/self/task")) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') s.insert(std::atoi(e->d_name));
        ::closedir(d);
    }
    return s;
}

// utime + stime of one thread, in nanoseconds (clock-tick resolution).
uint64_t thread_cpu_ns(int tid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE* f = std::fopen(path, "r");
    if (!f) return 0;
    char buf[1024] = {};
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')'); // the name may hold spaces
    unsigned long long ut = 0, st = 0;
    if (!p || std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (ut + st) * (1000000000ull / uint64_t(::sysconf(_SC_CLK_TCK)));
}

struct frontend {
    hv::domid_t dom = 0;
    mac_addr mac{};
    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<hv::evtchn> ev;
    hv::shared_pages rings, txbuf, rxbuf, rel, payload;
    ring::tx_front_ring tx;
    ring::rx_front_ring rx;
    zd::release_front_ring rr;
    hv::evtchn_port_t evp = 0;

    bool open(hv::emu::host& h, hv::domid_t d, hv::domid_t peer, std::string* why) {
        dom = d;
        mac = {0x02, 0, 0, 0, 0, uint8_t(d)};
        auto p = h.domain(d, 0, why);
        if (!p) return false;
        port = std::move(*p);
        auto s = port->open_gntshr();
        auto e = port->open_evtchn();
        if (!s || !e) return false;
        shr = std::move(*s);
        ev = std::move(*e);
        auto r = shr->share(0, 2, true), t = shr->share(0, batch, true), x = shr->share(0, 256, true),
             l = shr->share(0, 1, true), y = shr->share(peer, batch, false);
        if (!r || !t || !x || !l || !y) return false;
        rings = std::move(*r), txbuf = std::move(*t), rxbuf = std::move(*x), rel = std::move(*l);
        payload = std::move(*y);
        tx.init(rings.addr);
        rx.init(static_cast<uint8_t*>(rings.addr) + hv::page_size);
        rr.init(rel.addr);
        auto b = ev->bind_unbound(0);
        if (!b) return false;
        evp = *b;
        return true;
    }
    netback::vif_params params(bool direct) const {
        netback::vif_params v;
        v.frontend = dom;
        v.mac = mac;
        v.queues.push_back({rings.refs[0], rings.refs[1], evp, evp});
        v.feature_sg = true;
        v.zc_direct = direct;
        v.zc_release_ring_ref = rel.refs[0];
        return v;
    }
    void post_rx(uint32_t n) {
        for (uint32_t i = 0; i < n; ++i) {
            netif_rx_request q{};
            q.id = uint16_t(rx.req_prod_pvt & 255);
            q.gref = rxbuf.refs[q.id];
            rx.write_request(rx.req_prod_pvt++, q);
        }
        if (rx.push_requests_and_check_notify()) ev->notify(evp);
    }
    void wait() {
        pollfd p{ev->fd(), POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) return;
        while (auto q = ev->pending()) ev->unmask(*q);
    }
};

struct rig {
    std::unique_ptr<hv::emu::host> emu;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<netback::datapath> dp;
    frontend a, b;
    std::vector<int> workers;
    std::string error;

    explicit rig(bool direct) {
        auto h = hv::emu::host::create("bench", &error);
        if (!h) return;
        emu = std::move(*h);
        auto d0 = emu->domain(0, 0, &error);
        if (!d0) return;
        dom0 = std::move(*d0);
        if (!a.open(*emu, 1, 2, &error) || !b.open(*emu, 2, 1, &error)) return;
        const std::set<int> before = task_ids();
        netback::datapath_options o;
        o.workers = 1;
        auto p = netback::datapath::create(*dom0, o, {}, &error);
        if (!p) return;
        dp = std::move(*p);
        for (int t : task_ids())
            if (!before.count(t)) workers.push_back(t);
        if (dp->add_vif(a.params(direct), &error) || dp->add_vif(b.params(direct), &error)) dp.reset();
        if (dp) b.post_rx(256);
    }
    ~rig() { dp.reset(); }
    uint64_t worker_cpu_ns() const {
        uint64_t t = 0;
        for (int w : workers) t += thread_cpu_ns(w);
        return t;
    }

    // One batch from a to b; false when something did not come back.
    bool run_batch(bool direct, uint32_t len) {
        for (uint32_t i = 0; i < batch; ++i) {
            uint8_t* pg = static_cast<uint8_t*>(a.txbuf.addr) + size_t(i) * hv::page_size;
            b.mac.store(pg);
            a.mac.store(pg + 6);
            pg[12] = 0x08, pg[13] = 0x00;
            netif_tx_request r{};
            r.gref = a.txbuf.refs[i];
            r.id = uint16_t(a.tx.req_prod_pvt & 255);
            r.size = uint16_t(direct ? hdr : len);
            r.flags = direct ? NETTXF_extra_info : 0;
            a.tx.write_request(a.tx.req_prod_pvt++, r);
            if (direct) {
                a.tx.write_request(a.tx.req_prod_pvt++,
                                   zd::to_extra(zd::tx_payload{zd::extra_tx_payload, XEN_NETIF_EXTRA_FLAG_MORE, 0,
                                                               a.payload.refs[i]}));
                a.tx.write_request(a.tx.req_prod_pvt++,
                                   zd::to_extra(zd::tx_dest{zd::extra_tx_dest, 0, b.dom, uint16_t(len - hdr), 0}));
            }
        }
        if (a.tx.push_requests_and_check_notify()) a.ev->notify(a.evp);
        const uint32_t per = direct ? 3 : 1;
        uint32_t got = 0, spins = 0;
        std::vector<uint16_t> cookies;
        while (got < batch * per) {
            const RING_IDX prod = b.rx.rsp_prod();
            const uint32_t n = prod - b.rx.rsp_cons;
            for (RING_IDX i = b.rx.rsp_cons; i != prod; ++i)
                if (direct && (i - b.rx.rsp_cons) % 3 == 2)
                    cookies.push_back(zd::from_extra<zd::rx_desc>(b.rx.read_response<netif_extra_info>(i)).cookie);
            // Frames are whole in each read: the worker publishes per batch.
            b.rx.rsp_cons = prod;
            got += n;
            if (n) b.post_rx(n);
            if (got < batch * per && !b.rx.final_check_for_responses()) {
                b.wait();
                if (++spins > 1000) return false;
            }
        }
        if (direct) {
            for (uint16_t c : cookies) b.rr.write_request(b.rr.req_prod_pvt++, zc_direct_release_request{c, 0});
            b.rr.push_requests_and_check_notify();
            b.ev->notify(b.evp);
        }
        uint32_t done = 0;
        spins = 0;
        while (done < batch) {
            const RING_IDX prod = a.tx.rsp_prod();
            for (; a.tx.rsp_cons != prod; ++a.tx.rsp_cons)
                if (a.tx.read_response<netif_tx_response>(a.tx.rsp_cons).status != NETIF_RSP_NULL) ++done;
            if (direct) b.rr.rsp_cons = b.rr.rsp_prod();
            if (done < batch && !a.tx.final_check_for_responses()) {
                a.wait();
                if (++spins > 1000) return false;
            }
        }
        return true;
    }
};

// Args: direct (0: today's path, 1: the direct path), frame length.
void BM_vm_to_vm(benchmark::State& st) {
    const bool direct = st.range(0) != 0;
    const uint32_t len = uint32_t(st.range(1));
    rig r(direct);
    if (!r.dp || r.workers.size() != 1) {
        st.SkipWithError(("rig: " + r.error).c_str());
        return;
    }
    const auto copy0 = r.dp->hv_counters().copy_bytes;
    const uint64_t cpu0 = r.worker_cpu_ns();
    uint64_t frames = 0;
    for (auto _ : st) {
        if (!r.run_batch(direct, len)) {
            st.SkipWithError("a batch did not come back");
            return;
        }
        frames += batch;
    }
    const uint64_t cpu = r.worker_cpu_ns() - cpu0;
    st.SetItemsProcessed(int64_t(frames));
    st.counters["nb_cpu_ns_per_frame"] = frames ? double(cpu) / double(frames) : 0;
    st.counters["nb_copy_bytes_per_frame"] =
        frames ? double(r.dp->hv_counters().copy_bytes - copy0) / double(frames) : 0;
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    auto* b = benchmark::RegisterBenchmark("BM_vm_to_vm", BM_vm_to_vm);
    b->ArgsProduct({{0, 1}, {64, 1500}})->UseRealTime()->Unit(benchmark::kMicrosecond);
    if (const char* n = std::getenv("ZCNET_BENCH_ITERATIONS"); n && std::atoll(n) > 0)
        b->Iterations(benchmark::IterationCount(std::atoll(n)));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
