// SPDX-License-Identifier: MIT
// zc-hvdemo: guests share pages with dom0, dom0 grant-copies between two
// guests gref->gref (the VM-to-VM path zc-netback uses) and measures it next
// to memcpy of the same bytes in the same run. Runs on any hypervisor port:
// under `zc-emu run` it uses the emulated Xen.
//
//   zc-hvdemo guest [--pages N] [--expect-from DOM] [--timeout S]
//   zc-hvdemo host --src DOM --dst DOM [--seconds S] [--json FILE]
//
// The handshake is xenstore under /local/domain/<guest>/zcdemo/ and an event
// channel per guest, as a split driver does.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <string>
#include <vector>

#include "hv/hv.hpp"
#include "hv/xs.hpp"

using namespace zc;
using clk = std::chrono::steady_clock;

namespace {

const char* usage_text =
    "usage: zc-hvdemo guest [--pages N] [--expect-from DOM] [--timeout S]\n"
    "       zc-hvdemo host --src DOM --dst DOM [--seconds S] [--json FILE]\n"
    "\n"
    "guest: share N pages (default 64) with dom0, publish their grant refs and an\n"
    "       event channel in xenstore, wait for dom0; with --expect-from, verify that\n"
    "       the pages now hold DOM's pattern.\n"
    "host:  grant-copy from --src's pages into --dst's pages (gref to gref) for each\n"
    "       size, next to memcpy of the same bytes, then a full-page integrity pass.\n"
    "Run each under `zc-emu run --dom N --` (emulated Xen) or on a Xen host.\n";

uint8_t pattern(hv::domid_t d, size_t page, size_t off) {
    return uint8_t((d * 131u) ^ (page * 31u) ^ (off * 7u) ^ (off >> 8));
}

std::string base(hv::domid_t d) { return "/local/domain/" + std::to_string(d) + "/zcdemo"; }

// Wait until `path` exists (or holds `want` when given), watching it.
result<std::string> wait_key(hv::xs& x, const std::string& path, const std::string& want, int timeout_s) {
    if (int rc = x.watch(path, "w"); rc < 0) return err(rc);
    auto deadline = clk::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        auto v = x.read(path);
        if (v && (want.empty() || *v == want)) {
            x.unwatch(path, "w");
            return v;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clk::now()).count();
        if (left <= 0) {
            x.unwatch(path, "w");
            return err(-ETIMEDOUT);
        }
        pollfd p{x.fileno(), POLLIN, 0};
        ::poll(&p, 1, int(std::min<long long>(left, 1000)));
        while (x.read_watch()) {
        }
    }
}

bool wait_event(hv::evtchn& ev, int timeout_s) {
    pollfd p{ev.fd(), POLLIN, 0};
    auto deadline = clk::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        if (auto port = ev.pending()) {
            ev.unmask(*port);
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clk::now()).count();
        if (left <= 0) return false;
        ::poll(&p, 1, int(left));
    }
}

struct opts {
    uint32_t pages = 64;
    long expect_from = -1;
    int timeout = 60;
    long src = -1, dst = -1;
    double seconds = 0.5;
    std::string json;
};

