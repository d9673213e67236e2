// SPDX-License-Identifier: MIT
// Inside the kernel path baseline (kernel_path.hpp), shared by its files and
// by nothing else: kernel_netns.cpp (the namespace pairs, iproute2, the
// signal-time cleanup registry), kernel_path.cpp (the measuring children and
// runs), uplink_veth.cpp (the uplink mode's pair).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "bench/kernel_path.hpp"

namespace zc::bench::detail {

inline constexpr const char* tag = "kpath";

// Datagram header: u64 sequence number, u32 tag. The rest of the payload is
// byte j = (seq + j) & 0xff, so a payload from the wrong datagram, a shifted
// one or a corrupted one fails the check, and the check is one memcmp.
inline constexpr uint32_t tag_data = 0x5a43424b; // "ZCBK"
inline constexpr uint32_t tag_end = 0x5a434545;  // end marker
inline constexpr size_t hdr_size = 12;
static_assert(hdr_size == min_udp_payload);
inline constexpr int batch = 32;             // sendmmsg/recvmmsg batch
inline constexpr size_t rx_slot = 65536;     // > max_udp_payload: oversize shows as MSG_TRUNC
inline constexpr uint16_t udp_port = 47213;
inline constexpr uint16_t tcp_port = 47214;
// TCP stream byte at offset o is o % 251: a prime period never lines up with
// write or read sizes, so a lost, repeated or reordered chunk is caught.
inline constexpr size_t tcp_period = 251;
inline constexpr size_t tcp_rx_buf = 256 * 1024;
inline constexpr int end_markers = 8;        // UDP may drop some; the receiver also has an idle timeout
inline constexpr int64_t rx_idle_ns = 1'000'000'000;
inline constexpr const char* veth_name = "zcv0"; // same name in both namespaces: each has its own

// ---------------------------------------------------------------------------
// Signal-time cleanup registry (kernel_netns.cpp): namespaces and processes
// that kernel_path_emergency_cleanup() removes and kills.
extern std::mutex g_run_mutex; // one measurement at a time: the registry is global
int register_ns(const std::string& path) noexcept;
void register_pid(pid_t p) noexcept;
void unregister_pid(pid_t p) noexcept;
// A child's signal dispositions back to the defaults (ours would run the
// parent's cleanup).
void default_signals() noexcept;

// iproute2: its absolute path, and `ip args...` run (0 ok, the exit status,
// or -errno when it could not run; *out gets its output, trimmed).
const char* ip_binary() noexcept;
int run_ip(const std::vector<std::string>& args, std::string* out);
// Common checks before touching namespaces.
int precheck(std::string* why);

// The kernel path's pair by default; uplink_veth's: a's end without an
// address (an AF_XDP port), b's with a fixed MAC, a /24 and `mtu`.
struct netns_config {
    uint32_t mtu = veth_mtu;
    bool near_addr = true;
    std::string far_mac;
};

// A namespace pair joined by a veth, configured and always removed.
class netns_pair {
public:
    netns_pair() = default;
    netns_pair(const netns_pair&) = delete;
    netns_pair& operator=(const netns_pair&) = delete;
    ~netns_pair() { teardown(); }

    int setup(std::string* why, const netns_config& c = netns_config());
    void teardown() noexcept;

    int fd(int i) const noexcept { return _fds[i]; }
    const std::string& name(int i) const noexcept { return _names[i]; }
    std::string addr(int host) const { return "10.213." + std::to_string(_subnet) + "." + std::to_string(host); }

private:
    std::string _names[2];
    bool _created[2] = {false, false};
    int _slots[2] = {-1, -1};
    int _fds[2] = {-1, -1};
    unsigned _subnet = 0;
    bool _handlers = false;
};

// ---------------------------------------------------------------------------
// Children (kernel_path.cpp)

struct report {
    uint32_t phase = 0; // 1 ready, 2 done
    int32_t err = 0;    // negative errno
    char what[64] = {};
    uint64_t frames = 0, bytes = 0, bad = 0, reordered = 0;
    int64_t first_ns = 0, last_ns = 0;
    uint64_t lost = 0;                      // request/response: requests without an answer
    int64_t p50_ns = 0, p99_ns = 0, p999_ns = 0; // request/response: round-trip percentiles
};
static_assert(sizeof(report) <= PIPE_BUF, "reports are written atomically");

// Everything a child touches, allocated by the parent before fork.
struct buffers {
    std::vector<uint8_t> pattern;    // UDP: byte i = i & 0xff; TCP: byte i = i % 251
    std::vector<uint8_t> rx;         // UDP: batch slots; TCP: one read buffer
    std::vector<uint8_t> hdrs;       // UDP sender: one header per batch slot
    std::vector<mmsghdr> msgs;
    std::vector<iovec> iovs;
    std::vector<int64_t> rtt;        // request/response: one round trip per entry
};

void send_report(int fd, report& r, uint32_t phase) noexcept;
[[noreturn]] void child_fail(int fd, report& r, const char* what) noexcept;
// Common start of every child: die with the parent, default signal
// dispositions, enter the namespace.
void child_enter(int ns_fd, pid_t parent, int report_fd, report& r) noexcept;
sockaddr_in make_addr(const std::string& ip, uint16_t port);
// Receives `payload`-byte datagrams in the format of write_udp_payload on
// `self` until an end marker, an idle second after data, or the deadline.
[[noreturn]] void udp_receiver(int ns_fd, pid_t parent, int wfd, sockaddr_in self, size_t payload,
                               int64_t hard_deadline_ns, buffers& b) noexcept;

// ---------------------------------------------------------------------------
// Parent side

// Reads one report; false on timeout or when the child died first.
bool read_report(int fd, report& r, int timeout_ms) noexcept;

struct child {
    pid_t pid = -1;
    int rfd = -1;
    rusage ru{};

    // Reaps the child (killing it first when `kill_it`), keeping its rusage.
    void reap(bool kill_it) noexcept {
        if (pid > 0) {
            if (kill_it) kill(pid, SIGKILL);
            int st;
            while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {}
            unregister_pid(pid);
            pid = -1;
        }
        if (rfd >= 0) close(rfd);
        rfd = -1;
    }
    ~child() { reap(true); }
};

inline double cpu_of(const rusage& ru) noexcept {
    return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Forks `body(write_fd)` as a child; the parent keeps the read end.
template <class F>
int spawn(child& c, F&& body) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -errno;
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    if (p == 0) {
        close(pfd[0]);
        body(pfd[1]); // never returns
        _exit(127);
    }
    register_pid(p);
    close(pfd[1]);
    c.pid = p;
    c.rfd = pfd[0];
    return 0;
}

enum class proto { udp, tcp };

// The figures of a result from the receiver's report; `tx_window_ns` is the
// sender's time, used when the receiver has no window (one frame or none).
void set_rates(kernel_result& out, proto pr, size_t payload, const report& rr, int64_t tx_window_ns);

} // namespace zc::bench::detail
