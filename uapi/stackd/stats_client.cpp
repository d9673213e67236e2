// SPDX-License-Identifier: MIT
// The client side of `zc-stackd stats` (stackd.hpp): the STATS and
// SOCKET_STATS requests of the control protocol (uapi/src/shm.hpp), and the
// Prometheus text exposition of their answers.
#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/prometheus.hpp"
#include "stackd/stackd.hpp"
#include "uapi/shm.hpp"

namespace zc::stackd {
namespace {

// One request on a fresh connection; the answer's bytes (one message).
result<std::vector<uint8_t>> ask(const std::string& path, uapi::op op, size_t max_answer) noexcept {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return err(-ENAMETOOLONG);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return err(-errno);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        int e = errno;
        ::close(fd);
        return err(-e);
    }
    uapi::ctl_req rq{};
    rq.op = uint32_t(op);
    rq.version = uapi::proto_version;
    std::vector<uint8_t> m(max_answer);
    pollfd p{fd, POLLIN, 0};
    ssize_t n = -1;
    if (::send(fd, &rq, sizeof rq, MSG_NOSIGNAL) == ssize_t(sizeof rq) && ::poll(&p, 1, 5000) == 1)
        n = ::recv(fd, m.data(), m.size(), 0);
    ::close(fd);
    if (n < ssize_t(sizeof(uapi::ctl_rsp))) return err(-EPROTO);
    m.resize(size_t(n));
    return m;
}

} // namespace

result<counters> query_counters(const std::string& path) noexcept {
    auto m = ask(path, uapi::op::stats, sizeof(uapi::ctl_rsp) + sizeof(counters));
    if (!m) return err(m.error());
    uapi::ctl_rsp h;
    std::memcpy(&h, m->data(), sizeof h);
    if (m->size() != sizeof h + sizeof(counters) || h.rc != int32_t(sizeof(counters))) return err(-EPROTO);
    counters c;
    std::memcpy(&c, m->data() + sizeof h, sizeof c);
    return c;
}

result<std::vector<socket_stat>> query_sockets(const std::string& path) noexcept {
    // Room for every connection the service can have (options::max_sockets
    // is at most a few hundred) and then some.
    auto m = ask(path, uapi::op::socket_stats, sizeof(uapi::ctl_rsp) + 4096 * sizeof(socket_stat));
    if (!m) return err(m.error());
    uapi::ctl_rsp h;
    std::memcpy(&h, m->data(), sizeof h);
    if (h.rc < 0) return err(h.rc);
    if (m->size() != sizeof h + size_t(h.rc) * sizeof(socket_stat)) return err(-EPROTO);
    std::vector<socket_stat> out(size_t(h.rc));
    if (h.rc) std::memcpy(out.data(), m->data() + sizeof h, out.size() * sizeof(socket_stat));
    return out;
}

std::string prometheus_text(const counters& c, const std::vector<socket_stat>& socks) {
    std::string out;
    for (size_t k = 0; k < counters::schema_size; k++) {
        std::string name = std::string("zcnet_stackd_") + counters::schema[k].name + "_total";
        prom::counter_family(out, name, counters::schema[k]);
        prom::sample(out, name, "", c.field(k));
    }
    prom::family(out, "zcnet_stackd_sockets", "gauge", "open zc sockets");
    prom::sample(out, "zcnet_stackd_sockets", "", socks.size());
    auto labels = [](const socket_stat& s) {
        char ip[32];
        const uint32_t a = ntohl(s.ip);
        std::snprintf(ip, sizeof ip, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
        return "socket=\"" + std::to_string(s.slot) + "\",pid=\"" + std::to_string(s.pid) + "\",addr=\"" +
               prom::label_value(ip) + ":" + std::to_string(ntohs(s.port)) + "\"";
    };
    for (size_t k = 0; k < socket_counters::schema_size; k++) {
        std::string name = std::string("zcnet_stackd_socket_") + socket_counters::schema[k].name + "_total";
        prom::counter_family(out, name, socket_counters::schema[k]);
        for (auto& s : socks) prom::sample(out, name, labels(s), s.c.field(k));
    }
    return out;
}

} // namespace zc::stackd