int run_guest(hv::port& port, const opts& o) {
    hv::domid_t me = port.self();
    auto sh = port.open_gntshr();
    auto ev = port.open_evtchn();
    auto x = hv::xs::open(port.xenstore_path());
    if (!sh || !ev || !x) {
        std::fprintf(stderr, "guest %u: cannot open the hypervisor port\n", unsigned(me));
        return 1;
    }
    auto pages = (*sh)->share(0, o.pages, true);
    if (!pages) {
        std::fprintf(stderr, "guest %u: share: %s\n", unsigned(me), std::strerror(-pages.error()));
        return 1;
    }
    auto* mem = static_cast<uint8_t*>(pages->addr);
    for (size_t p = 0; p < o.pages; p++)
        for (size_t i = 0; i < hv::page_size; i++) mem[p * hv::page_size + i] = pattern(me, p, i);
    auto evp = (*ev)->bind_unbound(0);
    if (!evp) {
        std::fprintf(stderr, "guest %u: evtchn: %s\n", unsigned(me), std::strerror(-evp.error()));
        return 1;
    }
    std::string refs;
    for (auto r : pages->refs) refs += (refs.empty() ? "" : ",") + std::to_string(r);
    auto& xs = **x;
    xs.write(base(me) + "/grefs", refs);
    xs.write(base(me) + "/event-channel", std::to_string(*evp));
    xs.write(base(me) + "/state", "ready");
    std::printf("guest %u: shared %u pages with dom0 (grefs %u..), event channel %u\n", unsigned(me), o.pages,
                pages->refs.front(), *evp);
    std::fflush(stdout);
    if (!wait_event(**ev, o.timeout)) {
        std::fprintf(stderr, "guest %u: dom0 never signalled (timeout %d s)\n", unsigned(me), o.timeout);
        return 1;
    }
    int rc = 0;
    if (o.expect_from >= 0) {
        size_t bad = 0;
        for (size_t p = 0; p < o.pages; p++)
            for (size_t i = 0; i < hv::page_size; i++)
                bad += mem[p * hv::page_size + i] != pattern(hv::domid_t(o.expect_from), p, i);
        std::string verdict = bad ? "bad " + std::to_string(bad) : "ok " + std::to_string(size_t(o.pages) * hv::page_size);
        xs.write(base(me) + "/verified", verdict);
        std::printf("guest %u: integrity of the copy from dom%ld: %s\n", unsigned(me), o.expect_from, verdict.c_str());
        rc = bad ? 1 : 0;
    } else {
        xs.write(base(me) + "/verified", "source");
    }
    // dom0 is done with our pages; end the grants (retry while still in use).
    for (int i = 0; i < 100; i++) {
        int u = (*sh)->unshare(*pages);
        if (u == 0) break;
        if (u != -EBUSY) {
            std::fprintf(stderr, "guest %u: unshare: %s\n", unsigned(me), std::strerror(-u));
            return 1;
        }
        ::poll(nullptr, 0, 20);
    }
    return rc;
}

struct peer {
    hv::domid_t dom;
    std::vector<hv::gref_t> refs;
    hv::evtchn_port_t port = 0;
};

result<peer> connect_peer(hv::xs& xs, hv::evtchn& ev, hv::domid_t d, int timeout) {
    peer p{d, {}, 0};
    auto st = wait_key(xs, base(d) + "/state", "ready", timeout);
    if (!st) return err(st.error());
    auto refs = xs.read(base(d) + "/grefs");
    auto port = xs.read(base(d) + "/event-channel");
    if (!refs || !port) return err(-EPROTO);
    // Guest-written values: parse strictly.
    const char* s = refs->c_str();
    while (*s) {
        char* end = nullptr;
        unsigned long v = std::strtoul(s, &end, 10);
        if (end == s || v > UINT32_MAX) return err(-EPROTO);
        p.refs.push_back(hv::gref_t(v));
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return err(-EPROTO);
    }
    char* end = nullptr;
    unsigned long rp = std::strtoul(port->c_str(), &end, 10);
    if (*end || rp == 0) return err(-EPROTO);
    auto lp = ev.bind_interdomain(d, hv::evtchn_port_t(rp));
    if (!lp) return err(lp.error());
    p.port = *lp;
    return p;
}

struct row {
    size_t size;
    double gc_gbps, mc_gbps;
    uint64_t batches, segments;
};

