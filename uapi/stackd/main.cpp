// SPDX-License-Identifier: MIT
// zc-stackd: the stack service of a guest domain (see stackd.hpp).
#include <atomic>
#include <cerrno>
#include <iterator>
#include <utility>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "common/log.hpp"
#include "hv/hv.hpp"
#include "uapi/shm.hpp"
#include "stackd/stackd.hpp"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

const char* usage_text =
    "usage: zc-stackd [run] --ip A.B.C.D [--netmask A.B.C.D] [--gateway A.B.C.D]\n"
    "                 [--listen PATH] [--devid N]\n"
    "                 [--max-sockets N] [--csum full|offload] [--wait-vif SECONDS]\n"
    "                 [--max-sockets-per-app N] [--max-pool-pages-per-app N] [--max-pool-pages N]\n"
    "                 [--setup-timeout MS] [--tx-headers private|headroom] [--tx-events lazy|each]\n"
    "                 [--unres-qlen N] [--pool-export auto|grant|copy] [--zc-direct on|off]\n"
    "                 [--direct-quota N] [--direct-at-quota fallback|wait] [--direct-map-pages N]\n"
    "                 [--direct-map-idle MS] [--busy-poll-us N]\n"
    "       zc-stackd stats [--listen PATH] [--sockets] [--json | --prometheus]\n"
    "                 counters of a running zc-stackd; --sockets: per socket\n"
    "\n"
    "Owns this domain's netfront vif (device/vif/N) and an IPv4 host on it\n"
    "(answers ARP and ping) and serves zc sockets (zc.h) to applications that\n"
    "connect to PATH (default: $ZCNET_STACK_SOCK, else /run/zcnet/stackd.sock).\n"
    "--tx-headers private (default): headers in a slot of the service's own, payload\n"
    "from the application's pool (two slots); headroom: one slot, headers written in\n"
    "front of the payload in the application's buffer, where the application can\n"
    "rewrite them into any frame: for trusted applications only.\n"
    "Per application (process): --max-sockets-per-app (16) sockets, EMFILE beyond;\n"
    "--max-pool-pages-per-app (4096) pool pages, ENOMEM beyond. For the guest:\n"
    "--max-pool-pages (16384) granted pool pages of all sockets, ENOSPC beyond.\n"
    "A refused socket is logged with the limit and what to change. A connection that\n"
    "has not opened its socket within --setup-timeout (5000 ms) is dropped.\n"
    "--tx-events lazy (default): while every application with sends in flight waits\n"
    "for datagrams only (zc_recv_wait), the backend's TX responses are collected at\n"
    "the next wake-up instead of waking the service; each: a wake-up per response.\n"
    "--gateway: the default route; off-subnet datagrams go to its MAC (ARP for it);\n"
    "without it they complete with ENETUNREACH at once.\n"
    "Datagrams to a neighbour being resolved wait in its queue (--unres-qlen, 32; a\n"
    "socket's further ones to it wait in its ring) while other destinations go; with\n"
    "no ARP answer (3 requests, 1 s apart) they complete with EHOSTUNREACH.\n"
    "--pool-export: how sockets' send buffers reach the backend. grant: granted to it\n"
    "(zero copy; on Xen the guest kernel needs udmabuf and gntdev dma-buf); copy: each\n"
    "datagram copied into the vif's own TX pages (one copy more, no grant per socket);\n"
    "auto (default): grant where the kernel can, else copy (logged once, with why).\n"
    "--zc-direct on (default): where the backend offers the direct path (zc-netback's\n"
    "feature-zc-direct), a connected socket's datagrams to a zcnet guest on the same\n"
    "switch go as a descriptor of its pool, granted read-only to that guest, which\n"
    "copies the payload itself; at most --direct-quota (64) outstanding per destination,\n"
    "the ordinary path beyond (--direct-at-quota wait: the socket waits instead). Received ones: senders' pages stay mapped read-only,\n"
    "at most --direct-map-pages (1024), each until unused for --direct-map-idle (1000) ms.\n"
    "--busy-poll-us N (default 0: off): before each sleep look for work N us (at\n"
    "most 1000) first, only while a CPU is idle: fewer wake-ups per request/response.\n"
    "Stops on SIGINT/SIGTERM. The hypervisor is chosen as everywhere in zcnet.\n";

