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
// path (two network namespaces joined by veth). The uplink mode sends from
// guests through zc-netback's AF_XDP uplink to a kernel socket instead.
//
// This file: options and the run over --repeat passes. vmbench/: guest.cpp
// (the guest role), proc.cpp (child processes, zc-netback's counters),
// hosts.cpp (the emulated hosts), modes.cpp (one pass over the modes),
// report.cpp (rows, summaries, outputs).
#include <algorithm>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include "link/netfront.hpp"
#include "vmbench/guest.hpp"
#include "vmbench/modes.hpp"
#include "vmbench/proc.hpp"
#include "vmbench/soak.hpp"
#include "vmbench/uplink.hpp"

using namespace zc;
using namespace zc::vmbench;

namespace {

const char* usage_text =
    "usage: zc-vmbench [--quick] [--sizes LIST] [--modes LIST] [--pairs LIST] [--queues LIST]\n"
    "                  [--workers N] [--seconds S] [--repeat N] [--json FILE] [--csv FILE]\n"
    "                  [--png FILE] [--netback PATH] [--busy-poll-us N]\n"
    "       zc-vmbench --modes soak [--guests N] [--flappers N] [--duration S] [--round S]\n"
    "                  [--kill-every S] [--rate N] [--seed N] [--rss-slack-mb M] [--json FILE]\n"
    "\n"
    "VM-to-VM throughput through zc-netback on an emulated Xen host, with the kernel\n"
    "path (two network namespaces joined by veth, UDP) and memcpy measured in the same run.\n"
    "\n"
    "  --sizes LIST    frame sizes in bytes (default 64,256,1500,4096,9000,65535; 65535 is\n"
    "                  the largest netif frame, XEN_NETIF_MAX_TX_SIZE)\n"
    "  --modes LIST    zc,double-copy,pressure,kernel,memcpy,app,app-headroom,app-copy,direct,\n"
    "                  direct-wait,rr,uplink (default all but app-headroom, app-copy and uplink)\n"
    "                  zc: one gref->gref grant copy per slot; double-copy: through a bounce\n"
    "                  buffer (zc-netback --force-bounce); pressure: receivers post few RX\n"
    "                  buffers so fallback engages; app: zc-perf between applications through\n"
    "                  zc-stackd in each guest (zc socket API, frames up to 1514 bytes);\n"
    "                  app-headroom: the same with zc-stackd --tx-headers headroom (one slot);\n"
    "                  app-copy: the same with zc-stackd --pool-export copy (each datagram\n"
    "                  copied into a netfront TX page, as on a guest kernel without udmabuf);\n"
    "                  (app, app-headroom and app-copy run zc-stackd --zc-direct off)\n"
    "                  direct: app with zc-stackd --zc-direct on (the direct path between the\n"
    "                  guests: zc-netback copies headers only, the receiver the payload), with\n"
    "                  direct/app ratios of throughput and zc-netback CPU per datagram;\n"
    "                  direct-wait: the same with --direct-at-quota wait (no fallback)\n"
    "                  rr: request/response round trips (p50/p99/p99.9) at the sizes up to\n"
    "                  1514, one request outstanding: zc-rr: raw netfront guests through\n"
    "                  zc-netback; app-rr: zc-rr between applications on zc-stackd in two\n"
    "                  guests (zc API, zc_recv_wait); kernel-rr: UDP over the kernel's veth;\n"
    "                  with ratios to kernel-rr of the same pass\n"
    "                  uplink (root): guest -> kernel namespace, UDP from --pairs sending guests\n"
    "                  through zc-netback --uplink (AF_XDP on one end of a veth pair, MTU 1500)\n"
    "                  to a kernel socket in a namespace at the other end, every byte checked;\n"
    "                  next to the kernel-udp rows (kernel -> kernel over veth) of the same\n"
    "                  pass. Frames up to 1514 B (the veth's MTU); above a 4 KiB UMEM frame\n"
    "                  AF_XDP needs multi-buffer (Linux 6.6+): shown as unsupported. Shows the\n"
    "                  XDP mode obtained (copy on veth); seg/pkt etc. are per frame on the wire\n"
    "                  soak (alone): --guests guests in a ring (i sends to i+1, mixed sizes 60..65535,\n"
    "                  every byte checked) for --duration seconds (default 3600) in --round S rounds\n"
    "                  (default 5) after a warm-up round; a random guest is SIGKILLed and re-created\n"
    "                  on its vif every ~--kill-every S (default 10, 0: never); --flappers more\n"
    "                  guests close and reopen their netfront in a loop. --rate N frames/s per guest\n"
    "                  (default 2000; 0: unpaced, receivers then fall behind and zc-netback's counted\n"
    "                  drops fail the lossless check). Fails (exit 1) when a frame\n"
    "                  between two guests connected through a round is lost, zc-netback's counters\n"
    "                  do not add up, or its RSS (beyond 10% or --rss-slack-mb, default 4), fds or\n"
    "                  mapped grants grew over the warm-up's\n"
    "  --pairs LIST    guest pairs, e.g. 1,2,4,8 (default 1)\n"
    "  --queues LIST   netif queues per vif, e.g. 1,2 (default 1)\n"
    "  --workers N     zc-netback data-path threads (default: one per queue, at most the CPUs)\n"
    "  --busy-poll-us N  app-rr rows: zc-stackd --busy-poll-us N and zc-rr --busy-poll\n"
    "                  (ZC_SOCK_BUSY_POLL, ZCNET_BUSY_POLL_US=N): spin before sleeping, only\n"
    "                  while a CPU is idle (default 0: off)\n"
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

int run(run_opts o) {
    std::signal(SIGPIPE, SIG_IGN);
    start_janitor(); // before any thread: the emulated hosts' brokers

    progress prog;
    {
        uint32_t zc_modes = 0;
        for (const char* m : {"zc", "double-copy", "pressure"})
            zc_modes += std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end();
        bool kernel = std::find(o.modes.begin(), o.modes.end(), "kernel") != o.modes.end();
        uint32_t app_sizes = 0;
        for (size_t s : o.sizes) app_sizes += s <= link::eth_frame_len;
        uint32_t app_modes = 0;
        for (const char* m : {"app", "app-headroom", "app-copy", "direct", "direct-wait"})
            app_modes += std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end();
        const bool uplink = std::find(o.modes.begin(), o.modes.end(), "uplink") != o.modes.end();
        uint32_t uplink_sizes = 0;
        for (size_t s : o.sizes) uplink_sizes += uplink && s <= link::eth_frame_len;
        prog.total = o.repeat * (uint32_t(o.sizes.size()) * (1 + (kernel || uplink ? 1 : 0) +
                                                             zc_modes * uint32_t(o.pairs.size() * o.queues.size())) +
                                 (kernel ? 1 : 0) + app_modes * app_sizes + uplink_sizes * uint32_t(o.pairs.size()) +
                                 (std::find(o.modes.begin(), o.modes.end(), "rr") != o.modes.end() ? 3 * app_sizes : 0));
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
    print_uplink_summary(passes);
    if (!agg.rr.empty()) {
        std::printf("\nround trips%s:\n", o.repeat > 1 ? " (median of the passes' percentiles)" : "");
        for (const rr_row& r : agg.rr) {
            print_rr(r);
            if (r.p50_vs_kernel > 0)
                std::printf("%-12s %7zu  /kernel-rr: p50 %.2fx  p99 %.2fx%s\n", r.mode.c_str(), r.frame,
                            r.p50_vs_kernel, r.p99_vs_kernel, o.repeat > 1 ? " (median of the passes' ratios)" : "");
        }
    }
    write_outputs(o, agg);
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
        if (g.role != "send" && g.role != "recv" && g.role != "soak") return 2;
        return run_guest(g);
    }
    run_opts o;
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    o.self = n > 0 ? std::string(self, size_t(n)) : argv[0];
    o.netback = sibling(o.self, "netback", "zc-netback");
    o.stackd = sibling(o.self, "uapi", "zc-stackd");
    o.perf = sibling(o.self, "apps", "zc-perf");
    o.rr = sibling(o.self, "apps", "zc-rr");
    soak_opts ss;
    bool json_set = false;
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
                    m != "app" && m != "app-headroom" && m != "app-copy" && m != "direct" && m != "direct-wait" && m != "rr" && m != "uplink" && m != "soak") {
                    std::fprintf(stderr, "zc-vmbench: unknown mode '%s'\n", m.c_str());
                    return 2;
                }
        } else if (a == "--busy-poll-us" && has) {
            long v = std::atol(argv[++i]);
            if (v < 0 || v > 1000) {
                std::fprintf(stderr, "zc-vmbench: --busy-poll-us takes 0..1000\n");
                return 2;
            }
            o.busy_poll_us = uint32_t(v);
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
        } else if (a == "--guests" && has) {
            ss.guests = uint32_t(std::atol(argv[++i]));
        } else if (a == "--flappers" && has) {
            ss.flappers = uint32_t(std::atol(argv[++i]));
        } else if (a == "--duration" && has) {
            ss.duration = std::atof(argv[++i]);
        } else if (a == "--round" && has) {
            ss.round = std::atof(argv[++i]);
        } else if (a == "--kill-every" && has) {
            ss.kill_every = std::atof(argv[++i]);
        } else if (a == "--rss-slack-mb" && has) {
            ss.rss_slack_kb = uint64_t(std::atof(argv[++i]) * 1024);
        } else if (a == "--rate" && has) {
            ss.rate = std::atof(argv[++i]);
        } else if (a == "--seed" && has) {
            ss.seed = uint32_t(std::strtoul(argv[++i], nullptr, 10));
        } else if (a == "--json" && has) {
            o.json = argv[++i];
            json_set = true;
        }
        else if (a == "--csv" && has) o.csv = argv[++i];
        else if (a == "--png" && has) o.png = argv[++i];
        else if (a == "--netback" && has) o.netback = argv[++i];
        else {
            std::fprintf(stderr, "zc-vmbench: bad or incomplete option '%s'\n\n%s", a.c_str(), usage_text);
            return 2;
        }
    }
    const bool soak = std::find(o.modes.begin(), o.modes.end(), "soak") != o.modes.end();
    if (soak) {
        if (o.modes.size() != 1) {
            std::fprintf(stderr, "zc-vmbench: --modes soak runs alone\n");
            return 2;
        }
        if (ss.guests < 2 || ss.guests + ss.flappers > 64 || (ss.kill_every > 0 && ss.kill_every < 0.2) || ss.round < 0.5 || ss.duration < 0) {
            std::fprintf(stderr, "zc-vmbench: soak needs 2 <= --guests (+ --flappers) <= 64, --round >= 0.5, --kill-every 0 or >= 0.2\n");
            return 2;
        }
    }
    if (::access(o.netback.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "zc-vmbench: zc-netback not found at %s (use --netback PATH)\n", o.netback.c_str());
        return 2;
    }
    if (soak) {
        std::signal(SIGPIPE, SIG_IGN);
        start_janitor();
        ss.json = json_set ? o.json : "";
        return run_soak(o, ss);
    }
    return run(o);
}
