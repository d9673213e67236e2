// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sys/stat.h>
#include <unistd.h>

#include "common/check.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"

namespace zc::detail {
void check_failed(const char* expr, const char* file, int line) noexcept {
    std::fprintf(stderr, "zcnet: internal check failed: %s at %s:%d\n", expr, file, line);
    std::abort();
}
} // namespace zc::detail

namespace zc::log {
namespace {
std::atomic<int> g_threshold{-1};

int parse_env() noexcept {
    const char* e = std::getenv("ZCNET_LOG");
    if (!e) return int(level::info);
    if (!std::strcmp(e, "error")) return int(level::error);
    if (!std::strcmp(e, "warn")) return int(level::warn);
    if (!std::strcmp(e, "debug")) return int(level::debug);
    return int(level::info);
}
} // namespace

level threshold() noexcept {
    int t = g_threshold.load(std::memory_order_relaxed);
    if (t < 0) {
        t = parse_env();
        g_threshold.store(t, std::memory_order_relaxed);
    }
    return level(t);
}

void set_threshold(level l) noexcept { g_threshold.store(int(l), std::memory_order_relaxed); }

bool stderr_is_journal() noexcept {
    // systemd.exec(5), $JOURNAL_STREAM: "<device>:<inode>" of the stream
    // stderr was connected to; only a match means stderr still goes there.
    const char* e = std::getenv("JOURNAL_STREAM");
    if (!e || !*e) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(e, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st;
    if (::fstat(2, &st) != 0) return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void write(level l, const char* tag, const char* fmt, ...) noexcept {
    static const char* names[] = {"error", "warn", "info", "debug"};
    // Under systemd the journal reads a "<N>" prefix as the line's syslog
    // priority (sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7)
    // and records the pid itself.
    static const char* prio[] = {"<3>", "<4>", "<6>", "<7>"};
    char buf[1024];
    int n = stderr_is_journal()
                ? std::snprintf(buf, sizeof buf, "%s%s %s: ", prio[int(l)], names[int(l)], tag)
                : std::snprintf(buf, sizeof buf, "zcnet[%d] %s %s: ", int(getpid()), names[int(l)], tag);
    if (n < 0 || size_t(n) >= sizeof buf) n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = std::vsnprintf(buf + n, sizeof buf - size_t(n) - 1, fmt, ap);
    va_end(ap);
    size_t len = size_t(n) + (m < 0 ? 0 : std::min(size_t(m), sizeof buf - size_t(n) - 2));
    // One line whatever the arguments held: control bytes become \xNN.
    char out[sizeof buf * 4 + 2];
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        const unsigned char c = static_cast<unsigned char>(buf[i]);
        if (c < 0x20 || c == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = char(c);
        }
    }
    out[o++] = '\n';
    // One write(2) so that lines from several processes do not interleave.
    (void)!::write(2, out, o);
}

std::string sanitize(std::string_view s, size_t max) {
    static const char hex[] = "0123456789abcdef";
    std::string r;
    r.reserve(std::min(max, s.size()));
    for (unsigned char c : s) {
        char esc[4];
        size_t n = 0;
        if (c >= 0x20 && c < 0x7f) {
            esc[n++] = char(c);
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            n = 4;
        }
        if (r.size() + n > max) {
            // Cut, leaving room for the marker.
            while (!r.empty() && r.size() + 3 > max) r.pop_back();
            if (max >= 3) r += "...";
            return r;
        }
        r.append(esc, n);
    }
    return r;
}

bool ratelimit::allow() noexcept {
    // Tokens are kept in milli-tokens-per-ms units: one message costs 1000.
    int64_t now = mono_ms();
    int64_t cap = int64_t(_burst) * 1000;
    int64_t t = _tokens_ms.load(std::memory_order_relaxed);
    if (t < 0) t = cap;
    int64_t last = _last_ms.exchange(now, std::memory_order_relaxed);
    if (last) t = std::min(cap, t + (now - last) * int64_t(_per_sec));
    bool ok = t >= 1000;
    if (ok) t -= 1000;
    else _suppressed.fetch_add(1, std::memory_order_relaxed);
    _tokens_ms.store(t, std::memory_order_relaxed);
    return ok;
}
} // namespace zc::log
