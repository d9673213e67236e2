// SPDX-License-Identifier: MIT
// zc-netback: a userspace Xen netif backend (drop-in for Linux xen-netback).
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <poll.h>
#include <sched.h>
#include <string>
#include <vector>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

extern "C" {
#include <xen/io/xenbus.h>
}

#include "common/clock.hpp"
#include "common/log.hpp"
#include "hv/hv.hpp"
#include "netback/backend.hpp"
#include "netback/metrics.hpp"
#include "netback/toolstack.hpp"

using namespace zc;
using namespace zc::netback;

namespace {

// The CPUs this process may run on (sched_getaffinity, so taskset and
// cgroup cpusets count), 1..64: the default number of data-path workers.
// Workers sleep in poll() when idle, so more of them never spin.
uint32_t cpus_available() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return uint32_t(std::clamp(CPU_COUNT(&set), 1, 64));
}

const char* usage_text =
    "usage: zc-netback [run] [--workers N] [--max-queues N] [--no-split-evtchn]\n"
    "                  [--force-bounce] [--rx-queue N] [--drain-ms MS] [--ctl PATH]\n"
    "                  [--bounce-buffers N] [--bounce-src-quota BYTES|off]\n"
    "                  [--bounce-dst-quota BYTES|off] [--held-tx-slots N] [--idle-ms MS]\n"
    "                  [--uplink IFNAME]... [--xdp-mode any|zc|copy|skb] [--xdp-batch N]\n"
    "                  [--uplink-frames N] [--uplink-aging S]\n"
    "                  [--metrics-file PATH [--metrics-interval S]]\n"
    "       zc-netback stats [--json | --prometheus] [--ctl PATH]\n"
    "       zc-netback vif-add --frontend DOM [--devid N] [--mac aa:bb:cc:dd:ee:ff] [--backend DOM]\n"
    "                          [--ip \"A.B.C.D ...\"] [--rate RATE]\n"
    "       zc-netback vif-del --frontend DOM [--devid N] [--backend DOM]\n"
    "\n"
    "run      serve every vif whose backend directory is under this domain's\n"
    "         backend/vif in xenstore (the default command). Stops on SIGINT/SIGTERM.\n"
    "stats    per-vif counters of a running zc-netback, as a table, JSON or the\n"
    "         Prometheus text format.\n"
    "vif-add  the toolstack's part (xl network-attach): create the frontend and\n"
    "         backend xenstore directories of a vif. Needs dom0 privilege.\n"
    "vif-del  remove them again.\n"
    "--ip      vif-add: the IPv4 source addresses the guest may use (xl's ip=)\n"
    "--rate    vif-add: TX rate as xl's rate= (e.g. 10Mb/s, 1MB/s, 10Mb/s@20ms);\n"
    "          written as libxl does (the `rate` key: BYTES,USECS)\n"
    "\n"
    "--workers N       data-path threads (default: the CPUs this process may run on, at\n"
    "                  most 64; each blocks in poll(), none busy-polls). A new queue goes\n"
    "                  to the worker serving the fewest queues\n"
    "--max-queues N    multi-queue-max-queues offered to frontends (default 4)\n"
    "--no-split-evtchn do not offer feature-split-event-channels\n"
    "--force-bounce    copy every frame through a bounce buffer (the double-copy baseline)\n"
    "--rx-queue N      frames held per vif while its guest posts no RX buffers (default 256)\n"
    "--drain-ms MS     then they are dropped and counted (default 10000)\n"
    "--bounce-buffers N  4 KiB bounce buffers shared by all vifs for fallback copies\n"
    "                  (a frame waiting too long for its receiver's RX buffers; default 1024)\n"
    "--bounce-src-quota BYTES  bounce bytes one vif's frames may hold as their sender\n"
    "                  (default: a quarter of the pool); `off`: no quota\n"
    "--bounce-dst-quota BYTES  bounce bytes the frames waiting for one vif may hold\n"
    "                  (default: an eighth of the pool, 512 KiB); `off`: no quota. A fallback\n"
    "                  over either is dropped and counted (drop_bounce_quota)\n"
    "--held-tx-slots N TX slots of its senders one vif's queue may hold zero-copy while it\n"
    "                  takes nothing; beyond, frames go to bounce buffers at once or are\n"
    "                  dropped, so a sender keeps slots for its other vifs (default 128)\n"
    "--idle-ms MS      a vif that published nothing for MS while frames wait takes nothing:\n"
    "                  --held-tx-slots applies, fallbacks over a quota are dropped (before,\n"
    "                  they wait: it paces its senders) (default 10)\n"
    "--uplink IFNAME   an AF_XDP uplink on IFNAME (repeatable): a switch port to the wire\n"
    "                  and the host; zc-netback's XDP program is attached while it runs\n"
    "--xdp-mode M      any (default: driver zero-copy, else driver copy, else generic),\n"
    "                  or require zc, copy or skb (fails when the driver cannot)\n"
    "--xdp-batch N     frames per AF_XDP ring operation (default 64)\n"
    "--uplink-frames N UMEM frames of 4 KiB per uplink, a power of two (default 4096)\n"
    "--uplink-aging S  MACs learned behind an uplink are forgotten after S seconds (default 300)\n"
    "--metrics-file PATH  write the counters in the Prometheus text format to PATH\n"
    "                  every --metrics-interval seconds (default 15), atomically, for\n"
    "                  node_exporter's textfile collector; removed on exit\n"
    "--ctl PATH        control socket (default: next to the emulated host's broker, or\n"
    "                  /run/zcnet/netback.sock)\n"
    "The hypervisor is chosen as everywhere in zcnet: ZCNET_HV=xen|emu, else /dev/xen.\n";

