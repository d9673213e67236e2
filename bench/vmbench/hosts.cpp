// SPDX-License-Identifier: MIT
// zc-vmbench's emulated hosts (hosts.hpp).
#include "hosts.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hv/emu/emu_port.hpp"
#include "netback/toolstack.hpp"

namespace zc::vmbench {

static std::string exe_dir(const std::string& self) {
    auto s = self.rfind('/');
    return s == std::string::npos ? "." : self.substr(0, s);
}

std::string sibling(const std::string& self, const std::string& build_rel, const std::string& name) {
    std::string in_tree = exe_dir(self) + "/../" + build_rel + "/" + name;
    return ::access(in_tree.c_str(), X_OK) == 0 ? in_tree : exe_dir(self) + "/" + name;
}

bool dom0_host::start_dom0(const char* tag, const run_opts& o, const std::vector<std::string>& nb_args,
                           std::string* why) {
    auto h = hv::emu::host::create(tag, why);
    if (!h) return false;
    emu = std::move(*h);
    dir = emu->dir();
    janitor_add(dir);
    auto p = emu->domain(0, 0, why);
    if (!p) return false;
    dom0 = std::move(*p);
    auto x = hv::xs::open(dom0->xenstore_path());
    if (!x) return *why = "xenstore", false;
    xs = std::move(*x);
    // The domains' processes create their own domains: they get the
    // toolstack's token (hv/emu/broker.hpp).
    env = {{"ZCNET_HV", "emu"}, {"ZCNET_EMU_SOCK", emu->sock()}, {"ZCNET_EMU_TOKEN", emu->admin_token()},
           {"ZCNET_LOG", "warn"}};
    ctl = dir + "/netback.sock";
    std::vector<std::string> nb = exec_prefix;
    nb.insert(nb.end(), {o.netback, "run", "--ctl", ctl});
    nb.insert(nb.end(), nb_args.begin(), nb_args.end());
    netback = spawn(nb, domain_env(0, true), false);
    for (int i = 0; i < 500 && ::access(ctl.c_str(), F_OK) != 0; i++) ::usleep(10000);
    if (::access(ctl.c_str(), F_OK) != 0) return *why = "zc-netback did not start", false;
    return true;
}

env_list dom0_host::domain_env(hv::domid_t d, bool attach) const {
    auto e = env;
    e.push_back({"ZCNET_DOMID", std::to_string(d)});
    if (attach) e.push_back({"ZCNET_EMU_ATTACH", "1"});
    return e;
}

void dom0_host::stop_dom0() {
    netback.terminate();
    xs.reset();
    dom0.reset();
    emu.reset(); // stops the broker, removes the directory
    if (!dir.empty()) janitor_remove(dir);
    dir.clear();
}

bool host::start(const run_opts& o, uint32_t pairs, const std::vector<std::string>& nb_args, uint32_t rx_buffers,
                 uint32_t queues, std::string* why, bool senders_only) {
    if (!start_dom0("vmbench", o, nb_args, why)) return false;
    for (uint32_t g = 0; g < (senders_only ? 1 : 2) * pairs; g++) {
        const bool sends = senders_only || g % 2 == 0;
        if (!add_guest(o, hv::domid_t(g + 1), sends ? "send" : "recv", rx_buffers, queues, guests.emplace_back(), why))
            return false;
    }
    for (size_t g = 0; g < guests.size(); g++)
        if (!connect_guest(guests[g], hv::domid_t(g + 1), macs.emplace_back(), why)) return false;
    return true;
}

bool dom0_host::add_guest(const run_opts& o, hv::domid_t d, const std::string& role, uint32_t rx_buffers,
                          uint32_t queues, child& out, std::string* why) {
    std::vector<std::string> a{o.self, "guest", "--role", role, "--rx-buffers", std::to_string(rx_buffers), "--queues",
                               std::to_string(queues)};
    out = spawn(a, domain_env(d));
    std::string l;
    if (!out.line(l, 10000) || l != "up") return *why = "guest " + std::to_string(d) + ": " + l, false;
    netback::vif_spec s;
    s.frontend = d;
    s.mtu = 65535; // non-GSO frames up to 64 KiB between the guests
    return netback::vif_create(*xs, s, why) >= 0;
}

bool dom0_host::connect_guest(child& g, hv::domid_t d, std::string& mac, std::string* why) {
    g.send("connect");
    std::string l;
    if (!g.line(l, 20000) || l.rfind("connected ", 0) != 0)
        return *why = "guest " + std::to_string(d) + " did not connect: " + l, false;
    mac = l.substr(10);
    return true;
}

std::vector<pid_t> host::pids() const {
    std::vector<pid_t> v{netback.pid};
    for (auto& g : guests) v.push_back(g.pid);
    return v;
}

void host::shutdown() {
    for (auto& g : guests) g.stop();
    guests.clear();
    stop_dom0();
}

bool host::measure_rr(uint32_t phase, size_t size, double seconds, rr_row& r, std::string* why) {
    const std::string cmd = "rr " + std::to_string(phase) + " " + std::to_string(size) + " " +
                            std::to_string(seconds);
    std::string l, lr;
    guests[1].send(cmd);
    if (!guests[1].line(l, 10000) || l != "ready") return *why = "echo side not ready: " + l, false;
    guests[0].send(cmd + " " + macs[1]);
    const int timeout = int(seconds * 1000) + 30000;
    if (!guests[0].line(l, timeout) || !guests[1].line(lr, timeout)) return *why = "a guest did not report", false;
    if (!jfield(l, "error").empty()) return *why = "guest error: " + l, false;
    r.mode = "zc-rr";
    r.frame = size;
    r.samples = uint64_t(jnum(l, "samples"));
    r.lost = uint64_t(jnum(l, "lost")) + uint64_t(jnum(l, "bad"));
    r.p50 = jnum(l, "p50");
    r.p99 = jnum(l, "p99");
    r.p999 = jnum(l, "p999");
    return r.samples > 0 || (*why = "no round trip completed", false);
}

bool host::measure(uint32_t phase, size_t size, double seconds, row& r, std::string* why) {
    const netback::vif_stats s0 = netback_totals(ctl);
    double cpu0 = 0;
    for (pid_t p : pids()) cpu0 += cpu_of(p);
    const double nb0 = cpu_of(netback.pid);
    size_t pairs = guests.size() / 2;
    for (size_t p = 0; p < pairs; p++) {
        guests[2 * p + 1].send("run " + std::to_string(phase) + " " + std::to_string(size) + " " +
                               std::to_string(seconds));
        std::string l;
        if (!guests[2 * p + 1].line(l, 10000) || l != "ready") return *why = "receiver not ready: " + l, false;
    }
    for (size_t p = 0; p < pairs; p++)
        guests[2 * p].send("run " + std::to_string(phase) + " " + std::to_string(size) + " " +
                           std::to_string(seconds) + " " + macs[2 * p + 1]);
    uint64_t frames = 0, bytes = 0, bad = 0, sent = 0;
    double span = 0;
    int timeout = int(seconds * 1000) + 30000;
    for (size_t p = 0; p < pairs; p++) {
        std::string ls, lr;
        if (!guests[2 * p].line(ls, timeout) || !guests[2 * p + 1].line(lr, timeout))
            return *why = "a guest did not report", false;
        if (!jfield(ls, "error").empty() || !jfield(lr, "error").empty())
            return *why = "guest error: " + ls + " " + lr, false;
        sent += uint64_t(jnum(ls, "sent"));
        frames += uint64_t(jnum(lr, "frames"));
        bytes += uint64_t(jnum(lr, "bytes"));
        bad += uint64_t(jnum(lr, "bad"));
        span = std::max(span, jnum(lr, "seconds"));
    }
    double cpu1 = 0;
    for (pid_t p : pids()) cpu1 += cpu_of(p);
    const double nb1 = cpu_of(netback.pid);
    const netback::vif_stats s1 = netback_totals(ctl);
    auto d = [&](vif_counter k) { return double(s1.*k - s0.*k); };
    r.frame = size;
    r.frames = frames;
    r.sent = sent;
    r.intact = frames > 0 && bad == 0;
    if (span > 0) {
        r.gbps = double(bytes) * 8 / span / 1e9;
        r.mpps = double(frames) / span / 1e6;
    }
    r.cpu_s_per_gb = bytes ? (cpu1 - cpu0) / (double(bytes) / 1e9) : 0;
    double pk = std::max(1.0, double(frames));
    r.segs_per_pkt = d(&netback::vif_stats::grant_copy_segments) / pk;
    r.batches_per_pkt = d(&netback::vif_stats::grant_copy_batches) / pk;
    r.notifies_per_pkt = d(&netback::vif_stats::notifies_sent) / pk;
    r.fallbacks_per_pkt = d(&netback::vif_stats::fallback_copies) / pk;
    r.nb_us_per_pkt = (nb1 - nb0) * 1e6 / pk;
    if (bad) r.note = std::to_string(bad) + " corrupt frames";
    if (sent > frames) r.note += (r.note.empty() ? "" : "; ") + std::to_string(sent - frames) + " not delivered";
    return true;
}

app_host::~app_host() {
    for (child* c : {&server, &rr_server, &stackd[0], &stackd[1]}) c->terminate();
    stop_dom0();
}

env_list app_host::busy_env() const {
    if (!busy_us) return {};
    return {{"ZCNET_BUSY_POLL_US", std::to_string(busy_us)}};
}

bool app_host::start(const run_opts& o, const std::string& tx_headers, std::string* why,
                     const std::vector<std::string>& nb_args, const std::vector<std::string>& stackd_args) {
    if (!start_dom0("vmbench-app", o, nb_args, why)) return false;
    for (int g = 0; g < 2; g++) {
        sock[g] = dir + "/stack" + std::to_string(g + 1) + ".sock";
        std::vector<std::string> args{o.stackd, "--ip", "10.0.0." + std::to_string(g + 1), "--listen", sock[g],
                                      "--tx-headers", tx_headers, "--pool-export", pool_export};
        if (busy_us) args.insert(args.end(), {"--busy-poll-us", std::to_string(busy_us)});
        args.insert(args.end(), stackd_args.begin(), stackd_args.end());
        stackd[g] = spawn(args,
                          domain_env(hv::domid_t(g + 1)), false, dir + "/stack" + std::to_string(g + 1) + ".log");
        // The domain exists once zc-stackd is connected to the broker; it
        // waits for its vif (--wait-vif), which we create as the toolstack.
        for (int i = 0; i < 500; i++) {
            auto l = hv::emu::client_of(*dom0)->list_domains();
            if (l && std::find(l->begin(), l->end(), hv::domid_t(g + 1)) != l->end()) break;
            ::usleep(10000);
        }
        netback::vif_spec vs;
        vs.frontend = hv::domid_t(g + 1);
        vs.mtu = 65535;
        if (netback::vif_create(*xs, vs, why) < 0) return false;
    }
    for (int g = 0; g < 2; g++) {
        for (int i = 0; i < 1000 && ::access(sock[g].c_str(), F_OK) != 0; i++) ::usleep(10000);
        if (::access(sock[g].c_str(), F_OK) != 0)
            return *why = "zc-stackd did not start" + log_tail(dir + "/stack" + std::to_string(g + 1) + ".log"),
                   false;
    }
    server = spawn({o.perf, "-s", "--service", sock[1], "--port", "5201"}, {}, false, dir + "/perf-server.log");
    if (!o_rr.empty()) {
        std::vector<std::string> ra{o_rr, "-s", "--service", sock[1], "--port", "5202"};
        if (busy_us) ra.push_back("--busy-poll");
        rr_server = spawn(ra, busy_env(), false, dir + "/rr-server.log");
    }
    ::usleep(200000);
    return true;
}

bool app_host::measure(size_t frame, double seconds, row& r, std::string* why) {
    size_t payload = std::max<size_t>(32, frame - 42);
    std::vector<pid_t> pids{netback.pid, stackd[0].pid, stackd[1].pid, server.pid};
    const netback::vif_stats s0 = netback_totals(ctl);
    double cpu0 = 0;
    for (pid_t p : pids) cpu0 += cpu_of(p);
    const double nb0 = cpu_of(netback.pid);
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3f", seconds);
    child c = spawn({o_perf, "-c", "10.0.0.2", "--service", sock[0], "--port", "5201", "--size",
                     std::to_string(payload), "--time", secs, "--verify", "--rtt", "200", "--json"},
                    {}, true);
    std::string l;
    bool got = c.line(l, int(seconds * 1000) + 30000);
    int st = 0;
    rusage ru{};
    ::wait4(c.pid, &st, 0, &ru);
    c.pid = -1;
    if (c.in >= 0) ::close(c.in);
    if (c.out >= 0) ::close(c.out);
    if (!got) return *why = "zc-perf client did not report" + log_tail(dir + "/perf-server.log"), false;
    double cpu1 = 0;
    for (pid_t p : pids) cpu1 += cpu_of(p);
    const double nb1 = cpu_of(netback.pid);
    double client_cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    auto srv = l.find("\"server\":");
    std::string s = srv == std::string::npos ? "" : l.substr(srv);
    double t = jnum(l, "seconds");
    uint64_t received = uint64_t(jnum(s, "received"));
    r.mode = mode;
    r.frame = payload + 42;
    r.frames = received;
    r.sent = uint64_t(jnum(l, "sent"));
    r.intact = jfield(s, "report") == "true" && jnum(s, "corrupt") == 0 && received > 0;
    r.gbps = t > 0 ? double(received) * double(r.frame) * 8 / t / 1e9 : 0;
    r.mpps = t > 0 ? double(received) / t / 1e6 : 0;
    double bytes = double(received) * double(r.frame);
    r.cpu_s_per_gb = bytes > 0 ? (cpu1 - cpu0 + client_cpu) / (bytes / 1e9) : 0;
    // Per frame zc-netback moved (data, control and ping-pong frames alike).
    const netback::vif_stats s1 = netback_totals(ctl);
    auto d = [&](vif_counter k) { return double(s1.*k - s0.*k); };
    double pk = std::max(1.0, d(&netback::vif_stats::rx_packets));
    r.segs_per_pkt = d(&netback::vif_stats::grant_copy_segments) / pk;
    r.batches_per_pkt = d(&netback::vif_stats::grant_copy_batches) / pk;
    r.notifies_per_pkt = d(&netback::vif_stats::notifies_sent) / pk;
    r.fallbacks_per_pkt = d(&netback::vif_stats::fallback_copies) / pk;
    // zc-netback's CPU per datagram delivered (the direct mode's target is
    // a third of the app mode's).
    r.nb_us_per_pkt = received ? (nb1 - nb0) * 1e6 / double(received) : 0;
    auto lat = l.find("\"latency_us\":");
    char note[200];
    std::snprintf(note, sizeof note, "zc-perf strict, %.0f%% direct, p50 %.0f us p99 %.0f us%s%s",
                  100.0 * d(&netback::vif_stats::direct_frames) / std::max(1.0, double(received)),
                  lat == std::string::npos ? 0.0 : jnum(l.substr(lat), "p50"),
                  lat == std::string::npos ? 0.0 : jnum(l.substr(lat), "p99"),
                  r.sent > received ? ", UDP loss " : "",
                  r.sent > received ? std::to_string(r.sent - received).c_str() : "");
    r.note = note;
    return true;
}

bool app_host::measure_rr(size_t frame, double seconds, rr_row& r, std::string* why) {
    const size_t payload = std::max<size_t>(16, frame - 42); // zc-rr's header
    // The path's order: client, its stack, zc-netback, the server's stack, the server.
    const std::vector<pid_t> pids{stackd[0].pid, netback.pid, stackd[1].pid, rr_server.pid};
    const netback::vif_stats s0 = netback_totals(ctl);
    std::vector<double> cpu0;
    for (pid_t p : pids) cpu0.push_back(cpu_of(p));
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3f", seconds);
    std::vector<std::string> ca{o_rr, "-c", "10.0.0.2", "--service", sock[0], "--port", "5202", "--size",
                                std::to_string(payload), "--time", secs, "--json"};
    if (busy_us) ca.push_back("--busy-poll");
    child c = spawn(ca, busy_env(), true);
    std::string l;
    const bool got = c.line(l, int(seconds * 1000) + 30000);
    int st = 0;
    rusage ru{};
    ::wait4(c.pid, &st, 0, &ru);
    c.pid = -1;
    if (c.in >= 0) ::close(c.in);
    if (c.out >= 0) ::close(c.out);
    if (!got) return *why = "zc-rr client did not report" + log_tail(dir + "/rr-server.log"), false;
    const double client_cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                              double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    std::vector<double> used{client_cpu};
    for (size_t i = 0; i < pids.size(); i++) used.push_back(cpu_of(pids[i]) - cpu0[i]);
    const netback::vif_stats s1 = netback_totals(ctl);
    r.mode = "app-rr";
    r.frame = payload + 42;
    r.samples = uint64_t(jnum(l, "samples"));
    r.lost = uint64_t(jnum(l, "lost")) + uint64_t(jnum(l, "bad"));
    r.p50 = jnum(l, "p50");
    r.p99 = jnum(l, "p99");
    r.p999 = jnum(l, "p999");
    const double rt = std::max(1.0, double(r.samples));
    r.cpu_us_per_rt = 0;
    for (double u : used) r.cpu_us_per_rt += u * 1e6 / rt;
    char split[160];
    std::snprintf(split, sizeof split, "client %.1f, stackd %.1f, zc-netback %.1f, stackd %.1f, server %.1f",
                  used[0] * 1e6 / rt, used[1] * 1e6 / rt, used[2] * 1e6 / rt, used[3] * 1e6 / rt, used[4] * 1e6 / rt);
    r.cpu_split = split;
    r.notifies_per_rt = double(s1.notifies_sent - s0.notifies_sent) / rt;
    if (jnum(l, "bad") > 0) return *why = "answers did not match their requests: " + l, false;
    return r.samples > 0 || (*why = "no round trip completed: " + l, false);
}

row memcpy_row(size_t size, double seconds) {
    row r;
    r.mode = "memcpy";
    r.frame = size;
    constexpr size_t slots = 64;
    size_t stride = (size + 4095) & ~size_t(4095);
    std::vector<uint8_t> a(slots * stride, 1), b(slots * stride, 2);
    uint64_t bytes = 0, n = 0;
    double t0 = now_s(), c0 = double(std::clock()) / CLOCKS_PER_SEC;
    while (now_s() - t0 < seconds) {
        for (size_t i = 0; i < slots; i++) std::memcpy(b.data() + i * stride, a.data() + i * stride, size);
        asm volatile("" ::"r"(b.data()) : "memory");
        bytes += size * slots;
        n += slots;
    }
    double t = now_s() - t0, c = double(std::clock()) / CLOCKS_PER_SEC - c0;
    r.gbps = double(bytes) * 8 / t / 1e9;
    r.mpps = double(n) / t / 1e6;
    r.cpu_s_per_gb = c / (double(bytes) / 1e9);
    r.frames = n;
    r.intact = std::memcmp(a.data(), b.data(), size) == 0;
    return r;
}

} // namespace zc::vmbench
