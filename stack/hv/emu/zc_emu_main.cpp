// SPDX-License-Identifier: MIT
// zc-emu: start and stop an emulated Xen host, and run programs as its domains.
//
//   zc-emu up [--dir DIR] [--foreground]
//   zc-emu status [--dir DIR]
//   zc-emu run --dom N [--mem SIZE] [--dir DIR] -- PROGRAM [ARGS...]
//   zc-emu down [--dir DIR]
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "hv/emu/broker.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/layout.hpp"

using namespace zc::hv::emu;

namespace {

const char* usage_text =
    "usage: zc-emu COMMAND [OPTIONS]\n"
    "\n"
    "An emulated Xen host: a broker process plays the hypervisor (domains,\n"
    "grant tables, event channels, xenstore); each domain is a process.\n"
    "\n"
    "commands:\n"
    "  up [--foreground]           start the emulated host (daemonizes unless --foreground)\n"
    "  status                      list live domains\n"
    "  run --dom N [--mem SIZE] [--attach] -- PROGRAM [ARGS...]\n"
    "                              run PROGRAM as domain N (0..1023); the domain lives\n"
    "                              until PROGRAM exits. SIZE: guest memory, e.g. 64M (default).\n"
    "                              --attach: N is running already; PROGRAM is another of its\n"
    "                              processes (e.g. a tool in dom0 beside zc-netback)\n"
    "  down                        stop the emulated host; every domain is destroyed\n"
    "\n"
    "options:\n"
    "  --dir DIR                   runtime directory (default $ZCNET_EMU_DIR or /run/zcnet-emu)\n"
    "  -h, --help                  this text\n"
    "\n"
    "PROGRAM gets ZCNET_HV=emu, ZCNET_EMU_SOCK, ZCNET_DOMID, ZCNET_EMU_TOKEN (its\n"
    "domain's secret, never the host's admin token) and XENSTORED_PATH in its\n"
    "environment, so zcnet programs and the real libxenstore find the emulated host.\n"
    "status, run and down authenticate with DIR/admin.token (or $ZCNET_EMU_TOKEN).\n";

int usage(int rc) {
    std::fputs(usage_text, rc ? stderr : stdout);
    return rc;
}

std::string default_dir() {
    const char* e = std::getenv("ZCNET_EMU_DIR");
    return e && *e ? e : "/run/zcnet-emu";
}

volatile sig_atomic_t g_child = 0;
broker* g_broker = nullptr;

void forward_signal(int sig) {
    if (g_child > 0) ::kill(g_child, sig);
}
void stop_broker(int) {
    if (g_broker) g_broker->request_stop();
}

int cmd_up(const std::string& dir, bool foreground) {
    // Daemonize before the broker exists: it starts a xenstored thread, and
    // threads do not survive fork(). The child reports success or the error
    // through a pipe so that `up` fails loudly.
    int report[2] = {-1, -1};
    if (!foreground) {
        if (::pipe2(report, O_CLOEXEC) < 0) {
            std::perror("zc-emu up: pipe");
            return 1;
        }
        std::fflush(nullptr);
        pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("zc-emu up: fork");
            return 1;
        }
        if (pid > 0) {
            ::close(report[1]);
            char msg[512];
            ssize_t n = ::read(report[0], msg, sizeof msg - 1);
            msg[n > 0 ? n : 0] = 0;
            if (n <= 0 || std::strncmp(msg, "ok", 2) != 0) {
                std::fprintf(stderr, "zc-emu up: %s\n", n > 0 ? msg : "broker exited during start-up");
                return 1;
            }
            std::printf("zc-emu: emulated host up: %s/broker.sock (broker pid %d, log %s/broker.log)\n",
                        dir.c_str(), int(pid), dir.c_str());
            return 0;
        }
        ::close(report[0]);
        ::setsid();
    }
    std::string why;
    auto b = broker::create({dir, false}, &why);
    if (!b) {
        if (report[1] >= 0) (void)!::write(report[1], why.data(), why.size());
        else std::fprintf(stderr, "zc-emu up: %s\n", why.c_str());
        return 1;
    }
    if (report[1] >= 0) {
        std::string pidfile = dir + "/broker.pid";
        if (FILE* f = std::fopen(pidfile.c_str(), "w")) {
            std::fprintf(f, "%d\n", int(::getpid()));
            std::fclose(f);
        }
        std::string log = dir + "/broker.log";
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        if (nul >= 0) ::dup2(nul, 0);
        (void)!::write(report[1], "ok", 2);
        ::close(report[1]);
    } else {
        std::printf("zc-emu: emulated host up: %s (foreground; Ctrl-C stops it)\n", (*b)->socket_path().c_str());
        std::fflush(stdout);
    }
    g_broker = b->get();
    std::signal(SIGTERM, stop_broker);
    std::signal(SIGINT, stop_broker);
    std::signal(SIGPIPE, SIG_IGN);
    int rc = (*b)->run();
    (*b)->stop();
    return rc < 0 ? 1 : 0;
}

int cmd_status(const std::string& dir) {
    std::string why;
    auto c = client::connect_admin(dir + "/broker.sock", &why);
    if (!c) {
        std::fprintf(stderr, "zc-emu status: %s\n", why.c_str());
        return 1;
    }
    auto ids = (*c)->list_domains();
    if (!ids) {
        std::fprintf(stderr, "zc-emu status: %s\n", std::strerror(-ids.error()));
        return 1;
    }
    std::printf("emulated host at %s: %zu domain(s)\n", dir.c_str(), ids->size());
    for (auto d : *ids) std::printf("  dom%u\n", unsigned(d));
    return 0;
}

