// SPDX-License-Identifier: MIT
// Monotonic time for timeouts and rate limits (never wall-clock time).
#pragma once

#include <cerrno>
#include <cstdint>
#include <ctime>

namespace zc {

inline int64_t mono_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
inline int64_t mono_us() noexcept { return mono_ns() / 1000; }
inline int64_t mono_ms() noexcept { return mono_ns() / 1000000; }

// Sleep for `ms` milliseconds, resuming after signals.
inline void sleep_ms(int64_t ms) noexcept {
    timespec ts{time_t(ms / 1000), long(ms % 1000) * 1000000L};
    while (::nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

} // namespace zc
