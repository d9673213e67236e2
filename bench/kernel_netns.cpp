// SPDX-License-Identifier: MIT
// The kernel path's namespace pairs (kernel_path_impl.hpp): iproute2, spawned
// and never through a shell; the registry of namespaces and processes that a
// SIGINT/SIGTERM/SIGHUP removes and kills before the signal goes on.
#include "bench/kernel_path_impl.hpp"

#include <dirent.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "common/log.hpp"

extern char** environ;

namespace zc::bench {
namespace detail {
namespace {

// ---------------------------------------------------------------------------
// Signal-time cleanup registry. Plain arrays, written before the resource
// exists and cleared after it is gone, so a handler sees a superset.

constexpr int max_slots = 4;
char g_ns_paths[max_slots][96];
volatile sig_atomic_t g_ns_used[max_slots];
volatile pid_t g_pids[max_slots];
constexpr int g_sigs[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_old_actions[std::size(g_sigs)];
std::atomic<unsigned> g_counter{0};

void on_signal(int sig) {
    int saved_errno = errno; // a chained handler may return into code reading errno
    kernel_path_emergency_cleanup();
    // Hand the signal on to whoever had it before us (default: terminate).
    for (size_t i = 0; i < std::size(g_sigs); ++i)
        if (g_sigs[i] == sig) sigaction(sig, &g_old_actions[i], nullptr);
    raise(sig);
    errno = saved_errno;
}

void install_handlers() noexcept {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(g_sigs); ++i) {
        sigaction(g_sigs[i], nullptr, &g_old_actions[i]);
        // An ignored signal (e.g. SIGINT of a background job) does not stop
        // the process, so it must not stop the measurement either.
        if (g_old_actions[i].sa_handler != SIG_IGN) sigaction(g_sigs[i], &sa, nullptr);
    }
}

void restore_handlers() noexcept {
    for (size_t i = 0; i < std::size(g_sigs); ++i) sigaction(g_sigs[i], &g_old_actions[i], nullptr);
}

std::string join(const std::vector<std::string>& v) {
    std::string s = "ip";
    for (auto& a : v) s += " " + a;
    return s;
}

} // namespace

std::mutex g_run_mutex;

int register_ns(const std::string& path) noexcept {
    for (int i = 0; i < max_slots; ++i) {
        if (!g_ns_used[i]) {
            snprintf(g_ns_paths[i], sizeof g_ns_paths[i], "%s", path.c_str());
            g_ns_used[i] = 1;
            return i;
        }
    }
    return -1;
}

void register_pid(pid_t p) noexcept {
    for (auto& slot : g_pids) {
        if (slot == 0) {
            slot = p;
            return;
        }
    }
}

void unregister_pid(pid_t p) noexcept {
    for (auto& slot : g_pids)
        if (slot == p) slot = 0;
}

void default_signals() noexcept {
    for (int s : g_sigs) signal(s, SIG_DFL);
}

// ---------------------------------------------------------------------------
// iproute2

const char* ip_binary() noexcept {
    // Prefer an absolute path: /usr/sbin is not on every user's PATH.
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
        if (access(p, X_OK) == 0) return p;
    return "ip";
}

int run_ip(const std::vector<std::string>& args, std::string* out) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    std::vector<char*> argv;
    const char* bin = ip_binary();
    argv.push_back(const_cast<char*>(bin));
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, bin, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    // A signal mid-setup must not leave `ip netns add` running behind us.
    if (rc == 0) register_pid(pid);
    std::string text;
    if (rc == 0) {
        char buf[512];
        for (;;) {
            ssize_t n = read(pfd[0], buf, sizeof buf);
            if (n > 0) text.append(buf, size_t(n));
            else if (n < 0 && errno == EINTR) continue;
            else break;
        }
    }
    close(pfd[0]);
    if (rc != 0) {
        if (out) *out = std::string("cannot run ") + bin + ": " + strerror(rc);
        return -rc;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    unregister_pid(pid);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (out) *out = text;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int netns_pair::setup(std::string* why, const netns_config& c) {
    kernel_path_remove_stale();
    unsigned n = g_counter.fetch_add(1);
    _subnet = n % 250;
    std::string base = kernel_netns_prefix() + std::to_string(n);
    _names[0] = base + "-a";
    _names[1] = base + "-b";
    install_handlers();
    _handlers = true;
    for (int i = 0; i < 2; ++i) {
        // Registered before it exists: a signal mid-creation still cleans up.
        _slots[i] = register_ns("/run/netns/" + _names[i]);
        std::string out;
        int rc = run_ip({"netns", "add", _names[i]}, &out);
        if (rc != 0) {
            *why = "ip netns add " + _names[i] + " failed: " + out;
            return rc < 0 ? rc : -ENOTSUP;
        }
        _created[i] = true;
    }
    const std::string a = _names[0], b = _names[1], v = veth_name, mtu = std::to_string(c.mtu);
    const std::string prefix = c.near_addr ? "/30" : "/24";
    std::vector<std::vector<std::string>> cmds = {
        // Created inside a, peer moved straight into b: nothing ever
        // appears in the caller's namespace.
        {"-n", a, "link", "add", v, "type", "veth", "peer", "name", v, "netns", b},
        {"-n", a, "link", "set", v, "mtu", mtu},
        {"-n", b, "link", "set", v, "mtu", mtu},
        {"-n", b, "addr", "add", addr(2) + prefix, "dev", v},
        {"-n", a, "link", "set", "lo", "up"},
        {"-n", b, "link", "set", "lo", "up"},
    };
    if (c.near_addr) cmds.push_back({"-n", a, "addr", "add", addr(1) + prefix, "dev", v});
    if (!c.far_mac.empty()) cmds.push_back({"-n", b, "link", "set", v, "address", c.far_mac});
    if (!c.near_addr) {
        // No IPv6 link-local addresses: the kernel's DAD, MLD and router
        // solicitations would otherwise reach the uplink as multicast.
        cmds.push_back({"-n", a, "link", "set", v, "addrgenmode", "none"});
        cmds.push_back({"-n", b, "link", "set", v, "addrgenmode", "none"});
    }
    cmds.push_back({"-n", a, "link", "set", v, "up"});
    cmds.push_back({"-n", b, "link", "set", v, "up"});
    for (auto& c : cmds) {
        std::string out;
        if (int rc = run_ip(c, &out); rc != 0) {
            *why = join(c) + " failed: " + out;
            return -EIO;
        }
    }
    for (int i = 0; i < 2; ++i) {
        _fds[i] = open(("/run/netns/" + _names[i]).c_str(), O_RDONLY | O_CLOEXEC);
        if (_fds[i] < 0) {
            int e = errno;
            *why = "open /run/netns/" + _names[i] + ": " + strerror(e);
            return -e;
        }
    }
    ZC_LOG(debug, tag, "namespaces %s, %s up (10.213.%u.0%s, mtu %u)", a.c_str(), b.c_str(), _subnet,
           prefix.c_str(), c.mtu);
    return 0;
}
void netns_pair::teardown() noexcept {
    for (int i = 0; i < 2; ++i) {
        if (_fds[i] >= 0) close(_fds[i]);
        _fds[i] = -1;
        if (_created[i]) {
            // Deleting either namespace destroys the veth pair with it.
            std::string out;
            int rc = run_ip({"netns", "del", _names[i]}, &out);
            struct stat st;
            if (rc != 0 && stat(("/run/netns/" + _names[i]).c_str(), &st) == 0)
                ZC_LOG(warn, tag, "ip netns del %s: %s", _names[i].c_str(), out.c_str());
            _created[i] = false;
        }
        if (_slots[i] >= 0) g_ns_used[_slots[i]] = 0;
        _slots[i] = -1;
    }
    if (_handlers) restore_handlers();
    _handlers = false;
}

int precheck(std::string* why) {
    if (geteuid() != 0) {
        *why = "kernel path needs root (network namespaces)";
        return -EPERM;
    }
    std::string out;
    int rc = run_ip({"-V"}, &out);
    if (rc != 0) {
        *why = "iproute2 `ip` unavailable: " + out;
        return -ENOTSUP;
    }
    return 0;
}

} // namespace detail

using namespace detail;

std::string kernel_netns_prefix() { return "zcb-" + std::to_string(getpid()) + "-"; }

void kernel_path_emergency_cleanup() noexcept {
    for (auto& p : g_pids) {
        pid_t pid = p;
        if (pid > 0) kill(pid, SIGKILL);
    }
    // Reap them first: an `ip netns add` that is still running could
    // otherwise create its namespace after we removed its path.
    for (auto& p : g_pids) {
        pid_t pid = p;
        if (pid > 0) {
            while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
            p = 0;
        }
    }
    // What `ip netns del` does: the bind mount keeps the namespace alive; once
    // it and our (dying) children are gone, the kernel frees it and the veth.
    for (int i = 0; i < max_slots; ++i) {
        if (!g_ns_used[i]) continue;
        umount2(g_ns_paths[i], MNT_DETACH);
        unlink(g_ns_paths[i]);
    }
}

int kernel_path_remove_stale() noexcept {
    DIR* d = opendir("/run/netns");
    if (!d) return 0;
    std::vector<std::string> stale;
    while (dirent* e = readdir(d)) {
        int pid = 0, n = 0;
        char side = 0;
        if (sscanf(e->d_name, "zcb-%d-%d-%c", &pid, &n, &side) != 3 || pid <= 0) continue;
        if (kill(pid, 0) < 0 && errno == ESRCH) stale.emplace_back(e->d_name);
    }
    closedir(d);
    int removed = 0;
    for (auto& name : stale) {
        std::string out;
        if (run_ip({"netns", "del", name}, &out) == 0) {
            ZC_LOG(info, tag, "removed stale namespace %s", name.c_str());
            ++removed;
        }
    }
    return removed;
}

bool kernel_path_available(std::string* why) {
    std::string dummy;
    if (!why) why = &dummy;
    if (precheck(why) < 0) return false;
    std::lock_guard lk(g_run_mutex);
    std::string name = kernel_netns_prefix() + std::to_string(g_counter.fetch_add(1)) + "-p";
    std::string out;
    if (run_ip({"netns", "add", name}, &out) != 0) {
        *why = "ip netns add failed: " + out;
        return false;
    }
    run_ip({"netns", "del", name}, &out);
    return true;
}

} // namespace zc::bench