int usage() {
    std::fputs(usage_text, stderr);
    return 2;
}

} // namespace

// zc-stackd stats: ask a running zc-stackd for its counters (and sockets).
int stats_cmd(const std::string& path, bool sockets, bool json, bool prometheus) {
    auto c = zc::stackd::query_counters(path);
    if (!c) {
        std::fprintf(stderr, "zc-stackd stats: %s: %s\n", path.c_str(),
                     c.error() == -EPROTO ? "no answer (not a zc-stackd?)" : std::strerror(-c.error()));
        return 1;
    }
    std::vector<zc::stackd::socket_stat> socks;
    if (sockets || prometheus) {
        auto s = zc::stackd::query_sockets(path);
        if (!s) {
            std::fprintf(stderr, "zc-stackd stats --sockets: %s: %s\n", path.c_str(), std::strerror(-s.error()));
            return 1;
        }
        socks = std::move(*s);
    }
    using zc::stackd::counters;
    using zc::stackd::socket_counters;
    if (prometheus) {
        std::fputs(zc::stackd::prometheus_text(*c, socks).c_str(), stdout);
        return 0;
    }
    auto addr = [](const zc::stackd::socket_stat& s) {
        char b[32];
        const uint32_t a = ntohl(s.ip);
        std::snprintf(b, sizeof b, "%u.%u.%u.%u:%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255,
                      unsigned(ntohs(s.port)));
        return std::string(b);
    };
    if (json) {
        std::printf("{");
        for (size_t k = 0; k < counters::schema_size; k++)
            std::printf("%s\"%s\":%llu", k ? "," : "", counters::schema[k].name, (unsigned long long)c->field(k));
        if (sockets) {
            std::printf(",\"sockets\":[");
            for (size_t i = 0; i < socks.size(); i++) {
                const auto& s = socks[i];
                std::printf("%s{\"socket\":%u,\"pid\":%d,\"addr\":\"%s\",\"tx_bufs\":%u,\"rx_bufs\":%u", i ? "," : "",
                            s.slot, s.pid, addr(s).c_str(), s.tx_bufs, s.rx_bufs);
                for (size_t k = 0; k < socket_counters::schema_size; k++)
                    std::printf(",\"%s\":%llu", socket_counters::schema[k].name, (unsigned long long)s.c.field(k));
                std::printf("}");
            }
            std::printf("]");
        }
        std::printf("}\n");
        return 0;
    }
    if (!sockets) {
        for (size_t k = 0; k < counters::schema_size; k++)
            std::printf("%-16s %llu\n", counters::schema[k].name, (unsigned long long)c->field(k));
        return 0;
    }
    std::printf("%-6s %-8s %-21s %10s %12s %10s %12s %8s\n", "socket", "pid", "bound", "tx_dgrams", "tx_bytes",
                "rx_dgrams", "rx_bytes", "drops");
    for (const auto& s : socks) {
        uint64_t drops = 0;
        for (size_t k = 0; k < socket_counters::schema_size; k++)
            if (socket_counters::schema[k].drop) drops += s.c.field(k);
        std::printf("%-6u %-8d %-21s %10llu %12llu %10llu %12llu %8llu\n", s.slot, s.pid, addr(s).c_str(),
                    (unsigned long long)s.c.tx_datagrams, (unsigned long long)s.c.tx_bytes,
                    (unsigned long long)s.c.rx_datagrams, (unsigned long long)s.c.rx_bytes,
                    (unsigned long long)drops);
    }
    return 0;
}

