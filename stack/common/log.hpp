// SPDX-License-Identifier: MIT
// Minimal leveled logging to stderr with a component tag. Rate limiting is
// the caller's job for anything a peer can trigger (see log_ratelimit).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zc::log {

enum class level : int { error = 0, warn = 1, info = 2, debug = 3 };

// Threshold from ZCNET_LOG=error|warn|info|debug (default info).
level threshold() noexcept;
void set_threshold(level l) noexcept;

// One line on stderr. When stderr is the journal (a systemd service,
// $JOURNAL_STREAM), the line carries the level as a syslog priority.
// Control characters in the formatted message (newline, escape, ...) are
// written as \xNN, so that no argument can split the line or drive a
// terminal.
void write(level l, const char* tag, const char* fmt, ...) noexcept
    __attribute__((format(printf, 3, 4)));

// stderr is the stream $JOURNAL_STREAM names (systemd.exec(5)).
bool stderr_is_journal() noexcept;

// A peer-written string made safe for a log line or a xenstore value read
// by an operator: printable ASCII is kept, every other byte is written as
// \xNN, and the result is at most `max` bytes (cut with "..." when longer).
// Idempotent: sanitising a sanitised string changes nothing.
std::string sanitize(std::string_view s, size_t max = 64);

// A token bucket: at most `burst` messages, refilled at `per_sec`.
// Use one per peer-triggerable message site.
class ratelimit {
public:
    constexpr ratelimit(uint32_t burst = 10, uint32_t per_sec = 1) noexcept
        : _burst(burst), _per_sec(per_sec) {}
    bool allow() noexcept;
    uint64_t suppressed() const noexcept { return _suppressed.load(std::memory_order_relaxed); }

private:
    uint32_t _burst, _per_sec;
    std::atomic<int64_t> _tokens_ms{-1};
    std::atomic<int64_t> _last_ms{0};
    std::atomic<uint64_t> _suppressed{0};
};

} // namespace zc::log

// ZC_LOG through a rate limiter `rl` (a log::ratelimit): for lines a peer
// can trigger. Lines below the threshold take no token.
#define ZC_LOG_RL(rl, lvl, tag, ...)                                           \
    do {                                                                       \
        if (static_cast<int>(::zc::log::level::lvl) <=                         \
                static_cast<int>(::zc::log::threshold()) &&                    \
            (rl).allow())                                                      \
            ::zc::log::write(::zc::log::level::lvl, tag, __VA_ARGS__);         \
    } while (0)

#define ZC_LOG(lvl, tag, ...)                                                  \
    do {                                                                       \
        if (static_cast<int>(::zc::log::level::lvl) <=                         \
            static_cast<int>(::zc::log::threshold()))                          \
            ::zc::log::write(::zc::log::level::lvl, tag, __VA_ARGS__);         \
    } while (0)
