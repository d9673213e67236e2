// SPDX-License-Identifier: MIT
// zc-vmbench's emulated hosts: a broker playing the hypervisor, zc-netback
// as dom0's backend, and the guests of a mode (raw netfront guests in
// pairs, or zc-stackd guests for the app mode); the rows they measure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hv/emu/host.hpp"
#include "hv/xs.hpp"
#include "proc.hpp"

namespace zc::vmbench {

struct row {
    std::string mode;
    size_t frame = 0;
    uint32_t pairs = 1, queues = 1;
    double gbps = 0, mpps = 0, cpu_s_per_gb = 0;
    uint64_t frames = 0, sent = 0;
    bool intact = false;
    double segs_per_pkt = 0, batches_per_pkt = 0, notifies_per_pkt = 0, fallbacks_per_pkt = 0;
    double nb_us_per_pkt = 0; // zc-netback's own CPU (user + system) per delivered frame
    double gbps_min = 0, gbps_max = 0; // --repeat: the spread of the passes (gbps is their median)
    uint32_t passes = 1;
    std::string note;
    std::string xdp_mode; // uplink rows: the XDP mode zc-netback's uplink obtained
    // uplink rows, per frame on the wire: header copies into local memory
    // (switching), and copies of the whole frame (grant copy into the UMEM,
    // bounce copies, the kernel's copy in XDP copy/skb mode).
    double hdr_copies_per_pkt = 0, copies_per_pkt = 0;
};

// A request/response measurement: round-trip times in microseconds.
struct rr_row {
    std::string mode; // zc-rr (through zc-netback) or kernel-rr (veth, UDP)
    size_t frame = 0;
    uint64_t samples = 0, lost = 0;
    double p50 = 0, p99 = 0, p999 = 0;
    // app-rr: CPU time of every process on the path (both stacks, the two
    // applications, zc-netback) and zc-netback's notifications, per round trip.
    double cpu_us_per_rt = 0, notifies_per_rt = 0;
    std::string cpu_split; // app-rr: that CPU time by process
    // This pass's p50 and p99 over the kernel-rr row of the same frame size
    // (with --repeat: the median of the passes' ratios).
    double p50_vs_kernel = 0, p99_vs_kernel = 0;
};

struct run_opts {
    std::vector<size_t> sizes{64, 256, 1500, 4096, 9000, 65535}; // 65535: XEN_NETIF_MAX_TX_SIZE
    std::vector<std::string> modes{"zc", "double-copy", "pressure", "kernel", "memcpy", "app", "rr"};
    std::vector<uint32_t> pairs{1};
    std::vector<uint32_t> queues{1};
    uint32_t workers = 0; // zc-netback data-path threads; 0: one per queue, at most the CPUs
    double seconds = 1.0;
    uint32_t repeat = 1; // the modes run this many times, interleaved; rows report the median
    std::string json = "zc-vmbench.json", csv = "zc-vmbench.csv", png = "zc-vmbench.png";
    std::string netback, self;
    std::string stackd, perf; // app mode: zc-stackd and zc-perf
    std::string rr;           // rr mode's app rows: zc-rr
    uint32_t busy_poll_us = 0; // app rows: zc-stackd --busy-poll-us, zc-rr --busy-poll (0: off)
};

// A program zc-vmbench runs: in the build tree at ../<build_rel>, installed
// (cmake --install, the zcnet package) next to zc-vmbench itself.
std::string sibling(const std::string& self, const std::string& build_rel, const std::string& name);

// The part of an emulated host every mode shares: a broker (the
// hypervisor) in a temporary directory, dom0's port and xenstore, and
// zc-netback serving dom0's vifs with a control socket for its counters.
struct dom0_host {
    std::unique_ptr<hv::emu::host> emu; // hv/emu/host.hpp: broker thread + directory
    std::string dir;                    // emu->dir(), where logs and sockets go
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs;
    child netback;
    std::string ctl;
    env_list env; // what every domain's process gets
    std::vector<std::string> exec_prefix; // zc-netback's argv starts with it (e.g. ip netns exec NS)

    bool start_dom0(const char* tag, const run_opts& o, const std::vector<std::string>& nb_args, std::string* why);

    env_list domain_env(hv::domid_t d, bool attach = false) const;

    // A guest (this binary's guest role as domain `d`) and its vif, as the
    // toolstack creates them; connect_guest() then connects its netfront
    // and reads back its MAC.
    bool add_guest(const run_opts& o, hv::domid_t d, const std::string& role, uint32_t rx_buffers, uint32_t queues,
                   child& out, std::string* why);
    static bool connect_guest(child& g, hv::domid_t d, std::string& mac, std::string* why);

    void stop_dom0();
};

// One emulated host: broker, zc-netback with `nb_args`, `pairs` guest pairs
// (guest 2p+1 sends to 2p+2), or with `senders_only` `pairs` sending guests.
struct host : dom0_host {
    std::vector<child> guests; // 2 per pair: sender, receiver
    std::vector<std::string> macs;

    ~host() { shutdown(); }

    bool start(const run_opts& o, uint32_t pairs, const std::vector<std::string>& nb_args, uint32_t rx_buffers,
               uint32_t queues, std::string* why, bool senders_only = false);

    std::vector<pid_t> pids() const;

    void shutdown();

    // Request/response between the first pair: round-trip percentiles.
    bool measure_rr(uint32_t phase, size_t size, double seconds, rr_row& r, std::string* why);

    // One measurement: every pair at `size` for `seconds`.
    bool measure(uint32_t phase, size_t size, double seconds, row& r, std::string* why);
};

// memcpy of `size`-byte frames for `seconds`: the baseline row.
row memcpy_row(size_t size, double seconds);

// ---------------------------------------------------------------------------
// app mode: application to application. zc-netback in dom0, zc-stackd in
// guests 1 and 2 (10.0.0.1, 10.0.0.2), a zc-perf server attached to guest 2's
// stack and, per frame size, a zc-perf client on guest 1's stack sending
// strict zero-copy UDP with every payload verified. The row counts Ethernet
// frame bytes (UDP payload + 42) as the raw rows do, so app/zc is the cost of
// the socket layer (rings, stack service, headers, the RX copy into the
// socket's pool) over raw netfront frames.
//
// With `rr` set, a zc-rr echo server on guest 2's stack too, and
// measure_rr() runs a zc-rr client on guest 1's: request/response between
// applications, each blocking in zc_recv_wait().
struct app_host : dom0_host {
    child server, rr_server;
    child stackd[2];
    std::string sock[2];

    ~app_host();

    // `nb_args`: zc-netback's options (the rr mode's: its worker count).
    // `stackd_args`: more zc-stackd options (--zc-direct on|off).
    bool start(const run_opts& o, const std::string& tx_headers, std::string* why,
               const std::vector<std::string>& nb_args = {}, const std::vector<std::string>& stackd_args = {});

    bool measure(size_t frame, double seconds, row& r, std::string* why);
    bool measure_rr(size_t frame, double seconds, rr_row& r, std::string* why);
    std::string o_perf, o_rr;
    uint32_t busy_us = 0; // run_opts::busy_poll_us
    env_list busy_env() const;
    std::string mode = "app";
    std::string pool_export = "auto"; // zc-stackd --pool-export (app-copy: copy)
};

} // namespace zc::vmbench
