// SPDX-License-Identifier: MIT
// The kernel path baseline for zc-vmbench: two network namespaces joined by
// a veth pair, kernel sockets, measured in the same run as the zc path so the
// figures are ratios that survive a noisy machine (docs/ARCHITECTURE.md, "Measuring").
//
// Sender and receiver are forked child processes, each setns(2)'d into its
// own namespace. Frames carry a sequence number and a byte pattern; the
// receiver checks every byte (integrity) and counts what arrives, the sender
// counts what it handed to the kernel, so UDP drops show up honestly as
// frames_sent - frames_received. Needs root and `ip netns` (iproute2); the
// namespaces are uniquely named (zcb-<pid>-<n>-a/b) and always removed, also
// when a SIGINT/SIGTERM/SIGHUP arrives during a measurement.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace zc::bench {

// Header sizes on the zc path: a frame of F bytes carries F - 42 bytes of UDP
// payload (Ethernet 14, IPv4 20, UDP 8).
inline constexpr size_t eth_ip_udp_overhead = 14 + 20 + 8;
// The largest UDP payload over IPv4 (65535 - 20 - 8).
inline constexpr size_t max_udp_payload = 65507;
// The veth MTU we set: veth allows up to 64 KiB, so 9000 and 65536-byte
// frames travel as single, unfragmented frames.
inline constexpr uint32_t veth_mtu = 65535;
// Every datagram starts with a sequence number and a tag (see kernel_path.cpp),
// so frames below 42 + 12 = 54 bytes cannot be measured.
inline constexpr size_t min_udp_payload = 12;

// UDP payload for an Ethernet frame of `frame` bytes: frame - 42, capped at
// max_udp_payload (*capped tells). 0 when the frame is too small to carry our
// header.
size_t udp_payload_for_frame(size_t frame, bool* capped = nullptr) noexcept;

struct kernel_result {
    std::string proto;        // "udp" or "tcp"
    size_t frame = 0;         // requested frame size (UDP) or write size (TCP bulk)
    size_t payload = 0;       // UDP payload per datagram / bytes per TCP write
    size_t wire_frame = 0;    // frame actually on the veth: payload + 42 (UDP)
    bool capped = false;      // payload was capped at max_udp_payload
    uint32_t mtu = 0;         // veth MTU during the run
    double seconds = 0;       // receiver's window: first to last data frame
    // Rates over `seconds`, from what the RECEIVER got. UDP: gbps counts
    // wire_frame bytes (the Ethernet frame, like the zc path), payload_gbps
    // the UDP payload only. TCP: both count stream bytes; mpps counts writes'
    // worth of bytes (bytes / payload).
    double gbps = 0, payload_gbps = 0, mpps = 0;
    // User + system CPU seconds of the sender and receiver processes (wait4
    // rusage). The veth hop runs mostly in the sender's softirq context and so
    // is included; work that ksoftirqd picks up is not.
    double cpu_seconds = 0, cpu_tx_seconds = 0, cpu_rx_seconds = 0;
    // Busy CPU seconds of the whole machine (/proc/stat) from sender start to
    // both children reaped: adds softirq/ksoftirqd work the rusage misses,
    // but also whatever else runs on this shared machine. -1: unknown.
    double machine_cpu_seconds = -1;
    uint64_t frames_sent = 0;      // datagrams (UDP) / writes (TCP) the sender completed
    uint64_t frames_received = 0;  // datagrams received (UDP) / bytes / payload (TCP)
    uint64_t bytes_sent = 0;       // payload bytes handed to the kernel
    uint64_t bytes_received = 0;   // payload bytes received
    uint64_t frames_lost = 0;      // UDP: frames_sent - frames_received
    uint64_t reordered = 0;        // UDP: datagrams arriving below the highest seq seen
    uint64_t bad_frames = 0;       // failed the size/tag/pattern check
    bool integrity_ok = false;     // something arrived and every byte checked out
    // Request/response (run_kernel_udp_rr): round-trip percentiles; frames_received
    // counts completed round trips, frames_lost requests without an answer.
    double rtt_p50_us = 0, rtt_p99_us = 0, rtt_p999_us = 0;
    std::string error;             // non-empty: this row failed (other rows may be fine)
};

// Called after each row, for live progress.
using kernel_progress = std::function<void(const kernel_result&)>;