std::string default_ctl() {
    if (const char* e = std::getenv("ZCNET_NETBACK_CTL"); e && *e) return e;
    if (const char* s = std::getenv("ZCNET_EMU_SOCK"); s && *s) {
        std::string p = s;
        auto slash = p.rfind('/');
        return (slash == std::string::npos ? std::string(".") : p.substr(0, slash)) + "/netback.sock";
    }
    return "/run/zcnet/netback.sock";
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\', o += c;
        else if (uint8_t(c) < 0x20) o += ' ';
        else o += c;
    }
    return o;
}

std::string stats_json(backend& b) {
    std::string out = "{\"vifs\":[";
    bool first = true;
    auto devs = b.devices();
    for (auto& v : b.dp().vifs()) {
        const auto& s = v.stats;
        int be_state = -1, fe_state = -1;
        for (auto& d : devs)
            if (d.frontend == v.frontend && d.devid == v.devid) be_state = d.backend_state, fe_state = d.frontend_state;
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"frontend\":%u,\"devid\":%u,\"mac\":\"%s\",\"queues\":%u,\"backend_state\":%d,"
                      "\"frontend_state\":%d,\"disabled\":%s,\"disabled_reason\":\"",
                      first ? "" : ",", unsigned(v.frontend), v.devid, to_string(v.mac).c_str(), v.queues, be_state,
                      fe_state, v.disabled ? "true" : "false");
        out += buf;
        out += json_escape(v.disabled_reason) + "\"";
        // Bounce-pool bytes held now as sender and receiver (gauges).
        out += ",\"bounce_src_bytes\":" + std::to_string(v.bounce_src_bytes) +
               ",\"bounce_dst_bytes\":" + std::to_string(v.bounce_dst_bytes);
        // The direct path: negotiated, and descriptors not yet released (a gauge).
        out += std::string(",\"zc_direct\":") + (v.zc_direct ? "true" : "false") +
               ",\"direct_outstanding\":" + std::to_string(v.direct_outstanding);
        // Every counter of the schema (netback/counters.hpp), in its order.
        for (size_t k = 0; k < vif_stats::schema_size; k++)
            out += std::string(",\"") + vif_stats::schema[k].name + "\":" + std::to_string(s.field(k));
        out += ",\"batch_hist\":[";
        for (unsigned i = 0; i < batch_hist_buckets; i++) out += (i ? "," : "") + std::to_string(s.batch_hist[i]);
        // Per queue, like ethtool -S: where each queue stands now.
        out += "],\"queue_state\":[";
        for (size_t qi = 0; qi < v.queue_state.size(); qi++) {
            const queue_info& q = v.queue_state[qi];
            std::snprintf(buf, sizeof buf,
                          "%s{\"index\":%u,\"worker\":%u,\"tx_unconsumed\":%u,\"tx_in_flight\":%u,\"rx_posted\":%u,"
                          "\"held_frames\":%u,\"held_bytes\":%" PRIu64 ",\"stalled\":%s}",
                          qi ? "," : "", q.index, q.worker, q.tx_unconsumed, q.tx_in_flight, q.rx_posted, q.held_frames,
                          q.held_bytes, q.stalled ? "true" : "false");
            out += buf;
        }
        out += "]}";
        first = false;
    }
    out += "],\"uplinks\":[";
    first = true;
    for (auto& u : b.dp().uplinks()) {
        out += std::string(first ? "" : ",") + "{\"ifname\":\"" + json_escape(u.ifname) + "\",\"xdp_mode\":\"" +
               u.mode + "\",\"mac\":\"" + to_string(u.mac) + "\",\"mtu\":" + std::to_string(u.mtu);
        for (size_t k = 0; k < uplink_stats::schema_size; k++)
            out += std::string(",\"") + uplink_stats::schema[k].name + "\":" + std::to_string(u.stats.field(k));
        out += ",\"xdp_redirected\":" + std::to_string(u.xdp_redirected) +
               ",\"xdp_passed\":" + std::to_string(u.xdp_passed) + ",\"xdp_runts\":" + std::to_string(u.xdp_runts) +
               ",\"fill_starved\":" + std::to_string(u.fill_starved) +
               ",\"tx_wakeups\":" + std::to_string(u.tx_wakeups) + ",\"rx_wakeups\":" + std::to_string(u.rx_wakeups) +
               "}";
        first = false;
    }
    out += "],\"devices\":[";
    first = true;
    for (auto& d : devs) {
        out += std::string(first ? "" : ",") + "{\"frontend\":" + std::to_string(d.frontend) +
               ",\"devid\":" + std::to_string(d.devid) + ",\"backend_state\":" + std::to_string(d.backend_state) +
               ",\"frontend_state\":" + std::to_string(d.frontend_state) + ",\"error\":\"" +
               json_escape(d.last_error) + "\"}";
        first = false;
    }
    // Counters of removed vifs (their frames still add up), and the
    // hypervisor operations: grant maps - unmaps is what zc-netback maps now.
    const vif_stats r = b.dp().retired_stats();
    out += "],\"retired\":{";
    for (size_t k = 0; k < vif_stats::schema_size; k++)
        out += std::string(k ? ",\"" : "\"") + vif_stats::schema[k].name + "\":" + std::to_string(r.field(k));
    const hv::op_counters h = b.dp().hv_counters();
    out += "},\"hv\":{\"maps\":" + std::to_string(h.maps) + ",\"unmaps\":" + std::to_string(h.unmaps) +
           ",\"copy_batches\":" + std::to_string(h.copy_batches) + ",\"copy_errors\":" +
           std::to_string(h.copy_errors) + ",\"notifies\":" + std::to_string(h.notifies) + "}}\n";
    return out;
}

