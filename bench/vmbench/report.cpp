// SPDX-License-Identifier: MIT
// zc-vmbench's report (report.hpp).
#include "report.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

namespace zc::vmbench {
namespace {

// The same row (mode, frame, pairs, queues) of a pass, or null.
const row* same_row(const pass& p, const row& like) {
    for (auto& r : p.rows)
        if (r.mode == like.mode && r.frame == like.frame && r.pairs == like.pairs && r.queues == like.queues) return &r;
    return nullptr;
}

row median_row(const std::vector<const row*>& rs) {
    row m = *rs.front();
    auto med = [&rs](double row::*f) {
        std::vector<double> v;
        for (const row* r : rs) v.push_back(r->*f);
        return median(std::move(v));
    };
    m.gbps = med(&row::gbps);
    m.mpps = med(&row::mpps);
    m.cpu_s_per_gb = med(&row::cpu_s_per_gb);
    m.segs_per_pkt = med(&row::segs_per_pkt);
    m.batches_per_pkt = med(&row::batches_per_pkt);
    m.notifies_per_pkt = med(&row::notifies_per_pkt);
    m.fallbacks_per_pkt = med(&row::fallbacks_per_pkt);
    m.nb_us_per_pkt = med(&row::nb_us_per_pkt);
    m.gbps_min = m.gbps_max = rs.front()->gbps;
    m.frames = m.sent = 0;
    m.intact = true;
    for (const row* r : rs) {
        m.gbps_min = std::min(m.gbps_min, r->gbps);
        m.gbps_max = std::max(m.gbps_max, r->gbps);
        m.frames += r->frames;
        m.sent += r->sent;
        m.intact = m.intact && r->intact;
    }
    m.passes = uint32_t(rs.size());
    m.note = "median of " + std::to_string(rs.size()) + " passes";
    return m;
}

// An uplink row's own JSON fields (none for other rows).
std::string uplink_fields(const row& r) {
    if (r.xdp_mode.empty()) return "";
    char buf[160];
    std::snprintf(buf, sizeof buf, ",\"xdp_mode\":\"%s\",\"copies_per_pkt\":%.3f,\"header_copies_per_pkt\":%.3f",
                  r.xdp_mode.c_str(), r.copies_per_pkt, r.hdr_copies_per_pkt);
    return buf;
}

} // namespace

void print_row(const row& r, const row* mc, const row* kern) {
    char rm[32] = "-", rk[32] = "-";
    if (mc && mc->gbps > 0) std::snprintf(rm, sizeof rm, "%.3f", r.gbps / mc->gbps);
    if (kern && kern->gbps > 0) std::snprintf(rk, sizeof rk, "%.2f", r.gbps / kern->gbps);
    std::printf("%-12s %7zu %5u %3u %9.3f %8.3f %9.2f %8s %8s %7.2f %7.3f %7.2f %6.2f %7.3f %-6s %s\n",
                r.mode.c_str(), r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, rm, rk, r.segs_per_pkt,
                r.batches_per_pkt, r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.intact ? "yes" : "NO",
                r.note.c_str());
    std::fflush(stdout);
}

void print_rr(const rr_row& r) {
    std::printf("%-12s %7zu  rtt p50 %8.1f us  p99 %8.1f us  p99.9 %8.1f us  (%" PRIu64 " round trips, %" PRIu64
                " lost)\n",
                r.mode.c_str(), r.frame, r.p50, r.p99, r.p999, r.samples, r.lost);
    if (r.cpu_us_per_rt > 0)
        std::printf("%-12s %7zu  per round trip: %.1f us CPU (all processes on the path), %.2f zc-netback "
                    "notifications%s%s\n",
                    "", r.frame, r.cpu_us_per_rt, r.notifies_per_rt,
                    r.cpu_split.empty() ? "" : "\n                       us CPU by process: ", r.cpu_split.c_str());
    std::fflush(stdout);
}

// rr mode: request/response through zc-netback (the first pair) and over
// the kernel's veth (UDP), at every measured size up to a standard frame.

void print_summary(const std::vector<row>& rows, std::map<size_t, row>& mc, std::map<size_t, row>& kern) {
    auto find = [&](const char* mode, const row& like) -> const row* {
        for (auto& r : rows)
            if (r.mode == mode && r.frame == like.frame && r.pairs == like.pairs && r.queues == like.queues) return &r;
        return nullptr;
    };
    bool header = false;
    for (auto& z : rows) {
        if (z.mode != "zc") continue;
        if (!header) {
            std::printf("\nzc against the baselines of this run (ratios of Gbit/s):\n");
            std::printf("%7s %5s %6s %9s %9s %9s %12s %9s\n", "frame", "pairs", "queues", "zc", "zc/memcpy",
                        "zc/kernel", "zc/dbl-copy", "zc/press");
            header = true;
        }
        auto ratio = [](double a, const row* b, char* out, size_t n) {
            if (b && b->gbps > 0) std::snprintf(out, n, "%.3f", a / b->gbps);
            else std::snprintf(out, n, "-");
        };
        char rm[32], rk[32], rd[32], rp[32];
        ratio(z.gbps, mc.count(z.frame) ? &mc[z.frame] : nullptr, rm, sizeof rm);
        ratio(z.gbps, kern.count(z.frame) ? &kern[z.frame] : nullptr, rk, sizeof rk);
        ratio(z.gbps, find("double-copy", z), rd, sizeof rd);
        ratio(z.gbps, find("pressure", z), rp, sizeof rp);
        std::printf("%7zu %5u %6u %9.3f %9s %9s %12s %9s\n", z.frame, z.pairs, z.queues, z.gbps, rm, rk, rd, rp);
    }
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

pass median_pass(const std::vector<pass>& passes) {
    pass agg;
    for (const row& r : passes.front().rows) {
        std::vector<const row*> rs;
        for (const pass& p : passes)
            if (const row* x = same_row(p, r)) rs.push_back(x);
        agg.rows.push_back(median_row(rs));
    }
    using baselines = std::map<size_t, row> pass::*;
    for (baselines which : {&pass::mc, &pass::kern})
        for (auto& [frame, r] : passes.front().*which) {
            std::vector<const row*> rs;
            for (const pass& p : passes)
                if (auto it = (p.*which).find(frame); it != (p.*which).end()) rs.push_back(&it->second);
            (agg.*which)[frame] = median_row(rs);
        }
    // Every rr row any pass has (a row one pass skipped is the median of the others).
    std::vector<rr_row> kinds;
    for (const pass& p : passes)
        for (const rr_row& r : p.rr)
            if (std::none_of(kinds.begin(), kinds.end(),
                             [&](const rr_row& k) { return k.mode == r.mode && k.frame == r.frame; }))
                kinds.push_back(r);
    for (const rr_row& r : kinds) {
        std::vector<double> p50, p99, p999, k50, k99, cpu, ntf;
        rr_row m = r;
        m.samples = m.lost = 0;
        for (const pass& p : passes)
            for (const rr_row& x : p.rr)
                if (x.mode == r.mode && x.frame == r.frame) {
                    p50.push_back(x.p50);
                    p99.push_back(x.p99);
                    p999.push_back(x.p999);
                    if (x.p50_vs_kernel > 0) { // a pass without its kernel-rr row has no ratio
                        k50.push_back(x.p50_vs_kernel);
                        k99.push_back(x.p99_vs_kernel);
                    }
                    cpu.push_back(x.cpu_us_per_rt);
                    ntf.push_back(x.notifies_per_rt);
                    m.samples += x.samples;
                    m.lost += x.lost;
                }
        m.p50 = median(p50);
        m.p99 = median(p99);
        m.p999 = median(p999);
        m.p50_vs_kernel = median(k50);
        m.p99_vs_kernel = median(k99);
        m.cpu_us_per_rt = median(cpu);
        m.cpu_split.clear(); // each pass printed its own
        m.notifies_per_rt = median(ntf);
        agg.rr.push_back(m);
    }
    return agg;
}

void print_repeat_summary(const std::vector<pass>& passes) {
    if (std::none_of(passes.front().rows.begin(), passes.front().rows.end(),
                     [](const row& r) { return r.mode == "zc"; }))
        return;
    std::printf("\nzc over %zu interleaved passes: median (min-max); ratios within each pass:\n", passes.size());
    std::printf("%7s %5s %6s %24s %20s %20s %20s %8s %9s\n", "frame", "pairs", "queues", "zc Gbit/s", "zc/dbl-copy",
                "zc/kernel-udp", "zc/kernel-tcp", "fb/pkt", "nb-us/pkt");
    auto spread = [](std::vector<double> v, const char* fmt, char* out, size_t n) {
        if (v.empty()) {
            std::snprintf(out, n, "-");
            return;
        }
        const double m = median(v);
        std::sort(v.begin(), v.end());
        char f[64];
        std::snprintf(f, sizeof f, "%s (%s-%s)", fmt, fmt, fmt);
        std::snprintf(out, n, f, m, v.front(), v.back());
    };
    for (const row& z : passes.front().rows) {
        if (z.mode != "zc") continue;
        std::vector<double> g, rd, rk, rt, fb, nb;
        for (const pass& p : passes) {
            const row* x = same_row(p, z);
            if (!x) continue;
            g.push_back(x->gbps);
            fb.push_back(x->fallbacks_per_pkt);
            nb.push_back(x->nb_us_per_pkt);
            row d = *x;
            d.mode = "double-copy";
            if (const row* y = same_row(p, d); y && y->gbps > 0) rd.push_back(x->gbps / y->gbps);
            if (auto k = p.kern.find(z.frame); k != p.kern.end() && k->second.gbps > 0)
                rk.push_back(x->gbps / k->second.gbps);
            for (const row& t : p.rows)
                if (t.mode == "kernel-tcp" && t.gbps > 0) rt.push_back(x->gbps / t.gbps);
        }
        char cg[64], cd[64], ck[64], ct[64];
        spread(g, "%.2f", cg, sizeof cg);
        spread(rd, "%.2f", cd, sizeof cd);
        spread(rk, "%.2f", ck, sizeof ck);
        spread(rt, "%.2f", ct, sizeof ct);
        std::printf("%7zu %5u %6u %24s %20s %20s %20s %8.3f %9.3f\n", z.frame, z.pairs, z.queues, cg, cd, ck, ct,
                    median(fb), median(nb));
    }
}

void write_outputs(const run_opts& o, pass& agg) {
    std::vector<row>& rows = agg.rows;
    std::map<size_t, row>& mc = agg.mc;
    std::map<size_t, row>& kern = agg.kern;
    if (FILE* f = std::fopen(o.json.c_str(), "w")) {
        std::fprintf(f, "{\"tool\":\"zc-vmbench\",\"seconds\":%.3f,\"rows\":[", o.seconds);
        for (size_t i = 0; i < rows.size(); i++) {
            auto& r = rows[i];
            double rm = mc.count(r.frame) && mc[r.frame].gbps > 0 ? r.gbps / mc[r.frame].gbps : 0;
            double rk = kern.count(r.frame) && kern[r.frame].gbps > 0 ? r.gbps / kern[r.frame].gbps : 0;
            std::fprintf(f,
                         "%s{\"mode\":\"%s\",\"frame\":%zu,\"pairs\":%u,\"queues\":%u,\"gbps\":%.4f,\"mpps\":%.4f,"
                         "\"cpu_s_per_gb\":%.4f,\"ratio_memcpy\":%.4f,\"ratio_kernel\":%.4f,\"frames\":%" PRIu64
                         ",\"sent\":%" PRIu64 ",\"intact\":%s,\"grant_copy_segments_per_pkt\":%.3f,"
                         "\"grant_copy_batches_per_pkt\":%.4f,\"notifies_per_pkt\":%.4f,\"fallbacks_per_pkt\":%.4f,"
                         "\"netback_us_per_pkt\":%.4f,\"passes\":%u,\"gbps_min\":%.4f,\"gbps_max\":%.4f%s}",
                         i ? "," : "", r.mode.c_str(), r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, rm,
                         rk, r.frames, r.sent, r.intact ? "true" : "false", r.segs_per_pkt, r.batches_per_pkt,
                         r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.passes,
                         r.passes > 1 ? r.gbps_min : r.gbps, r.passes > 1 ? r.gbps_max : r.gbps,
                         uplink_fields(r).c_str());
        }
        std::fprintf(f, "],\"latency\":[");
        for (size_t i = 0; i < agg.rr.size(); i++) {
            const rr_row& r = agg.rr[i];
            std::fprintf(f,
                         "%s{\"mode\":\"%s\",\"frame\":%zu,\"samples\":%" PRIu64 ",\"lost\":%" PRIu64
                         ",\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"p50_vs_kernel\":%.3f,"
                         "\"p99_vs_kernel\":%.3f,\"cpu_us_per_rt\":%.2f,\"notifies_per_rt\":%.3f}",
                         i ? "," : "", r.mode.c_str(), r.frame, r.samples, r.lost, r.p50, r.p99, r.p999,
                         r.p50_vs_kernel, r.p99_vs_kernel, r.cpu_us_per_rt, r.notifies_per_rt);
        }
        std::fprintf(f, "]}\n");
        std::fclose(f);
    }
    if (FILE* f = std::fopen(o.csv.c_str(), "w")) {
        std::fprintf(f, "mode,frame,pairs,queues,gbps,mpps,cpu_s_per_gb,intact,seg_per_pkt,batches_per_pkt,"
                        "notifies_per_pkt,fallbacks_per_pkt,netback_us_per_pkt,passes,gbps_min,gbps_max\n");
        for (auto& r : rows)
            std::fprintf(f, "%s,%zu,%u,%u,%.4f,%.4f,%.4f,%d,%.3f,%.4f,%.4f,%.4f,%.4f,%u,%.4f,%.4f\n", r.mode.c_str(),
                         r.frame, r.pairs, r.queues, r.gbps, r.mpps, r.cpu_s_per_gb, r.intact ? 1 : 0, r.segs_per_pkt,
                         r.batches_per_pkt, r.notifies_per_pkt, r.fallbacks_per_pkt, r.nb_us_per_pkt, r.passes,
                         r.passes > 1 ? r.gbps_min : r.gbps, r.passes > 1 ? r.gbps_max : r.gbps);
        std::fclose(f);
    }
    std::string plot = ZC_PLOT_SH;
    if (!o.png.empty() && ::access(plot.c_str(), X_OK) == 0) {
        std::string cmd = "ZC_PLOT_LOGY=1 '" + plot + "' '" + o.json + "' '" + o.png + "' >/dev/null 2>&1";
        if (std::system(cmd.c_str()) == 0) std::printf("plot: %s\n", o.png.c_str());
    }
}

} // namespace zc::vmbench
