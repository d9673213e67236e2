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
    "usage: zc-stackd [run] --ip A.B.C.D [--netmask A.B.C.D] [--listen PATH] [--devid N]\n"
    "                 [--max-sockets N] [--csum full|offload] [--wait-vif SECONDS]\n"
    "                 [--max-sockets-per-app N] [--max-pool-pages-per-app N]\n"
    "                 [--setup-timeout MS] [--tx-headers private|headroom]\n"
    "       zc-stackd stats [--listen PATH] [--json]      counters of a running zc-stackd\n"
    "\n"
    "Owns this domain's netfront vif (device/vif/N) and an IPv4 host on it\n"
    "(answers ARP and ping) and serves zc sockets (zc.h) to applications that\n"
    "connect to PATH (default: $ZCNET_STACK_SOCK, else /run/zcnet/stackd.sock).\n"
    "--tx-headers private (default): headers in a slot of the service's own, payload\n"
    "from the application's pool (two slots); headroom: one slot, headers written in\n"
    "front of the payload in the application's buffer, where the application can\n"
    "rewrite them into any frame: for trusted applications only.\n"
    "Per application (process): --max-sockets-per-app (16) sockets, EMFILE beyond;\n"
    "--max-pool-pages-per-app (4096) pool pages, ENOMEM beyond. A connection that\n"
    "has not opened its socket within --setup-timeout (5000 ms) is dropped.\n"
    "Stops on SIGINT/SIGTERM. The hypervisor is chosen as everywhere in zcnet.\n";

int usage() {
    std::fputs(usage_text, stderr);
    return 2;
}

} // namespace

// zc-stackd stats: ask a running zc-stackd for its counters.
int stats_cmd(const std::string& path, bool json) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        std::fprintf(stderr, "zc-stackd stats: %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
    }
    zc::uapi::ctl_req rq{};
    rq.op = uint32_t(zc::uapi::op::stats);
    rq.version = zc::uapi::proto_version;
    struct {
        zc::uapi::ctl_rsp h;
        zc::stackd::counters c;
    } m{};
    pollfd p{fd, POLLIN, 0};
    if (::send(fd, &rq, sizeof rq, MSG_NOSIGNAL) != ssize_t(sizeof rq) || ::poll(&p, 1, 5000) != 1 ||
        ::recv(fd, &m, sizeof m, 0) != ssize_t(sizeof m) || m.h.rc != int32_t(sizeof m.c)) {
        std::fprintf(stderr, "zc-stackd stats: no answer\n");
        ::close(fd);
        return 1;
    }
    ::close(fd);
    const auto& c = m.c;
    const std::pair<const char*, uint64_t> f[] = {
        {"sockets_opened", c.sockets_opened}, {"sockets_closed", c.sockets_closed}, {"tx_zc", c.tx_zc},
        {"tx_bad_desc", c.tx_bad_desc},       {"tx_errors", c.tx_errors},           {"rx_frames", c.rx_frames},
        {"rx_udp", c.rx_udp},                 {"rx_no_socket", c.rx_no_socket},     {"rx_drops", c.rx_drops},
        {"fr_bad", c.fr_bad},                 {"arp_replies", c.arp_replies},       {"echo_replies", c.echo_replies},
        {"pings_sent", c.pings_sent},         {"pings_answered", c.pings_answered},
        {"setup_timeouts", c.setup_timeouts}, {"app_limits", c.app_limits},
    };
    if (json) std::printf("{");
    for (size_t i = 0; i < std::size(f); i++) {
        if (json) std::printf("%s\"%s\":%llu", i ? "," : "", f[i].first, (unsigned long long)f[i].second);
        else std::printf("%-16s %llu\n", f[i].first, (unsigned long long)f[i].second);
    }
    if (json) std::printf("}\n");
    return 0;
}

int main(int argc, char** argv) {
    zc::stackd::options o;
    int wait_vif_ms = 10000;
    if (const char* e = std::getenv("ZCNET_STACK_SOCK"); e && *e) o.listen = e;
    else o.listen = "/run/zcnet/stackd.sock";
    int first = 1;
    bool stats = false, json = false;
    if (argc > 1 && !std::strcmp(argv[1], "stats")) stats = true, first = 2;
    else if (argc > 1 && !std::strcmp(argv[1], "run")) first = 2;
    for (int i = first; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--json") {
            json = true;
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
        if (a == "--ip" || a == "--netmask") {
            if (inet_pton(AF_INET, v, &ia) != 1) return usage();
            (a == "--ip" ? o.ip : o.netmask) = ntohl(ia.s_addr);
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
        } else if (a == "--setup-timeout") {
            o.setup_timeout_ms = uint32_t(std::strtoul(v, nullptr, 10));
        } else if (a == "--wait-vif") {
            wait_vif_ms = std::atoi(v) * 1000;
        } else if (a == "--tx-headers") {
            if (std::strcmp(v, "private") && std::strcmp(v, "headroom")) return usage();
            o.private_headers = !std::strcmp(v, "private");
        } else if (a == "--csum") {
            o.csum_offload = std::strcmp(v, "full") != 0;
        } else {
            return usage();
        }
    }
    if (stats) return stats_cmd(o.listen, json);
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
