// SPDX-License-Identifier: MIT
// zc-vmbench's modes (modes.hpp).
#include "modes.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "bench/kernel_path.hpp"
#include "link/netfront.hpp"
#include "uplink.hpp"

namespace zc::vmbench {
namespace {

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
    // Application to application over the zc API (zc-stackd in each guest).
    if (::access(o.stackd.c_str(), X_OK) != 0 || ::access(o.rr.c_str(), X_OK) != 0) {
        std::printf("%-12s skipped: zc-stackd or zc-rr not found (%s, %s)\n", "app-rr", o.stackd.c_str(),
                    o.rr.c_str());
    } else {
        app_host h;
        h.o_perf = o.perf;
        h.o_rr = o.rr;
        h.busy_us = o.busy_poll_us;
        std::string why;
        // zc-netback as for the zc-rr rows: the same worker count.
        if (!h.start(o, "private", &why, {"--workers", std::to_string(o.workers ? o.workers : 1)})) {
            std::fprintf(stderr, "zc-vmbench: app-rr: cannot start the emulated host: %s\n", why.c_str());
            ok = false;
        } else {
            for (size_t s : sizes) {
                rr_row r;
                prog.step("app-rr " + std::to_string(s) + " B", o.seconds);
                const bool measured = h.measure_rr(s, o.seconds, r, &why);
                prog.clear();
                if (!measured) {
                    std::fprintf(stderr, "zc-vmbench: app-rr %zu B: %s\n", s, why.c_str());
                    ok = false;
                    continue;
                }
                print_rr(r);
                ps.rr.push_back(r);
            }
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
    // This pass's ratios: each row over the kernel-rr row of its frame size.
    for (rr_row& r : ps.rr)
        for (const rr_row& k : ps.rr)
            if (k.mode == "kernel-rr" && k.frame == r.frame && &k != &r && k.p50 > 0 && k.p99 > 0) {
                r.p50_vs_kernel = r.p50 / k.p50;
                r.p99_vs_kernel = r.p99 / k.p99;
                std::printf("%-12s %7zu  /kernel-rr: p50 %.2fx  p99 %.2fx\n", r.mode.c_str(), r.frame,
                            r.p50_vs_kernel, r.p99_vs_kernel);
            }
    return ok;
}

} // namespace

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
    // The kernel path's UDP rows are also the uplink mode's baseline.
    if (want("kernel") || want("uplink")) {
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
            if (want("kernel")) {
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
    std::map<size_t, double> app_gbps, app_nb; // the app rows of this pass, for the direct rows' ratios
    for (const char* amode : {"app", "app-headroom", "app-copy", "direct", "direct-wait"}) {
        if (!want(amode)) continue;
        app_host h;
        h.o_perf = o.perf;
        h.mode = amode;
        if (!std::strcmp(amode, "app-copy")) h.pool_export = "copy";
        std::string why;
        if (::access(o.stackd.c_str(), X_OK) != 0 || ::access(o.perf.c_str(), X_OK) != 0) {
            std::printf("%-12s skipped: zc-stackd or zc-perf not found (%s, %s)\n", "app", o.stackd.c_str(),
                        o.perf.c_str());
        } else if (!h.start(o, std::strcmp(amode, "app-headroom") ? "private" : "headroom", &why, {},
                            {"--zc-direct", std::strncmp(amode, "direct", 6) ? "off" : "on", "--direct-at-quota",
                             std::strcmp(amode, "direct-wait") ? "fallback" : "wait"})) {
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
                if (!std::strcmp(amode, "app")) {
                    app_gbps[s] = r.gbps;
                    app_nb[s] = r.nb_us_per_pkt;
                } else if (!std::strncmp(amode, "direct", 6) && app_gbps[s] > 0 && app_nb[s] > 0) {
                    std::printf("%-12s %7zu  %s/app = %.3f, zc-netback CPU per datagram %s/app = %.3f\n",
                                (std::string(amode) + "/app").c_str(), s, amode, r.gbps / app_gbps[s], amode,
                                r.nb_us_per_pkt / app_nb[s]);
                }
            }
        }
    }
    if (want("uplink")) ok = run_uplink(o, prog, ps) && ok;
    if (want("rr")) ok = run_rr(o, prog, phase, ps) && ok;
    return ok;
}

} // namespace zc::vmbench