int cmd_down(const std::string& dir) {
    std::string sock = dir + "/broker.sock";
    std::string why;
    auto c = client::connect_admin(sock, &why);
    if (!c) {
        std::fprintf(stderr, "zc-emu down: %s\n", why.c_str());
        return 1;
    }
    int rc = (*c)->shutdown_broker();
    if (rc < 0) {
        std::fprintf(stderr, "zc-emu down: %s\n", std::strerror(-rc));
        return 1;
    }
    // Wait (bounded) for the socket to disappear so that a following `up` works.
    for (int i = 0; i < 100 && ::access(sock.c_str(), F_OK) == 0; i++) ::usleep(50000);
    std::printf("zc-emu: emulated host at %s stopped\n", dir.c_str());
    return 0;
}

bool parse_size(const char* s, uint64_t& out) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (errno || end == s) return false;
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') mul = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') mul = 1ull << 30, end++;
    if (*end) return false;
    out = v * mul;
    return true;
}

// The toolstack's secret (broker.hpp): DIR/admin.token, else
// $ZCNET_EMU_TOKEN (which, in a domain's program, is only its domain's token:
// enough for --attach to that domain).
std::string admin_token(const std::string& dir) {
    std::string t;
    if (FILE* f = std::fopen((dir + "/admin.token").c_str(), "re")) {
        char buf[128];
        size_t n = std::fread(buf, 1, sizeof buf, f);
        std::fclose(f);
        t.assign(buf, n);
    }
    if (t.empty())
        if (const char* e = std::getenv("ZCNET_EMU_TOKEN"); e && *e) t = e;
    return t;
}

int cmd_run(const std::string& dir, long dom, uint64_t mem, bool attach, char** argv) {
    connect_options o;
    o.sock = dir + "/broker.sock";
    o.token = admin_token(dir);
    o.dom = zc::hv::domid_t(dom);
    o.mem_pages = uint32_t(mem / 4096);
    o.attach = attach;
    std::string why;
    auto c = client::connect(o, &why);
    if (!c) {
        std::fprintf(stderr, "zc-emu run: %s\n", why.c_str());
        return 1;
    }
    ::setenv("ZCNET_HV", "emu", 1);
    ::setenv("ZCNET_EMU_SOCK", o.sock.c_str(), 1);
    ::setenv("ZCNET_DOMID", std::to_string(dom).c_str(), 1);
    ::setenv("ZCNET_EMU_ATTACH", "1", 1);
    // The program attaches with its domain's token only.
    ::setenv("ZCNET_EMU_TOKEN", (*c)->domain_token().c_str(), 1);
    ::setenv("XENSTORED_PATH", (*c)->xenstore_path().c_str(), 1);
    pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("zc-emu run: fork");
        return 1;
    }
    if (pid == 0) {
        ::execvp(argv[0], argv);
        std::fprintf(stderr, "zc-emu run: %s: %s\n", argv[0], std::strerror(errno));
        std::_Exit(127);
    }
    g_child = pid;
    std::signal(SIGINT, forward_signal);
    std::signal(SIGTERM, forward_signal);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    // Our connection closes on return: with the program gone, that was the
    // domain's last process and the broker destroys it.
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage(2);
    std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") return usage(0);
    std::string dir = default_dir();
    bool foreground = false;
    bool attach = false;
    long dom = -1;
    uint64_t mem = uint64_t(default_mem_pages) * 4096;
    int i = 2;
    for (; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--") {
            i++;
            break;
        } else if (a == "--dir" && i + 1 < argc) {
            dir = argv[++i];
        } else if (a == "--attach") {
            attach = true;
        } else if (a == "--foreground") {
            foreground = true;
        } else if (a == "--dom" && i + 1 < argc) {
            char* end = nullptr;
            dom = std::strtol(argv[++i], &end, 10);
            if (*end || dom < 0 || dom >= long(max_domains)) {
                std::fprintf(stderr, "zc-emu: --dom takes a domain id 0..%u, not '%s'\n", max_domains - 1, argv[i]);
                return 2;
            }
        } else if (a == "--mem" && i + 1 < argc) {
            if (!parse_size(argv[++i], mem) || mem < 4096 || mem > (16ull << 30)) {
                std::fprintf(stderr, "zc-emu: --mem takes a size from 4K to 16G (e.g. 64M), not '%s'\n", argv[i]);
                return 2;
            }
        } else if (a == "-h" || a == "--help") {
            return usage(0);
        } else if (cmd == "run" && a[0] != '-') {
            break;
        } else {
            std::fprintf(stderr, "zc-emu: unknown option '%s'\n", a.c_str());
            return usage(2);
        }
    }
    if (cmd == "up") return cmd_up(dir, foreground);
    if (cmd == "down") return cmd_down(dir);
    if (cmd == "status") return cmd_status(dir);
    if (cmd == "run") {
        if (dom < 0) {
            std::fprintf(stderr, "zc-emu run: --dom N is required\n");
            return 2;
        }
        if (i >= argc) {
            std::fprintf(stderr, "zc-emu run: no program given (zc-emu run --dom N -- PROGRAM ...)\n");
            return 2;
        }
        return cmd_run(dir, dom, mem, attach, argv + i);
    }
    std::fprintf(stderr, "zc-emu: unknown command '%s'\n", cmd.c_str());
    return usage(2);
}
