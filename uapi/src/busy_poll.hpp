// SPDX-License-Identifier: MIT
// Opt-in busy polling for libzcnet (ZC_SOCK_BUSY_POLL, zc_recv_wait) and
// zc-stackd (--busy-poll-us): look for work a short while before going to
// sleep, but only while a CPU is idle, so that on a host whose CPUs are all
// taken the spinner never keeps another process from running
// (uapi/README.md, "Busy polling"; bench/PROFILE.md, "Request/response").
//
// "A CPU is idle" is read from /proc/loadavg's fourth field, the number of
// runnable tasks right now (nr_running(), Linux kernel/sched/loadavg.c
// and fs/proc/loadavg.c), which counts the caller itself: it must be below
// the number of CPUs the caller may run on. One pread per look; a spin
// looks again every `recheck_ns`.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <ctime>

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

namespace zc::uapi {

class busy_poll {
public:
    static constexpr uint64_t recheck_ns = 5000;

    // budget_us 0: never spin.
    explicit busy_poll(uint32_t budget_us = 0) noexcept : _budget_ns(uint64_t(budget_us) * 1000) {}
    ~busy_poll() {
        if (_fd >= 0) ::close(_fd);
    }
    busy_poll(const busy_poll&) = delete;
    busy_poll& operator=(const busy_poll&) = delete;

    uint32_t budget_us() const noexcept { return uint32_t(_budget_ns / 1000); }
    void set_budget_us(uint32_t us) noexcept { _budget_ns = uint64_t(us) * 1000; }

    // Calls ready() until it returns true (then true), the budget is spent
    // or no CPU is idle any more (then false: go to sleep).
    template <class Ready>
    bool spin(Ready ready) noexcept {
        if (_budget_ns == 0) return false;
        const uint64_t t0 = now_ns();
        uint64_t next_check = t0;
        for (;;) {
            if (ready()) return true;
            const uint64_t t = now_ns();
            if (t - t0 >= _budget_ns) return false;
            if (t >= next_check) {
                if (!cpu_idle()) return false;
                next_check = t + recheck_ns;
            }
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }

    // Fewer runnable tasks (the caller included) than CPUs it may use.
    bool cpu_idle() noexcept {
        if (_ncpu == 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            _ncpu = ::sched_getaffinity(0, sizeof set, &set) == 0 ? uint32_t(CPU_COUNT(&set)) : 1;
            _fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        }
        if (_fd < 0 || _ncpu < 2) return false;
        char b[128];
        ssize_t n = ::pread(_fd, b, sizeof b - 1, 0);
        if (n <= 0) return false;
        b[n] = 0;
        // "0.50 0.40 0.30 R/T PID": the fourth field's R.
        const char* p = b;
        for (int f = 0; f < 3 && *p; p++)
            if (*p == ' ') f++;
        char* end = nullptr;
        const unsigned long running = std::strtoul(p, &end, 10);
        if (end == p || *end != '/') return false;
        return running < _ncpu;
    }

private:
    static uint64_t now_ns() noexcept {
        timespec t{};
        ::clock_gettime(CLOCK_MONOTONIC, &t);
        return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec);
    }

    uint64_t _budget_ns;
    uint32_t _ncpu = 0;
    int _fd = -1;
};

} // namespace zc::uapi
