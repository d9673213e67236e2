// SPDX-License-Identifier: MIT
// common/log: lines carry a syslog priority exactly when stderr is the
// stream $JOURNAL_STREAM names (zc-netback.service logs to the journal).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.hpp"

namespace {

// Runs `fn` with stderr redirected into a pipe; returns what it wrote.
template <class F>
std::string capture_stderr(F fn) {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    int saved = ::dup(2);
    ::dup2(p[1], 2);
    fn(p[1]);
    ::dup2(saved, 2);
    ::close(saved);
    ::close(p[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
    ::close(p[0]);
    return out;
}

std::string stream_id(int fd) {
    struct stat st;
    EXPECT_EQ(::fstat(fd, &st), 0);
    return std::to_string((unsigned long long)st.st_dev) + ":" + std::to_string((unsigned long long)st.st_ino);
}

TEST(Log, JournalStreamGetsSyslogPriorities) {
    std::string out = capture_stderr([](int fd) {
        ::setenv("JOURNAL_STREAM", stream_id(fd).c_str(), 1);
        zc::log::write(zc::log::level::error, "t", "e %d", 1);
        zc::log::write(zc::log::level::warn, "t", "w");
        zc::log::write(zc::log::level::info, "t", "i");
        zc::log::write(zc::log::level::debug, "t", "d");
        ::unsetenv("JOURNAL_STREAM");
    });
    EXPECT_EQ(out, "<3>error t: e 1\n<4>warn t: w\n<6>info t: i\n<7>debug t: d\n");
}

TEST(Log, OtherStreamsGetNoPriority) {
    // $JOURNAL_STREAM inherited by a process whose stderr went elsewhere.
    std::string out = capture_stderr([](int) {
        ::setenv("JOURNAL_STREAM", "1:1", 1);
        zc::log::write(zc::log::level::warn, "t", "w");
        ::unsetenv("JOURNAL_STREAM");
        zc::log::write(zc::log::level::info, "t", "i");
    });
    std::string pid = std::to_string(::getpid());
    EXPECT_EQ(out, "zcnet[" + pid + "] warn t: w\nzcnet[" + pid + "] info t: i\n");
}

} // namespace
