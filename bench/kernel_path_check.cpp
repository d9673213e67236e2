// SPDX-License-Identifier: MIT
// zc-kernel-path: runs the kernel path baseline on its own and prints a table,
// to check the namespaces/veth/socket plumbing outside zc-vmbench.
//
//   zc-kernel-path [--seconds S] [--frames 64,1500,9000] [--bulk BYTES]
//
// Exits 0 when every row received data with integrity intact, 2 when the
// kernel path is unavailable here (not root, no `ip netns`), 1 otherwise.
// Speed never decides the exit code.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/kernel_path.hpp"

using namespace zc::bench;

namespace {

void print_header() {
    printf("%-5s %7s %7s %9s %8s %8s %12s %12s %8s %7s %9s %8s %6s %9s\n", "proto", "frame", "payload", "Gbit/s",
           "payGb/s", "Mpps", "sent", "received", "lost%", "cpu-s", "tx/rx-cpu", "mach-cpu", "intgr", "note");
}

bool print_row(const kernel_result& r) {
    double lost = r.frames_sent ? 100.0 * double(r.frames_lost) / double(r.frames_sent) : 0;
    const char* note = r.capped ? "capped" : (r.proto == "tcp" ? "bulk" : "");
    printf("%-5s %7zu %7zu %9.3f %8.3f %8.3f %12" PRIu64 " %12" PRIu64 " %8.2f %7.3f %4.2f/%4.2f %8.3f %6s %9s\n", r.proto.c_str(),
           r.frame, r.payload, r.gbps, r.payload_gbps, r.mpps, r.frames_sent, r.frames_received, lost,
           r.cpu_seconds, r.cpu_tx_seconds, r.cpu_rx_seconds, r.machine_cpu_seconds, r.integrity_ok ? "ok" : "FAIL", note);
    if (!r.error.empty()) printf("      error: %s\n", r.error.c_str());
    fflush(stdout);
    return r.error.empty() && r.integrity_ok && r.frames_received > 0;
}

std::vector<size_t> parse_list(const char* s) {
    std::vector<size_t> v;
    while (*s) {
        char* end;
        unsigned long x = strtoul(s, &end, 10);
        if (end == s) break;
        v.push_back(x);
        s = *end == ',' ? end + 1 : end;
    }
    return v;
}

} // namespace

int main(int argc, char** argv) {
    double seconds = 0.5;
    std::vector<size_t> frames = {64, 1500, 9000};
    size_t bulk = 128 * 1024;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc) frames = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--bulk") && i + 1 < argc) bulk = strtoul(argv[++i], nullptr, 10);
        else {
            fprintf(stderr, "usage: %s [--seconds S] [--frames 64,1500,9000] [--bulk BYTES]\n", argv[0]);
            return 1;
        }
    }
    std::string why;
    if (!kernel_path_available(&why)) {
        fprintf(stderr, "zc-kernel-path: unavailable: %s\n", why.c_str());
        return 2;
    }
    printf("kernel path: two netns joined by veth (mtu %u: frames up to 64 KiB are single frames; UDP payload "
           "= frame - 42, capped at %zu), %.2f s per row; Gbit/s counts Ethernet frame bytes received\n",
           veth_mtu, max_udp_payload, seconds);
    print_header();
    bool ok = true;
    auto udp = run_kernel_udp(frames, seconds, &why, [&](const kernel_result& r) { ok &= print_row(r); });
    if (!udp) {
        fprintf(stderr, "zc-kernel-path: udp: %s (%s)\n", why.c_str(), strerror(-udp.error()));
        return 1;
    }
    auto tcp = run_kernel_tcp(bulk, seconds, &why);
    if (!tcp) {
        fprintf(stderr, "zc-kernel-path: tcp: %s (%s)\n", why.c_str(), strerror(-tcp.error()));
        return 1;
    }
    ok &= print_row(*tcp);
    printf("%s\n", ok ? "kernel path: ok" : "kernel path: FAILED");
    return ok ? 0 : 1;
}
