// SPDX-License-Identifier: MIT
// zc-vmbench's uplink mode (uplink.hpp).
#include "uplink.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/kernel_path.hpp"
#include "link/netfront.hpp"

namespace zc::vmbench {
namespace {

// An uplink's UMEM frames are 4 KiB (stack/link/xsk/xsk.hpp): a frame
// larger than one needs AF_XDP multi-buffer, which Linux 6.1 does not have
// (it came with 6.6).
constexpr size_t umem_frame = 4096;
// The uplink's veth MTU. veth refuses an XDP program above about 3.5 KiB
// (one page less headroom) without multi-buffer, so 1500 as on most wires.
constexpr uint32_t uplink_mtu = 1500;

// The "uplinks" part of zc-netback's stats JSON (its first uplink).
std::string uplink_json(const std::string& ctl) {
    const std::string s = netback_stats(ctl);
    const size_t p = s.find("\"uplinks\":[");
    if (p == std::string::npos) return "";
    return s.substr(p, s.find("],\"devices\"", p) - p);
}

uint64_t ucount(const std::string& json, const char* key) {
    return std::strtoull(jfield(json, key).c_str(), nullptr, 10);
}

// Why a frame size gets no uplink row, or "" when it can be measured.
std::string unsupported(size_t s) {
    char why[200] = "";
    if (s < bench::eth_ip_udp_overhead + bench::min_udp_payload)
        std::snprintf(why, sizeof why, "frames below %zu B cannot carry the checked UDP header",
                      bench::eth_ip_udp_overhead + bench::min_udp_payload);
    else if (s > umem_frame)
        std::snprintf(why, sizeof why,
                      "not supported: a %zu B frame is larger than a 4 KiB UMEM frame, and AF_XDP on Linux 6.1 has "
                      "no multi-buffer (6.6+)",
                      s);
    else if (s > uplink_mtu + 14)
        std::snprintf(why, sizeof why, "not measured: larger than the uplink veth's MTU %u + 14", uplink_mtu);
    return why;
}

// One measurement: every guest sends `size`-byte UDP frames to the far end
// for `seconds`; the kernel socket there counts and checks them.
bool measure(host& h, bench::uplink_veth& veth, size_t size, double seconds, row& r, std::string* why) {
    const netback::vif_stats s0 = netback_totals(h.ctl);
    const std::string u0 = uplink_json(h.ctl);
    double cpu0 = 0;
    for (pid_t p : h.pids()) cpu0 += cpu_of(p);
    const double nb0 = cpu_of(h.netback.pid);
    const int timeout = int(seconds * 1000) + 30000;
    auto send = [&](uint64_t* sent, std::string* err) {
        for (size_t g = 0; g < h.guests.size(); g++)
            h.guests[g].send("udp " + std::to_string(size) + " " + std::to_string(seconds) + " " +
                             bench::uplink_veth::far_mac() + " " + veth.guest_ip(unsigned(g)) + " " + veth.far_ip() +
                             " " + std::to_string(bench::uplink_veth::port()));
        for (auto& g : h.guests) {
            std::string l;
            if (!g.line(l, timeout)) return *err = "a guest did not report", false;
            if (!jfield(l, "error").empty()) return *err = "guest error: " + l, false;
            *sent += uint64_t(jnum(l, "sent"));
        }
        return true;
    };
    const bench::kernel_result k = veth.receive_udp(size, seconds, send);
    double cpu1 = 0;
    for (pid_t p : h.pids()) cpu1 += cpu_of(p);
    const double nb1 = cpu_of(h.netback.pid);
    const netback::vif_stats s1 = netback_totals(h.ctl);
    const std::string u1 = uplink_json(h.ctl);
    if (!k.error.empty() && k.frames_received == 0) return *why = k.error, false;
    r.mode = "uplink";
    r.frame = size;
    r.pairs = uint32_t(h.guests.size());
    r.gbps = k.gbps;
    r.mpps = k.mpps;
    r.frames = k.frames_received;
    r.sent = k.frames_sent;
    r.intact = k.integrity_ok;
    const double bytes = double(k.frames_received) * double(size);
    r.cpu_s_per_gb = bytes > 0 ? (cpu1 - cpu0 + k.cpu_seconds) / (bytes / 1e9) : 0;
    // Per frame zc-netback put on the wire: the copies it made for them.
    const auto ud = [&](const char* key) { return double(ucount(u1, key) - ucount(u0, key)); };
    const double wire = std::max(1.0, ud("to_wire_frames"));
    const auto d = [&](vif_counter c) { return double(s1.*c - s0.*c) / wire; };
    r.segs_per_pkt = d(&netback::vif_stats::grant_copy_segments);
    r.batches_per_pkt = d(&netback::vif_stats::grant_copy_batches);
    r.notifies_per_pkt = d(&netback::vif_stats::notifies_sent);
    r.fallbacks_per_pkt = d(&netback::vif_stats::fallback_copies);
    r.nb_us_per_pkt = (nb1 - nb0) * 1e6 / wire;
    r.xdp_mode = jfield(u1, "xdp_mode");
    if (r.xdp_mode.size() >= 2) r.xdp_mode = r.xdp_mode.substr(1, r.xdp_mode.size() - 2);
    r.hdr_copies_per_pkt = d(&netback::vif_stats::header_copy_segments);
    const bool kernel_copies = r.xdp_mode == "copy" || r.xdp_mode == "skb";
    r.copies_per_pkt = r.segs_per_pkt - r.hdr_copies_per_pkt + r.fallbacks_per_pkt + (kernel_copies ? 1 : 0);
    char note[160];
    std::snprintf(note, sizeof note, "xdp=%s, copies/frame %.2f (grant %.2f + bounce %.2f%s), header copies %.2f",
                  r.xdp_mode.c_str(), r.copies_per_pkt, r.segs_per_pkt - r.hdr_copies_per_pkt, r.fallbacks_per_pkt,
                  kernel_copies ? " + kernel 1" : "", r.hdr_copies_per_pkt);
    r.note = note;
    if (r.sent > r.frames) r.note += "; " + std::to_string(r.sent - r.frames) + " not delivered";
    const double ring_full = ud("drop_tx_ring_full"), no_buf = ud("drop_no_buffer");
    if (ring_full + no_buf > 0)
        r.note += " (AF_XDP TX ring full " + std::to_string(uint64_t(ring_full)) + ", no UMEM frame " +
                  std::to_string(uint64_t(no_buf)) + ")";
    if (k.bad_frames) r.note += "; " + std::to_string(k.bad_frames) + " corrupt";
    if (!k.error.empty()) r.note += "; " + k.error;
    return true;
}

} // namespace

bool run_uplink(const run_opts& o, progress& prog, pass& ps) {
    std::vector<size_t> sizes;
    for (size_t s : o.sizes) {
        if (std::string why = unsupported(s); !why.empty()) std::printf("%-12s %7zu  %s\n", "uplink", s, why.c_str());
        else sizes.push_back(s);
    }
    if (sizes.empty()) return true;
    std::string why;
    auto veth = bench::uplink_veth::create(uplink_mtu, &why);
    if (!veth) {
        std::printf("%-12s skipped: %s\n", "uplink", why.c_str());
        return true;
    }
    bool ok = true;
    for (uint32_t guests : o.pairs) {
        host h;
        h.exec_prefix = (*veth)->near_exec();
        const uint32_t workers = o.workers ? o.workers : 1;
        const std::vector<std::string> nb{"--workers", std::to_string(workers), "--uplink",
                                          bench::uplink_veth::ifname()};
        const bool started = h.start(o, guests, nb, link::netif_rx_ring_size, 1, &why, true);
        if (h.netback.pid > 0) (*veth)->track(h.netback.pid);
        if (!started) {
            std::fprintf(stderr, "zc-vmbench: uplink: cannot start the emulated host: %s\n", why.c_str());
            if (h.netback.pid > 0) (*veth)->untrack(h.netback.pid);
            return false;
        }
        (*veth)->announce();
        for (size_t s : sizes) {
            row r;
            prog.step("uplink " + std::to_string(s) + " B, " + std::to_string(guests) + " guest(s)", o.seconds);
            const bool measured = measure(h, **veth, s, o.seconds, r, &why);
            prog.clear();
            if (!measured) {
                std::fprintf(stderr, "zc-vmbench: uplink %zu B: %s\n", s, why.c_str());
                ok = false;
                break;
            }
            ps.rows.push_back(r);
            print_row(r, ps.mc.count(s) ? &ps.mc[s] : nullptr, ps.kern.count(s) ? &ps.kern[s] : nullptr);
            ok = ok && r.intact;
        }
        const pid_t nb_pid = h.netback.pid;
        h.shutdown(); // zc-netback detaches its XDP program as it stops
        (*veth)->untrack(nb_pid);
    }
    return ok;
}

void print_uplink_summary(const std::vector<pass>& passes) {
    bool header = false;
    auto spread = [](std::vector<double> v, const char* fmt) {
        char f[64], out[96];
        if (v.empty()) return std::string("-");
        const double m = median(v);
        std::sort(v.begin(), v.end());
        if (v.size() == 1) std::snprintf(out, sizeof out, fmt, m);
        else {
            std::snprintf(f, sizeof f, "%s (%s-%s)", fmt, fmt, fmt);
            std::snprintf(out, sizeof out, f, m, v.front(), v.back());
        }
        return std::string(out);
    };
    for (const row& u : passes.front().rows) {
        if (u.mode != "uplink") continue;
        if (!header) {
            std::printf("\nuplink (guest -> kernel namespace over AF_XDP) against kernel-udp (kernel -> kernel over\n"
                        "veth) of the same pass; %s:\n",
                        passes.size() > 1 ? "median (min-max) over the passes, ratios within each pass"
                                          : "one pass");
            std::printf("%7s %6s %22s %22s %22s %22s %22s %7s %10s %5s\n", "frame", "guests", "uplink Gbit/s",
                        "uplink Mpps", "kernel Gbit/s", "kernel Mpps", "uplink/kernel", "seg/pkt", "copies/pkt",
                        "xdp");
            header = true;
        }
        std::vector<double> g, m, kg, km, ratio, seg, copies;
        for (const pass& p : passes)
            for (const row& x : p.rows) {
                if (x.mode != "uplink" || x.frame != u.frame || x.pairs != u.pairs) continue;
                g.push_back(x.gbps);
                m.push_back(x.mpps);
                seg.push_back(x.segs_per_pkt);
                copies.push_back(x.copies_per_pkt);
                if (auto k = p.kern.find(x.frame); k != p.kern.end() && k->second.gbps > 0) {
                    kg.push_back(k->second.gbps);
                    km.push_back(k->second.mpps);
                    ratio.push_back(x.gbps / k->second.gbps);
                }
            }
        std::printf("%7zu %6u %22s %22s %22s %22s %22s %7.2f %10.2f %5s\n", u.frame, u.pairs,
                    spread(g, "%.3f").c_str(), spread(m, "%.3f").c_str(), spread(kg, "%.3f").c_str(),
                    spread(km, "%.3f").c_str(), spread(ratio, "%.2f").c_str(), median(seg), median(copies),
                    u.xdp_mode.c_str());
    }
}

} // namespace zc::vmbench
