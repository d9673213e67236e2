// SPDX-License-Identifier: MIT
// zc-vmbench --modes soak (soak.hpp).
#include "soak.hpp"

#include <algorithm>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <map>
#include <dirent.h>
#include <random>
#include <unistd.h>

#include "hv/emu/emu_port.hpp"
#include "link/netfront.hpp"

namespace zc::vmbench {
namespace {

constexpr double grace_s = 3; // a guest drains this long for its sender's end marker

struct gslot {
    hv::domid_t dom = 0;
    bool flapper = false;
    child c;
    std::string mac;
    uint64_t kills = 0, reopens = 0;
};

// zc-netback's process and mappings at one moment.
struct sample {
    uint64_t rss_kb = 0;
    uint32_t fds = 0;
    std::vector<std::string> fd_list;
    int64_t mapped = 0; // grant pages mapped now: hv maps - unmaps
};

uint64_t rss_kb(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/status", int(pid));
    FILE* f = std::fopen(path, "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "VmRSS: %" SCNu64, &kb) == 1) break;
    std::fclose(f);
    return kb;
}

// What each open fd of `pid` is (/proc/PID/fd links), sorted.
std::vector<std::string> fd_targets(pid_t pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/fd";
    std::vector<std::string> v;
    DIR* d = ::opendir(path.c_str());
    if (!d) return v;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char buf[256];
        const ssize_t n = ::readlinkat(::dirfd(d), e->d_name, buf, sizeof buf - 1);
        v.emplace_back(buf, size_t(std::max<ssize_t>(n, 0)));
    }
    ::closedir(d);
    std::sort(v.begin(), v.end());
    return v;
}

// The fds in `now` and not in `before` (kinds only, e.g. "/memfd:... x3").
std::string new_fds(const std::vector<std::string>& before, const std::vector<std::string>& now) {
    std::vector<std::string> extra;
    std::set_difference(now.begin(), now.end(), before.begin(), before.end(), std::back_inserter(extra));
    std::map<std::string, uint32_t> kinds;
    for (auto& x : extra) ++kinds[x.substr(0, x.find_first_of("[:"))];
    std::string s;
    for (auto& [k, c] : kinds) s += (s.empty() ? "" : ", ") + k + " x" + std::to_string(c);
    return s;
}

// The JSON object after `key` (its braces included).
std::string object_of(const std::string& json, const std::string& key) {
    const auto p = json.find("\"" + key + "\":{");
    if (p == std::string::npos) return "";
    const auto b = json.find('{', p), e = json.find('}', b);
    return json.substr(b, e - b + 1);
}

sample take_sample(const dom0_host& h) {
    sample s;
    s.rss_kb = rss_kb(h.netback.pid);
    s.fd_list = fd_targets(h.netback.pid);
    s.fds = uint32_t(s.fd_list.size());
    const std::string hv = object_of(netback_stats(h.ctl), "hv");
    s.mapped = int64_t(jnum(hv, "maps")) - int64_t(jnum(hv, "unmaps"));
    return s;
}

// Every vif's counters, live and removed (stats JSON "retired").
netback::vif_stats all_counters(const std::string& ctl, uint32_t* live_vifs) {
    const std::string json = netback_stats(ctl);
    netback::vif_stats total = netback_totals(ctl);
    const std::string r = object_of(json, "retired");
    netback::vif_stats v;
#define ZC_SOAK_PARSE_(name, unit, drop, help) v.name = std::strtoull(jfield(r, #name).c_str(), nullptr, 10);
    ZC_NETBACK_VIF_COUNTERS(ZC_SOAK_PARSE_)
#undef ZC_SOAK_PARSE_
    total += v;
    if (live_vifs) {
        *live_vifs = 0;
        for (size_t p = json.find("{\"frontend\":"); p < json.find("],\"uplinks\""); p = json.find("{\"frontend\":", p + 1))
            ++*live_vifs;
    }
    return total;
}

// The equation of docs/ARCHITECTURE.md, "Counters": frames in (each
// flooded frame once per destination) against frames out or dropped.
struct balance {
    uint64_t in = 0, delivered = 0, dropped = 0;
    bool holds() const { return in == delivered + dropped; }
};
balance balance_of(const netback::vif_stats& t) {
    balance b;
    b.in = t.tx_packets + t.flood_extra;
    b.delivered = t.rx_packets;
    for (size_t k = 0; k < netback::vif_stats::schema_size; ++k)
        if (netback::vif_stats::schema[k].drop && std::strcmp(netback::vif_stats::schema[k].name, "drop_malformed"))
            b.dropped += t.field(k);
    return b;
}

std::string drops_text(const netback::vif_stats& t) {
    std::string s;
    for (size_t k = 0; k < netback::vif_stats::schema_size; ++k)
        if (netback::vif_stats::schema[k].drop && t.field(k))
            s += std::string(s.empty() ? "" : " ") + netback::vif_stats::schema[k].name + "=" +
                 std::to_string(t.field(k));
    return s.empty() ? "none" : s;
}

bool wait_until(double seconds, auto cond) {
    for (double end = now_s() + seconds; !cond(); ::usleep(20000))
        if (now_s() > end) return false;
    return true;
}

// `xl destroy` and `xl create` of one guest: SIGKILL (the domain dies with
// its only process), zc-netback tears the vif down and removes its backend
// directory (@releaseDomain), then the same domain id, vif and MAC again,
// the netfront connecting from scratch.
bool recreate(dom0_host& h, const run_opts& o, gslot& g, std::string* why) {
    if (g.c.pid > 0) ::kill(g.c.pid, SIGKILL);
    g.c.terminate(); // reaps it
    const std::string be = "/local/domain/0/backend/vif/" + std::to_string(g.dom) + "/0";
    if (!wait_until(20, [&] { return !h.xs->read(be); }))
        return *why = "zc-netback kept the backend of dead domain " + std::to_string(g.dom), false;
    if (!wait_until(20, [&] {
            auto l = hv::emu::client_of(*h.dom0)->list_domains();
            return l && std::find(l->begin(), l->end(), g.dom) == l->end();
        }))
        return *why = "domain " + std::to_string(g.dom) + " did not go away", false;
    ++g.kills;
    std::string mac;
    if (!h.add_guest(o, g.dom, "soak", link::netif_rx_ring_size, 1, g.c, why) ||
        !dom0_host::connect_guest(g.c, g.dom, mac, why))
        return false;
    if (mac != g.mac) return *why = "domain " + std::to_string(g.dom) + " came back as " + mac, false;
    return true;
}

double mib(uint64_t kb) { return double(kb) / 1024; }

} // namespace

int run_soak(const run_opts& o, const soak_opts& s) {
    const uint32_t seed = s.seed ? s.seed : uint32_t(std::time(nullptr)) ^ uint32_t(::getpid());
    std::mt19937 rng(seed);
    std::printf("soak: %u guests in a ring + %u flapping, %.0f frames/s each (0: unpaced), %.0f s of load in %.1f s "
                "rounds, a kill every ~%.1f s, seed %u\n",
                s.guests, s.flappers, s.rate, s.duration, s.round, s.kill_every, seed);
    std::fflush(stdout);
    dom0_host h;
    std::string why;
    const uint32_t workers = o.workers ? o.workers : 2;
    if (!h.start_dom0("vmbench-soak", o, {"--workers", std::to_string(workers)}, &why)) {
        std::fprintf(stderr, "zc-vmbench: soak: cannot start the emulated host: %s\n", why.c_str());
        return 2;
    }
    std::vector<gslot> g(s.guests + s.flappers);
    for (size_t i = 0; i < g.size(); ++i) {
        g[i].dom = hv::domid_t(i + 1);
        g[i].flapper = i >= s.guests;
        if (!h.add_guest(o, g[i].dom, "soak", link::netif_rx_ring_size, 1, g[i].c, &why)) break;
    }
    for (size_t i = 0; i < g.size() && why.empty(); ++i) dom0_host::connect_guest(g[i].c, g[i].dom, g[i].mac, &why);
    if (!why.empty()) {
        std::fprintf(stderr, "zc-vmbench: soak: %s\n", why.c_str());
        for (auto& x : g) x.c.terminate();
        h.stop_dom0();
        return 2;
    }

    bool ok = true;
    uint64_t nfail = 0;
    auto fail = [&](const std::string& m) {
        ok = false;
        if (++nfail <= 50) std::printf("FAIL: %s\n", m.c_str()); // the run goes on; the summary counts them
    };
    uint64_t frames = 0, bytes = 0, lossless_links = 0, lossless_frames = 0, lost = 0, corrupt = 0, foreign = 0;
    uint64_t kills = 0, reopens = 0, rounds = 0, seen_in = 0;
    uint32_t phase = 0;
    const double t0 = now_s();
    double next_kill = 0;
    auto schedule_kill = [&] {
        std::uniform_real_distribution<double> u(0.5, 1.5);
        next_kill = s.kill_every > 0 ? now_s() + s.kill_every * u(rng) : 1e300;
    };
    sample warm{}, quarter{};
    bool have_quarter = false;
    const uint32_t n = s.guests;
    // Round 0 is the warm-up: no kills, no flapping.
    for (uint32_t r = 0;; ++r) {
        const bool warmup = r == 0;
        if (!warmup && now_s() - t0 >= s.duration) break;
        if (r == 1) schedule_kill();
        ++phase;
        std::vector<bool> in(n, false), touched(n, false);
        const uint64_t kills0 = kills, lost0 = lost;
        for (uint32_t i = 0; i < n; ++i) {
            char cmd[128];
            std::snprintf(cmd, sizeof cmd, "soak %u %.3f %s %.1f %.1f", phase, s.round, g[(i + 1) % n].mac.c_str(),
                          grace_s, s.rate);
            in[i] = g[i].c.send(cmd);
        }
        const double round_end = now_s() + s.round;
        while (now_s() < round_end) { // a failure does not stop the churn
            if (!warmup && now_s() >= next_kill) {
                std::uniform_int_distribution<uint32_t> pick(0, uint32_t(g.size()) - 1);
                const uint32_t v = pick(rng);
                if (v < n) touched[v] = touched[(v + n - 1) % n] = true; // its links in and out
                if (!recreate(h, o, g[v], &why)) fail("re-creating guest " + std::to_string(g[v].dom) + ": " + why);
                ++kills;
                // Back in the ring for the rest of the round: it takes
                // what its sender sends (its reports count, its links not).
                if (v < n && round_end - now_s() > 0.2) {
                    char cmd[128];
                    std::snprintf(cmd, sizeof cmd, "soak %u %.3f %s %.1f %.1f", phase, round_end - now_s(),
                                  g[(v + 1) % n].mac.c_str(), grace_s, s.rate);
                    in[v] = g[v].c.send(cmd);
                } else if (v < n) {
                    in[v] = false;
                }
                schedule_kill();
                continue;
            }
            bool flapped = false;
            for (uint32_t f = n; f < g.size() && !warmup; ++f) {
                std::string l;
                g[f].c.send("reopen");
                if (!g[f].c.line(l, 30000) || l != "connected " + g[f].mac)
                    fail("guest " + std::to_string(g[f].dom) + " reopen: " + l);
                ++g[f].reopens;
                ++reopens;
                flapped = true;
            }
            if (!flapped) ::usleep(uint32_t(std::clamp(std::min(next_kill, round_end) - now_s(), 0.001, 0.1) * 1e6));
        }
        // Reports: sent by i, received by i+1 from i.
        std::vector<uint64_t> sent(n, 0), recvd(n, 0);
        std::vector<bool> reported(n, false);
        for (uint32_t i = 0; i < n; ++i) {
            if (!in[i]) continue;
            std::string l;
            if (!g[i].c.line(l, int((s.round + grace_s + 30) * 1000)) || !jfield(l, "error").empty()) {
                fail("guest " + std::to_string(g[i].dom) + " did not report round " + std::to_string(r) + ": " + l);
                continue;
            }
            reported[i] = true;
            sent[i] = uint64_t(jnum(l, "sent"));
            recvd[i] = uint64_t(jnum(l, "received"));
            frames += recvd[i];
            bytes += uint64_t(jnum(l, "bytes"));
            foreign += uint64_t(jnum(l, "foreign"));
            if (uint64_t b = uint64_t(jnum(l, "bad"))) {
                corrupt += b;
                fail("guest " + std::to_string(g[i].dom) + ": " + std::to_string(b) + " corrupt frames");
            }
        }
        // The lossless path: i -> i+1, both connected and taking frames
        // through the whole round.
        for (uint32_t i = 0; i < n; ++i) {
            const uint32_t j = (i + 1) % n;
            if (touched[i] || !reported[i] || !reported[j]) continue;
            ++lossless_links;
            lossless_frames += sent[i];
            if (recvd[j] != sent[i]) {
                lost += sent[i] > recvd[j] ? sent[i] - recvd[j] : 0;
                fail("round " + std::to_string(r) + ": guest " + std::to_string(g[i].dom) + " sent " +
                     std::to_string(sent[i]) + ", guest " + std::to_string(g[j].dom) + " received " +
                     std::to_string(recvd[j]));
            }
        }
        ++rounds;
        const sample now = take_sample(h);
        if (warmup) warm = now;
        if (!have_quarter && now_s() - t0 >= s.duration / 4 + s.round) quarter = now, have_quarter = true;
        const netback::vif_stats c = all_counters(h.ctl, nullptr);
        seen_in = std::max(seen_in, balance_of(c).in);
        std::printf("[%6.0f s] round %3u%s: frames %" PRIu64 " (%.2f GB), kills %" PRIu64 " (+%" PRIu64
                    "), reopens %" PRIu64 ", lost on the lossless path %" PRIu64 " (+%" PRIu64
                    "), zc-netback rss %.1f MiB fds %u mapped %" PRId64 ", drops: %s\n",
                    now_s() - t0, r, warmup ? " (warm-up)" : "", frames, double(bytes) / 1e9, kills, kills - kills0,
                    reopens, lost, lost - lost0, mib(now.rss_kb), now.fds, now.mapped, drops_text(c).c_str());
        std::fflush(stdout);
    }

    // The load has stopped; every guest is connected again, as after the
    // warm-up.
    ::usleep(1000000);
    const sample end = take_sample(h);
    const uint64_t rss_limit = warm.rss_kb + std::max<uint64_t>(s.rss_slack_kb, uint64_t(double(warm.rss_kb) * s.rss_slack));
    if (end.rss_kb > rss_limit)
        fail("zc-netback's RSS grew: " + std::to_string(warm.rss_kb) + " KiB after the warm-up, " +
             std::to_string(end.rss_kb) + " KiB after the load (limit " + std::to_string(rss_limit) + ")");
    // Fewer is fine: a guest's handle eventfd is fetched again only when
    // zc-netback next notifies it (stack/hv/emu/client.hpp), so a netfront
    // that reopened and has not been notified yet has none.
    if (end.fds > warm.fds)
        fail("zc-netback's fds: " + std::to_string(warm.fds) + " after the warm-up, " + std::to_string(end.fds) +
             " after the load (new: " + new_fds(warm.fd_list, end.fd_list) + ")");
    if (end.mapped != warm.mapped)
        fail("zc-netback's mapped grant pages: " + std::to_string(warm.mapped) + " after the warm-up, " +
             std::to_string(end.mapped) + " after the load");

    // Nothing is sent any more: once the last waiting frames are delivered,
    // the counters of every vif that ever was (the live ones and
    // retired_stats()) must add up.
    uint32_t live = 0;
    netback::vif_stats tot;
    balance bal;
    const bool settled = wait_until(20, [&] {
        tot = all_counters(h.ctl, &live);
        bal = balance_of(tot);
        // The counters of a removed vif join retired_stats() once nothing
        // refers to it: until then the totals are short of what was seen.
        return live == g.size() && bal.in >= seen_in && bal.holds();
    });
    if (!settled)
        fail("counters do not add up: tx_packets + flood_extra = " + std::to_string(bal.in) + ", rx_packets " +
             std::to_string(bal.delivered) + " + drops " + std::to_string(bal.dropped) + " (" +
             std::to_string(live) + " vifs)");
    // Every guest goes: nothing stays mapped, and every counter moves to
    // retired_stats() without changing the totals.
    for (auto& x : g) x.c.stop();
    netback::vif_stats after;
    balance bal_after;
    const bool retired = wait_until(20, [&] {
        after = all_counters(h.ctl, &live);
        bal_after = balance_of(after);
        return live == 0 && bal_after.in == bal.in && bal_after.holds();
    });
    if (!retired)
        fail("after the guests went: tx_packets + flood_extra = " + std::to_string(bal_after.in) + " (was " +
             std::to_string(bal.in) + "), rx_packets " + std::to_string(bal_after.delivered) + " + drops " +
             std::to_string(bal_after.dropped) + " (" + std::to_string(live) + " vifs left)");
    const sample gone = take_sample(h);
    if (gone.mapped != 0) fail("zc-netback still maps " + std::to_string(gone.mapped) + " grant pages with no guest");

    std::printf("\nsoak summary (seed %u): %.0f s, %" PRIu64 " rounds, %u guests + %u flapping\n", seed, now_s() - t0,
                rounds, s.guests, s.flappers);
    std::printf("  frames received %" PRIu64 " (%.2f GB), corrupt %" PRIu64 ", flooded copies seen %" PRIu64 "\n",
                frames, double(bytes) / 1e9, corrupt, foreign);
    std::printf("  guest kills + re-creations %" PRIu64 ", netfront reopens %" PRIu64 "\n", kills, reopens);
    std::printf("  lossless path: %" PRIu64 " link-rounds, %" PRIu64 " frames sent, %" PRIu64 " lost\n",
                lossless_links, lossless_frames, lost);
    std::printf("  zc-netback: tx_packets %" PRIu64 " + flood_extra %" PRIu64 " = rx_packets %" PRIu64
                " + drops %" PRIu64 " (%s)\n",
                tot.tx_packets, tot.flood_extra, tot.rx_packets, bal.dropped, drops_text(tot).c_str());
    std::printf("  zc-netback rss: %.1f MiB after the warm-up, %.1f MiB at a quarter, %.1f MiB after the load "
                "(limit %.1f)\n",
                mib(warm.rss_kb), mib(have_quarter ? quarter.rss_kb : 0), mib(end.rss_kb), mib(rss_limit));
    std::printf("  zc-netback fds: %u -> %u; mapped grant pages: %" PRId64 " -> %" PRId64 ", %" PRId64
                " with no guest\n",
                warm.fds, end.fds, warm.mapped, end.mapped, gone.mapped);
    std::printf("soak: %s", ok ? "PASS\n" : "FAIL");
    if (!ok) std::printf(" (%" PRIu64 " failed checks)\n", nfail);
    if (!s.json.empty()) {
        if (FILE* f = std::fopen(s.json.c_str(), "w")) {
            std::fprintf(f,
                         "{\"pass\":%s,\"seed\":%u,\"seconds\":%.1f,\"rounds\":%" PRIu64 ",\"guests\":%u,"
                         "\"flappers\":%u,\"frames\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"kills\":%" PRIu64
                         ",\"reopens\":%" PRIu64 ",\"lossless_frames\":%" PRIu64 ",\"lost\":%" PRIu64
                         ",\"tx_packets\":%" PRIu64 ",\"flood_extra\":%" PRIu64 ",\"rx_packets\":%" PRIu64
                         ",\"drops\":%" PRIu64 ",\"rss_kb_warm\":%" PRIu64 ",\"rss_kb_end\":%" PRIu64
                         ",\"fds_warm\":%u,\"fds_end\":%u,\"mapped_warm\":%" PRId64 ",\"mapped_end\":%" PRId64 "}\n",
                         ok ? "true" : "false", seed, now_s() - t0, rounds, s.guests, s.flappers, frames, bytes, kills,
                         reopens, lossless_frames, lost, tot.tx_packets, tot.flood_extra, tot.rx_packets, bal.dropped,
                         warm.rss_kb, end.rss_kb, warm.fds, end.fds, warm.mapped, end.mapped);
            std::fclose(f);
        }
    }
    h.stop_dom0();
    return ok ? 0 : 1;
}

} // namespace zc::vmbench
