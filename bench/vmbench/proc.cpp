// SPDX-License-Identifier: MIT
// zc-vmbench's child processes and zc-netback's counters (proc.hpp).
#include "proc.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace zc::vmbench {

bool child::send(const std::string& s) {
    std::string l = s + "\n";
    return ::write(in, l.data(), l.size()) == ssize_t(l.size());
}

bool child::line(std::string& l, int timeout_ms) {
    auto deadline = clk::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        auto nl = buf.find('\n');
        if (nl != std::string::npos) {
            l = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clk::now()).count();
        if (left <= 0) return false;
        pollfd p{out, POLLIN, 0};
        if (::poll(&p, 1, int(left)) <= 0) return false;
        char tmp[4096];
        ssize_t n = ::read(out, tmp, sizeof tmp);
        if (n <= 0) return false;
        buf.append(tmp, size_t(n));
    }
}

void child::stop() {
    if (pid > 0) send("quit");
    end();
}

void child::terminate() {
    if (pid > 0) ::kill(pid, SIGTERM);
    end();
}

void child::end() {
    if (pid > 0) {
        bool reaped = false;
        for (int i = 0; i < 300 && !reaped; i++) {
            reaped = ::waitpid(pid, nullptr, WNOHANG) == pid;
            if (!reaped) ::usleep(10000);
        }
        if (!reaped) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        pid = -1;
    }
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
    in = out = -1;
}

child spawn(const std::vector<std::string>& argv, const env_list& env, bool pipes, const std::string& log) {
    child c;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1};
    if (pipes && (::pipe2(pin, O_CLOEXEC) < 0 || ::pipe2(pout, O_CLOEXEC) < 0)) return c;
    const pid_t parent = ::getpid();
    c.pid = ::fork();
    if (c.pid == 0) {
        // Never outlive the runner (a signal that ends it skips our
        // destructors): SIGTERM, which zc-netback handles by stopping
        // cleanly, detaching its XDP program.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) std::_Exit(1);
        if (pipes) {
            ::dup2(pin[0], 0);
            ::dup2(pout[1], 1);
        }
        if (!log.empty()) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) ::dup2(fd, 2);
        }
        for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> a;
        for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        ::execv(a[0], a.data());
        std::fprintf(stderr, "zc-vmbench: exec %s: %s\n", a[0], std::strerror(errno));
        std::_Exit(127);
    }
    if (pipes) {
        ::close(pin[0]);
        ::close(pout[1]);
        c.in = pin[1];
        c.out = pout[0];
    }
    return c;
}

std::string log_tail(const std::string& path, size_t max) {
    std::string t;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) t.append(buf, n);
        std::fclose(f);
    }
    if (t.size() > max) t.erase(0, t.size() - max);
    while (!t.empty() && t.back() == '\n') t.pop_back();
    return t.empty() ? "" : " (" + path.substr(path.rfind('/') + 1) + ": " + t + ")";
}

double cpu_of(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
    FILE* f = std::fopen(path, "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')');
    if (!p) return 0;
    unsigned long ut = 0, st = 0;
    // Fields after ")": state(3) ... utime(14) stime(15).
    if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
    return double(ut + st) / double(::sysconf(_SC_CLK_TCK));
}

namespace {
int g_janitor_fd = -1; // the runner's end of the janitor's pipe

void janitor_say(char op, const std::string& dir) {
    if (g_janitor_fd < 0) return;
    const std::string l = op + dir + "\n";
    (void)!::write(g_janitor_fd, l.data(), l.size()); // under PIPE_BUF: atomic
}
} // namespace

void start_janitor() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) return;
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        return;
    }
    if (pid > 0) {
        ::close(p[0]);
        g_janitor_fd = p[1];
        return;
    }
    ::close(p[1]);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_IGN);
    // Nobody waits on the runner's output for us.
    if (int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0)
        for (int fd : {0, 1, 2}) ::dup2(null, fd);
    std::set<std::string> dirs;
    std::string buf;
    char tmp[512];
    for (;;) {
        const ssize_t n = ::read(p[0], tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; // the runner is gone
        buf.append(tmp, size_t(n));
        for (size_t nl; (nl = buf.find('\n')) != std::string::npos; buf.erase(0, nl + 1)) {
            const std::string dir = buf.substr(1, nl - 1);
            if (buf[0] == '+') dirs.insert(dir);
            else dirs.erase(dir);
        }
    }
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    std::_Exit(0);
}

void janitor_add(const std::string& dir) { janitor_say('+', dir); }
void janitor_remove(const std::string& dir) { janitor_say('-', dir); }

std::string netback_stats(const std::string& ctl) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ctl.c_str());
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
        (void)!::write(fd, "stats\n", 6);
        char buf[8192];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    }
    ::close(fd);
    return out;
}

std::string jfield(const std::string& json, const std::string& key) {
    std::string k = "\"" + key + "\":";
    auto p = json.find(k);
    if (p == std::string::npos) return "";
    p += k.size();
    auto e = json.find_first_of(",}", p);
    return json.substr(p, e - p);
}
double jnum(const std::string& json, const std::string& key) { return std::atof(jfield(json, key).c_str()); }

netback::vif_stats netback_totals(const std::string& ctl) {
    const std::string json = netback_stats(ctl);
    netback::vif_stats total;
    const size_t end = json.find("],\"devices\"");
    for (size_t p = json.find("{\"frontend\":"); p < end; p = json.find("{\"frontend\":", p + 1)) {
        const std::string obj = json.substr(p, json.find("]}", p) - p);
        netback::vif_stats v;
#define ZC_VMBENCH_PARSE_(name, unit, drop, help) v.name = std::strtoull(jfield(obj, #name).c_str(), nullptr, 10);
        ZC_NETBACK_VIF_COUNTERS(ZC_VMBENCH_PARSE_)
#undef ZC_VMBENCH_PARSE_
        total += v;
    }
    return total;
}

} // namespace zc::vmbench