int main(int argc, char** argv) {
    zc::stackd::options o;
    int wait_vif_ms = 10000;
    if (const char* e = std::getenv("ZCNET_STACK_SOCK"); e && *e) o.listen = e;
    else o.listen = "/run/zcnet/stackd.sock";
    int first = 1;
    bool stats = false, json = false, sockets = false, prometheus = false;
    if (argc > 1 && !std::strcmp(argv[1], "stats")) stats = true, first = 2;
    else if (argc > 1 && !std::strcmp(argv[1], "run")) first = 2;
    for (int i = first; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--json" || a == "--sockets" || a == "--prometheus") {
            (a == "--json" ? json : a == "--sockets" ? sockets : prometheus) = true;
            continue;
        }
        auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        if (a == "--help" || a == "-h") {
            std::fputs(usage_text, stdout);
            return 0;
        }
        const char* v = val();
        if (!v) return usage();
        in_addr ia{};
        if (a == "--ip" || a == "--netmask" || a == "--gateway") {
            if (inet_pton(AF_INET, v, &ia) != 1) return usage();
            (a == "--ip" ? o.ip : a == "--netmask" ? o.netmask : o.gateway) = ntohl(ia.s_addr);
        } else if (a == "--listen") {
            o.listen = v;
        } else if (a == "--devid") {
            o.nf.devid = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--max-sockets") {
            o.max_sockets = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--max-sockets-per-app") {
            o.max_sockets_per_app = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--max-pool-pages-per-app") {
            o.max_pool_pages_per_app = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--max-pool-pages") {
            o.max_pool_pages = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--unres-qlen") {
            o.unres_qlen = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--setup-timeout") {
            o.setup_timeout_ms = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--wait-vif") {
            wait_vif_ms = std::atoi(v) * 1000;
        } else if (a == "--tx-headers") {
            if (std::strcmp(v, "private") && std::strcmp(v, "headroom")) return usage();
            o.private_headers = !std::strcmp(v, "private");
        } else if (a == "--tx-events") {
            if (std::strcmp(v, "lazy") && std::strcmp(v, "each")) return usage();
            o.lazy_tx_events = !std::strcmp(v, "lazy");
        } else if (a == "--pool-export") {
            using zc::stackd::pool_export;
            if (!std::strcmp(v, "auto")) o.pool_mode = pool_export::auto_;
            else if (!std::strcmp(v, "grant")) o.pool_mode = pool_export::grant;
            else if (!std::strcmp(v, "copy")) o.pool_mode = pool_export::copy;
            else return usage();
        } else if (a == "--zc-direct") {
            if (std::strcmp(v, "on") && std::strcmp(v, "off")) return usage();
            o.zc_direct = !std::strcmp(v, "on");
        } else if (a == "--direct-quota") {
            o.direct_quota = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--direct-at-quota") {
            if (std::strcmp(v, "fallback") && std::strcmp(v, "wait")) return usage();
            o.direct_wait = !std::strcmp(v, "wait");
        } else if (a == "--direct-map-pages") {
            o.direct_map_pages = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--direct-map-idle") {
            o.direct_map_idle_ms = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--busy-poll-us") {
            o.busy_poll_us = uint32_t(std::strtoul(v, nullptr, 10));
            if (o.busy_poll_us > 1000) return usage();
        } else if (a == "--csum") {
            o.csum_offload = std::strcmp(v, "full") != 0;
        } else {
            return usage();
        }
    }
    if (stats && json && prometheus) return usage();
    if (stats) return stats_cmd(o.listen, sockets, json, prometheus);
    if (!o.ip) return usage();
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);
    std::string why;
    auto port = zc::hv::open(&why);
    if (!port) {
        std::fprintf(stderr, "zc-stackd: hypervisor: %s\n", why.c_str());
        return 1;
    }
    // The toolstack may add our vif after we start (xl network-attach): wait
    // for the frontend directory rather than fail.
    auto svc = zc::stackd::service::create(**port, o, &why);
    for (int i = 0; !svc && svc.error() == -ENOENT && i < wait_vif_ms / 100 && !g_stop; i++) {
        ::usleep(100000);
        svc = zc::stackd::service::create(**port, o, &why);
    }
    if (!svc) {
        std::fprintf(stderr, "zc-stackd: %s (%s)\n", why.c_str(), std::strerror(-svc.error()));
        return 1;
    }
    std::fprintf(stderr, "zc-stackd: d%u serving %s\n", unsigned((*port)->self()), o.listen.c_str());
    int rc = (*svc)->run(g_stop);
    if (rc < 0) std::fprintf(stderr, "zc-stackd: link: %s\n", std::strerror(-rc));
    return rc < 0 ? 1 : 0;
}