std::string metrics_text(backend& b) { return prometheus_text(b.dp().vifs(), b.devices(), b.dp().uplinks()); }

// `--metrics-file`: where and how often; `next` is the monotonic time of
// the next write.
struct metrics_out {
    std::string path;
    int64_t interval_ms = 15000;
    int64_t next = 0;
    bool failed = false; // the last write failed (logged once until it works)

    void maybe_write(backend& b) {
        if (path.empty() || mono_ms() < next) return;
        next = mono_ms() + interval_ms;
        int rc = write_file_atomic(path, metrics_text(b));
        if (rc < 0 && !failed) ZC_LOG(error, "netback", "metrics file %s: %s", path.c_str(), std::strerror(-rc));
        else if (rc == 0 && failed) ZC_LOG(info, "netback", "metrics file %s written again", path.c_str());
        failed = rc < 0;
    }
    int poll_ms() const {
        if (path.empty()) return 2000;
        int64_t now = mono_ms();
        return next <= now ? 0 : int(std::min<int64_t>(2000, next - now));
    }
};

int listen_ctl(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) return -ENAMETOOLONG;
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    auto slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) ::mkdir(path.substr(0, slash).c_str(), 0755);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || ::listen(fd, 8) < 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    return fd;
}

void serve_ctl(int lfd, backend& b) {
    for (;;) {
        int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        timeval tv{1, 0};
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        char req[64] = {};
        ssize_t n = ::read(c, req, sizeof req - 1);
        std::string reply = n > 0 && std::strncmp(req, "stats", 5) == 0     ? stats_json(b)
                            : n > 0 && std::strncmp(req, "metrics", 7) == 0 ? metrics_text(b)
                                                                            : "{\"error\":\"unknown request\"}\n";
        size_t off = 0;
        while (off < reply.size()) {
            ssize_t w = ::write(c, reply.data() + off, reply.size() - off);
            if (w <= 0) break;
            off += size_t(w);
        }
        ::close(c);
    }
}