// Whether this process can create network namespaces with `ip netns`; on
// false, *why says why (not root, iproute2 missing, no netns support).
bool kernel_path_available(std::string* why);

// UDP: for each frame size, `seconds_per_size` of sendmmsg/recvmmsg between
// the two namespaces (batches of 32; blocking send, so the socket buffer gives
// backpressure). One namespace pair serves all sizes. Errors: -EPERM (not
// root), -ENOTSUP (no `ip netns`), -EIO (setting up the pair failed); *why
// holds the text. A failure of one size is that row's `error`.
result<std::vector<kernel_result>> run_kernel_udp(const std::vector<size_t>& frame_sizes,
                                                  double seconds_per_size, std::string* why,
                                                  const kernel_progress& progress = {});

// UDP request/response: one datagram of a `frame`-byte Ethernet frame to
// the other namespace, which echoes it; the next goes when the answer is
// back (1 s timeout, counted lost). For `seconds`; round-trip percentiles.
result<kernel_result> run_kernel_udp_rr(size_t frame, double seconds, std::string* why);

// TCP bulk: one connection, writes of `bulk` bytes for `seconds`, then
// shutdown; the receiver reads until EOF and checks the byte stream.
result<kernel_result> run_kernel_tcp(size_t bulk, double seconds, std::string* why);

// The UDP payload the kernel path's receiver checks, for a sender outside
// it (zc-vmbench's uplink guests): u64 sequence number, u32 tag (data or end
// marker), then byte j = (seq + j) & 0xff. `len` >= min_udp_payload.
void write_udp_payload(uint8_t* p, size_t len, uint64_t seq, bool end) noexcept;

// zc-vmbench's uplink mode: the kernel path's veth kind, but the near end
// (interface `ifname()` in namespace `near_netns()`, no address, `mtu`) is
// left to an AF_XDP uplink (zc-netback --uplink), and the far end has
// far_ip()/24 and far_mac() in its own namespace, where a kernel UDP socket
// receives. Uniquely named as the kernel path's pairs (stale ones are
// removed the same way) and removed with this object, and on
// SIGINT/SIGTERM/SIGHUP together with the processes given to track().
class uplink_veth {
public:
    static result<std::unique_ptr<uplink_veth>> create(uint32_t mtu, std::string* why);
    ~uplink_veth();
    uplink_veth(const uplink_veth&) = delete;
    uplink_veth& operator=(const uplink_veth&) = delete;

    // argv prefix that runs a program in the near namespace (ip netns exec,
    // which execs: the pid is the program's).
    std::vector<std::string> near_exec() const;
    std::string near_netns() const;
    static const char* ifname() noexcept;
    std::string far_ip() const;
    std::string guest_ip(unsigned i) const; // an address for sender i on the far end's /24
    static const char* far_mac() noexcept;
    static uint16_t port() noexcept;

    // A process in the near namespace, killed by the signal-time cleanup.
    void track(pid_t pid) noexcept;
    void untrack(pid_t pid) noexcept;

    // One frame from the far end onto the wire (its kernel's ARP request
    // for guest_ip(0), broadcast): a learning switch behind the near end
    // then knows far_mac() is there instead of flooding frames to it.
    void announce();

    // One measurement: a UDP socket on far_ip():port() receives datagrams
    // of an Ethernet frame of `frame` bytes (write_udp_payload's format,
    // every byte checked) while `send` runs; `send` is called once the
    // socket is bound, returns when its sender is done (end markers sent)
    // and says how many datagrams it sent, or false and why. The result as
    // run_kernel_udp's rows (cpu_seconds: the receiver's only).
    using sender = std::function<bool(uint64_t* sent, std::string* why)>;
    kernel_result receive_udp(size_t frame, double seconds, const sender& send);

private:
    uplink_veth();
    struct impl;
    std::unique_ptr<impl> _p;
};

// The prefix of every namespace this process creates ("zcb-<pid>-"), so tests
// and tools can check that none are left behind.
std::string kernel_netns_prefix();

// Kills the running measurement's children and detaches its namespaces.
// Async-signal-safe: a runner with its own signal handlers may call it from
// them. The handlers this module installs during a run already do.
void kernel_path_emergency_cleanup() noexcept;

// Removes namespaces named zcb-<pid>-* whose <pid> is no longer alive (left by
// a SIGKILLed run). Runs at the start of every measurement; returns how many
// it removed.
int kernel_path_remove_stale() noexcept;

} // namespace zc::bench