int run_host(hv::port& port, const opts& o) {
    if (o.src < 0 || o.dst < 0) {
        std::fprintf(stderr, "host: --src and --dst are required\n");
        return 2;
    }
    auto gt = port.open_gnttab();
    auto ev = port.open_evtchn();
    auto x = hv::xs::open(port.xenstore_path());
    if (!gt || !ev || !x) {
        std::fprintf(stderr, "host: cannot open the hypervisor port\n");
        return 1;
    }
    auto& xs = **x;
    auto src = connect_peer(xs, **ev, hv::domid_t(o.src), o.timeout);
    auto dst = connect_peer(xs, **ev, hv::domid_t(o.dst), o.timeout);
    if (!src || !dst) {
        std::fprintf(stderr, "host: guests did not come up: %s\n", std::strerror(-(src ? dst.error() : src.error())));
        return 1;
    }
    uint32_t n = uint32_t(std::min(src->refs.size(), dst->refs.size()));
    std::printf("host: dom%ld -> dom%ld, %u pages each, hypervisor port: %s\n", o.src, o.dst, n, port.name());

    // A map round trip of the source's pages (netback maps ring pages this way).
    std::vector<hv::domid_t> doms(n, hv::domid_t(o.src));
    auto m = (*gt)->map(n, doms.data(), src->refs.data(), false);
    if (!m) {
        std::fprintf(stderr, "host: map: %s\n", std::strerror(-m.error()));
        return 1;
    }
    bool map_ok = static_cast<uint8_t*>(m->addr)[hv::page_size + 5] == pattern(hv::domid_t(o.src), 1, 5);
    (*gt)->unmap(*m);

    constexpr uint32_t batch = 64;
    std::vector<hv::copy_segment> segs(batch);
    std::vector<uint8_t> a(size_t(batch) * hv::page_size, 1), b(size_t(batch) * hv::page_size, 2);
    std::vector<row> rows;
    for (size_t size : {64, 256, 1500, 4096}) {
        row r{size, 0, 0, 0, 0};
        auto c0 = (*gt)->counters();
        auto t0 = clk::now();
        uint64_t bytes = 0;
        uint32_t i = 0;
        do {
            for (uint32_t k = 0; k < batch; k++, i++) {
                auto& s = segs[k];
                s = {};
                s.source.foreign = {src->refs[i % n], 0, hv::domid_t(o.src)};
                s.dest.foreign = {dst->refs[i % n], 0, hv::domid_t(o.dst)};
                s.len = uint16_t(size);
                s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
            }
            if ((*gt)->copy(segs.data(), batch) < 0) return 1;
            for (auto& s : segs)
                if (s.status != GNTST_okay) {
                    std::fprintf(stderr, "host: grant copy failed: %s\n", hv::gntst_name(s.status));
                    return 1;
                }
            bytes += size * batch;
        } while (clk::now() - t0 < std::chrono::duration<double>(o.seconds));
        double t = std::chrono::duration<double>(clk::now() - t0).count();
        r.gc_gbps = double(bytes) * 8 / t / 1e9;
        auto c1 = (*gt)->counters();
        r.batches = c1.copy_batches - c0.copy_batches;
        r.segments = c1.copy_segments - c0.copy_segments;
        // memcpy of the same sizes between two local buffers, same loop shape.
        bytes = 0;
        t0 = clk::now();
        do {
            for (uint32_t k = 0; k < batch; k++)
                std::memcpy(b.data() + k * hv::page_size, a.data() + k * hv::page_size, size);
            asm volatile("" ::"r"(b.data()) : "memory");
            bytes += size * batch;
        } while (clk::now() - t0 < std::chrono::duration<double>(o.seconds));
        t = std::chrono::duration<double>(clk::now() - t0).count();
        r.mc_gbps = double(bytes) * 8 / t / 1e9;
        rows.push_back(r);
    }

    // Integrity pass: every page of src into dst, whole pages.
    for (uint32_t i = 0; i < n; i += batch) {
        uint32_t k = std::min(batch, n - i);
        for (uint32_t j = 0; j < k; j++) {
            auto& s = segs[j];
            s = {};
            s.source.foreign = {src->refs[i + j], 0, hv::domid_t(o.src)};
            s.dest.foreign = {dst->refs[i + j], 0, hv::domid_t(o.dst)};
            s.len = hv::page_size;
            s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
        }
        if ((*gt)->copy(segs.data(), k) < 0) return 1;
        for (uint32_t j = 0; j < k; j++)
            if (segs[j].status != GNTST_okay) return 1;
    }
    (*ev)->notify(src->port);
    (*ev)->notify(dst->port);
    auto verdict = wait_key(xs, base(hv::domid_t(o.dst)) + "/verified", "", o.timeout);
    bool intact = verdict && verdict->rfind("ok", 0) == 0;

    std::printf("\n%-8s %14s %14s %10s %12s %10s\n", "size", "grant copy", "memcpy", "gc/memcpy", "segs/batch",
                "batches");
    std::printf("%-8s %14s %14s %10s %12s %10s\n", "(bytes)", "(Gbit/s)", "(Gbit/s)", "", "", "");
    for (auto& r : rows)
        std::printf("%-8zu %14.2f %14.2f %10.2f %12.1f %10" PRIu64 "\n", r.size, r.gc_gbps, r.mc_gbps,
                    r.gc_gbps / r.mc_gbps, r.batches ? double(r.segments) / double(r.batches) : 0.0, r.batches);
    std::printf("\nmap of %u source pages: %s; integrity of %u full pages dom%ld -> dom%ld: %s\n", n,
                map_ok ? "contents ok" : "WRONG CONTENTS", n, o.src, o.dst,
                verdict ? verdict->c_str() : "no answer from the destination guest");
    if (!o.json.empty()) {
        if (FILE* f = std::fopen(o.json.c_str(), "w")) {
            std::fprintf(f, "{\"hv\":\"%s\",\"src\":%ld,\"dst\":%ld,\"pages\":%u,\"intact\":%s,\"rows\":[", port.name(),
                         o.src, o.dst, n, intact ? "true" : "false");
            for (size_t i = 0; i < rows.size(); i++)
                std::fprintf(f, "%s{\"size\":%zu,\"grant_copy_gbps\":%.3f,\"memcpy_gbps\":%.3f,\"ratio\":%.3f}",
                             i ? "," : "", rows[i].size, rows[i].gc_gbps, rows[i].mc_gbps,
                             rows[i].gc_gbps / rows[i].mc_gbps);
            std::fprintf(f, "]}\n");
            std::fclose(f);
        }
    }
    return intact && map_ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        std::fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    std::string role = argv[1];
    opts o;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        auto num = [&](long lo, long hi) -> long {
            if (i + 1 >= argc) return lo - 1;
            char* end = nullptr;
            long v = std::strtol(argv[++i], &end, 10);
            return (*end || v < lo || v > hi) ? lo - 1 : v;
        };
        long v;
        if (a == "--pages" && (v = num(1, 4096)) >= 1) o.pages = uint32_t(v);
        else if (a == "--expect-from" && (v = num(0, 0x7fef)) >= 0) o.expect_from = v;
        else if (a == "--timeout" && (v = num(1, 3600)) >= 1) o.timeout = int(v);
        else if (a == "--src" && (v = num(0, 0x7fef)) >= 0) o.src = v;
        else if (a == "--dst" && (v = num(0, 0x7fef)) >= 0) o.dst = v;
        else if (a == "--seconds" && i + 1 < argc) o.seconds = std::max(0.05, std::atof(argv[++i]));
        else if (a == "--json" && i + 1 < argc) o.json = argv[++i];
        else {
            std::fprintf(stderr, "zc-hvdemo: bad or incomplete option '%s'\n%s", a.c_str(), usage_text);
            return 2;
        }
    }
    std::string why;
    auto port = hv::open(&why);
    if (!port) {
        std::fprintf(stderr, "zc-hvdemo: %s\n", why.c_str());
        return 1;
    }
    if (role == "guest") return run_guest(**port, o);
    if (role == "host") return run_host(**port, o);
    std::fprintf(stderr, "zc-hvdemo: unknown role '%s'\n%s", role.c_str(), usage_text);
    return 2;
}