int cmd_run(const backend_options& o, const std::string& ctl, const std::vector<uplink_options>& ups,
            metrics_out metrics) {
    // SIGINT/SIGTERM are blocked before the backend starts its worker
    // threads, which inherit the mask: the signals then reach only the
    // signalfd below (a thread with them unblocked would let SIGTERM, e.g.
    // `systemctl stop`, kill the process without its shutdown).
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    std::string why;
    auto port = hv::open(&why);
    if (!port) {
        std::fprintf(stderr, "zc-netback: %s\n", why.c_str());
        return 1;
    }
    auto b = backend::create(**port, o, &why);
    if (!b) {
        std::fprintf(stderr, "zc-netback: %s\n", why.c_str());
        return 1;
    }
    for (auto& u : ups) {
        if (int rc = (*b)->dp().add_uplink(u, &why); rc < 0) {
            std::fprintf(stderr, "zc-netback: uplink %s: %s\n", u.ifname.c_str(), why.c_str());
            return 1;
        }
    }
    int lfd = listen_ctl(ctl);
    if (lfd < 0) {
        std::fprintf(stderr, "zc-netback: control socket %s: %s\n", ctl.c_str(), std::strerror(-lfd));
        return 1;
    }
    int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    std::signal(SIGPIPE, SIG_IGN);
    ZC_LOG(info, "netback", "ready; control socket %s", ctl.c_str());
    (*b)->process();
    // Type=notify (zc-netback.service): ready once the backend watches
    // xenstore and the control socket listens. A no-op outside systemd
    // (NOTIFY_SOCKET unset), see sd_notify(3).
    ::sd_notify(0, "READY=1");
    for (;;) {
        pollfd p[3] = {{(*b)->fd(), POLLIN, 0}, {lfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        int n = ::poll(p, 3, metrics.poll_ms());
        if (n < 0 && errno != EINTR) break;
        metrics.maybe_write(**b);
        if (n == 0) {
            if (!(*b)->xenstore_alive()) {
                ZC_LOG(error, "netback", "xenstore is gone (hypervisor stopped?): exiting");
                break;
            }
            continue;
        }
        if (p[2].revents) {
            signalfd_siginfo si;
            (void)!::read(sfd, &si, sizeof si);
            ZC_LOG(info, "netback", "signal %u: shutting down", si.ssi_signo);
            ::sd_notify(0, "STOPPING=1");
            break;
        }
        if (p[0].revents) (*b)->process();
        if (p[1].revents) serve_ctl(lfd, **b);
    }
    // Final counters in the log: what a run did.
    std::string final_stats = stats_json(**b);
    ZC_LOG(info, "netback", "final stats: %s", final_stats.c_str());
    // A stopped daemon exports nothing: stale counters would look live.
    if (!metrics.path.empty()) ::unlink(metrics.path.c_str());
    b->reset();
    ::close(lfd);
    ::unlink(ctl.c_str());
    return 0;
}

int cmd_stats(const std::string& ctl, bool json, bool prometheus) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (ctl.size() >= sizeof sa.sun_path) return 2;
    std::memcpy(sa.sun_path, ctl.c_str(), ctl.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        std::fprintf(stderr, "zc-netback stats: no zc-netback at %s: %s\n", ctl.c_str(), std::strerror(errno));
        return 1;
    }
    const char* req = prometheus ? "metrics\n" : "stats\n";
    (void)!::write(fd, req, std::strlen(req));
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    ::close(fd);
    if (json || prometheus) {
        std::fputs(out.c_str(), stdout);
        return 0;
    }
    // A compact table from the JSON (our own fixed format: simple scanning).
    auto field = [](const std::string& obj, const char* k) -> std::string {
        std::string key = std::string("\"") + k + "\":";
        auto p = obj.find(key);
        if (p == std::string::npos) return "?";
        p += key.size();
        auto e = obj.find_first_of(",}", p);
        std::string v = obj.substr(p, e - p);
        if (!v.empty() && v[0] == '"') v = v.substr(1, v.size() - 2);
        return v;
    };
    std::printf("%-10s %-17s %6s %12s %12s %12s %12s %10s %10s %8s %s\n", "vif", "mac", "queues", "tx_pkts",
                "rx_pkts", "gcopy_segs", "vm2vm_segs", "fallbacks", "drops", "state", "note");
    size_t pos = out.find("\"vifs\":[");
    size_t end = out.find("],\"devices\"");
    while (pos != std::string::npos && (pos = out.find("{\"frontend\"", pos)) != std::string::npos && pos < end) {
        size_t close = out.find("]}", pos);
        std::string obj = out.substr(pos, close - pos);
        // Every drop reason the schema knows (netback/counters.hpp).
        uint64_t drops = 0;
        for (const counter_desc& c : vif_stats::schema)
            if (c.drop) drops += std::strtoull(field(obj, c.name).c_str(), nullptr, 10);
        std::string vif = "dom" + field(obj, "frontend") + "/" + field(obj, "devid");
        std::string state = field(obj, "disabled") == "true" ? "disabled" : "ok";
        std::printf("%-10s %-17s %6s %12s %12s %12s %12s %10s %10" PRIu64 " %8s %s\n", vif.c_str(),
                    field(obj, "mac").c_str(), field(obj, "queues").c_str(), field(obj, "tx_packets").c_str(),
                    field(obj, "rx_packets").c_str(), field(obj, "grant_copy_segments").c_str(),
                    field(obj, "vm_to_vm_segments").c_str(), field(obj, "fallback_copies").c_str(), drops,
                    state.c_str(), field(obj, "disabled_reason").c_str());
        // Its queues, one line each (like ethtool -S's per-queue view).
        for (size_t qp = obj.find("{\"index\""); qp != std::string::npos; qp = obj.find("{\"index\"", qp + 1)) {
            std::string q = obj.substr(qp, obj.find('}', qp) - qp);
            std::printf("  queue %-3s worker %-3s tx_unconsumed %-4s tx_in_flight %-4s rx_posted %-4s held %s (%s bytes)%s\n",
                        field(q, "index").c_str(), field(q, "worker").c_str(), field(q, "tx_unconsumed").c_str(),
                        field(q, "tx_in_flight").c_str(), field(q, "rx_posted").c_str(), field(q, "held_frames").c_str(),
                        field(q, "held_bytes").c_str(), field(q, "stalled") == "true" ? " stalled" : "");
        }
        pos = close;
    }
    // Uplinks: one line each (the JSON has every counter).
    pos = out.find("\"uplinks\":[");
    end = out.find("],\"devices\"", pos == std::string::npos ? 0 : pos);
    while (pos != std::string::npos && (pos = out.find("{\"ifname\"", pos)) != std::string::npos && pos < end) {
        size_t close = out.find('}', pos);
        std::string obj = out.substr(pos, close - pos);
        uint64_t drops = 0;
        for (const counter_desc& c : uplink_stats::schema)
            if (c.drop) drops += std::strtoull(field(obj, c.name).c_str(), nullptr, 10);
        std::printf("uplink %-12s xdp=%-4s to_wire %s from_wire %s to_vifs %s drops %" PRIu64 "\n",
                    field(obj, "ifname").c_str(), field(obj, "xdp_mode").c_str(), field(obj, "to_wire_frames").c_str(),
                    field(obj, "from_wire_frames").c_str(), field(obj, "to_vif_frames").c_str(), drops);
        pos = close;
    }
    return 0;
}

// xl's rate= syntax (libxl_device_nic rate_bytes_per_interval and
// rate_interval_usecs): RATE[@INTERVAL], RATE = N{B,b,KB,Kb,MB,Mb,GB,Gb}/s
// (B bytes, b bits), INTERVAL = N{s,ms,us}, default 50ms. Returns the
// `rate` key's value or "" when malformed.
std::string xl_rate_key(const std::string& s) {
    auto at = s.find('@');
    std::string r = s.substr(0, at), iv = at == std::string::npos ? "50ms" : s.substr(at + 1);
    char* end = nullptr;
    const double n = std::strtod(r.c_str(), &end);
    std::string unit = end ? end : "";
    if (n <= 0 || unit.size() < 3 || unit.substr(unit.size() - 2) != "/s") return "";
    unit = unit.substr(0, unit.size() - 2);
    double mult;
    if (unit == "B") mult = 1;
    else if (unit == "b") mult = 1.0 / 8;
    else if (unit == "KB") mult = 1e3;
    else if (unit == "Kb") mult = 1e3 / 8;
    else if (unit == "MB") mult = 1e6;
    else if (unit == "Mb") mult = 1e6 / 8;
    else if (unit == "GB") mult = 1e9;
    else if (unit == "Gb") mult = 1e9 / 8;
    else return "";
    const double us = std::strtod(iv.c_str(), &end);
    std::string iu = end ? end : "";
    double usecs;
    if (iu == "s") usecs = us * 1e6;
    else if (iu == "ms") usecs = us * 1e3;
    else if (iu == "us") usecs = us;
    else return "";
    if (usecs < 1 || usecs > 4e9) return "";
    const double bytes = n * mult * usecs / 1e6;
    if (bytes < 1) return "";
    return std::to_string(uint64_t(bytes)) + "," + std::to_string(uint64_t(usecs));
}

int cmd_vif(bool add, long be, long fe, long devid, const std::string& mac, const std::string& ip,
            const std::string& rate) {
    if (fe < 0) {
        std::fprintf(stderr, "zc-netback: --frontend DOM is required\n");
        return 2;
    }
    std::string why;
    auto port = hv::open(&why);
    if (!port) {
        std::fprintf(stderr, "zc-netback: %s\n", why.c_str());
        return 1;
    }
    auto x = hv::xs::open((*port)->xenstore_path());
    if (!x) {
        std::fprintf(stderr, "zc-netback: xenstore: %s\n", std::strerror(-x.error()));
        return 1;
    }
    if (!add) {
        int rc = vif_destroy(**x, hv::domid_t(be), hv::domid_t(fe), uint32_t(devid));
        if (rc < 0) std::fprintf(stderr, "zc-netback vif-del: %s\n", std::strerror(-rc));
        return rc < 0 ? 1 : 0;
    }
    vif_spec s;
    s.backend = hv::domid_t(be);
    s.frontend = hv::domid_t(fe);
    s.devid = uint32_t(devid);
    if (!mac.empty() && !parse_mac(mac, s.mac, 0)) {
        std::fprintf(stderr, "zc-netback vif-add: bad MAC '%s' (want aa:bb:cc:dd:ee:ff)\n", mac.c_str());
        return 2;
    }
    s.ip = ip;
    if (!rate.empty()) {
        s.rate = xl_rate_key(rate);
        if (s.rate.empty()) {
            std::fprintf(stderr, "zc-netback vif-add: bad rate '%s' (want e.g. 10Mb/s or 1MB/s@20ms)\n", rate.c_str());
            return 2;
        }
    }
    int rc = vif_create(**x, s, &why);
    if (rc < 0) {
        std::fprintf(stderr, "zc-netback: %s\n", why.c_str());
        return 1;
    }
    std::printf("vif dom%ld/%ld created: %s\n", fe, devid, backend_dir(s.backend, s.frontend, s.devid).c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::string cmd = "run";
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') cmd = argv[i++];
    backend_options o;
    o.dp.workers = cpus_available();
    std::vector<uplink_options> ups;
    uplink_options up_o; // --xdp-mode etc. apply to every --uplink
    std::string ctl = default_ctl(), mac, ip, rate;
    bool json = false, prometheus = false;
    metrics_out metrics;
    long fe = -1, be = 0, devid = 0;
    for (; i < argc; i++) {
        std::string a = argv[i];
        auto num = [&](long lo, long hi, long& out) {
            if (i + 1 >= argc) return false;
            char* end = nullptr;
            long v = std::strtol(argv[++i], &end, 10);
            if (*end || v < lo || v > hi) return false;
            out = v;
            return true;
        };
        long v = 0;
        if (a == "-h" || a == "--help") {
            std::fputs(usage_text, stdout);
            return 0;
        } else if (a == "--workers" && num(1, 64, v)) o.dp.workers = uint32_t(v);
        else if (a == "--max-queues" && num(1, 64, v)) o.max_queues = uint32_t(v);
        else if (a == "--no-split-evtchn") o.split_event_channels = false;
        else if (a == "--force-bounce") o.dp.force_bounce = true;
        else if (a == "--rx-queue" && num(1, 65536, v)) o.dp.rx_queue_limit = uint32_t(v);
        else if (a == "--drain-ms" && num(1, 3600000, v)) o.dp.drain_timeout_ms = uint32_t(v);
        else if (a == "--bounce-buffers" && num(16, 1 << 20, v)) o.dp.bounce_buffers = uint32_t(v);
        else if ((a == "--bounce-src-quota" || a == "--bounce-dst-quota") && i + 1 < argc &&
                 std::string(argv[i + 1]) == "off")
            (a == "--bounce-src-quota" ? o.dp.bounce_src_quota : o.dp.bounce_dst_quota) = bounce_quota_off, ++i;
        else if (a == "--bounce-src-quota" && num(65536, 1l << 40, v)) o.dp.bounce_src_quota = uint64_t(v);
        else if (a == "--bounce-dst-quota" && num(65536, 1l << 40, v)) o.dp.bounce_dst_quota = uint64_t(v);
        else if (a == "--held-tx-slots" && num(1, 65536, v)) o.dp.held_tx_slots = uint32_t(v);
        else if (a == "--idle-ms" && num(1, 3600000, v)) o.dp.idle_ms = uint32_t(v);
        else if (a == "--ctl" && i + 1 < argc) ctl = argv[++i];
        else if (a == "--uplink" && i + 1 < argc) ups.push_back(uplink_options{.ifname = argv[++i]});
        else if (a == "--xdp-mode" && i + 1 < argc) up_o.mode = argv[++i];
        else if (a == "--xdp-batch" && num(1, 4096, v)) up_o.batch = uint32_t(v);
        else if (a == "--uplink-frames" && num(64, 1 << 20, v)) up_o.frames = uint32_t(v);
        else if (a == "--uplink-aging" && num(1, 86400, v)) up_o.aging_s = uint32_t(v);
        else if (a == "--json") json = true;
        else if (a == "--prometheus") prometheus = true;
        else if (a == "--metrics-file" && i + 1 < argc && argv[i + 1][0]) metrics.path = argv[++i];
        else if (a == "--metrics-interval" && num(1, 86400, v)) metrics.interval_ms = int64_t(v) * 1000;
        else if (a == "--frontend" && num(0, 0x7fef, fe)) {
        } else if (a == "--backend" && num(0, 0x7fef, be)) {
        } else if (a == "--devid" && num(0, 65535, devid)) {
        } else if (a == "--mac" && i + 1 < argc) mac = argv[++i];
        else if (a == "--ip" && i + 1 < argc) ip = argv[++i];
        else if (a == "--rate" && i + 1 < argc) rate = argv[++i];
        else {
            std::fprintf(stderr, "zc-netback: bad or incomplete option '%s'\n\n%s", a.c_str(), usage_text);
            return 2;
        }
    }
    for (auto& u : ups) {
        const std::string name = u.ifname;
        u = up_o;
        u.ifname = name;
        u.ring = std::min<uint32_t>(u.ring, u.frames / 2);
    }
    if (json && prometheus) {
        std::fprintf(stderr, "zc-netback stats: --json and --prometheus exclude each other\n");
        return 2;
    }
    if (cmd == "run") return cmd_run(o, ctl, ups, metrics);
    if (cmd == "stats") return cmd_stats(ctl, json, prometheus);
    if (cmd == "vif-add") return cmd_vif(true, be, fe, devid, mac, ip, rate);
    if (cmd == "vif-del") return cmd_vif(false, be, fe, devid, mac, ip, rate);
    std::fprintf(stderr, "zc-netback: unknown command '%s'\n\n%s", cmd.c_str(), usage_text);
    return 2;
}
