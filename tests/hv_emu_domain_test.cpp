// SPDX-License-Identifier: MIT
// Domain lifecycle of the emulated hypervisor and the zc-emu tool.
#include <gtest/gtest.h>

#include <cstdio>
extern "C" {
#include <xenstore.h>
}

#include "emu_host.hpp"

using namespace zc;

namespace {

TEST(EmuDomain, DomidIsUniqueUnlessAttaching) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto a = host.domain(7);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->self(), 7);
    hv::emu::connect_options o;
    o.sock = host.sock();
    o.dom = 7;
    o.token = host.admin_token();
    std::string why;
    auto dup = hv::emu::open_port(o, &why);
    EXPECT_EQ(dup.error(), -EEXIST);
    EXPECT_NE(why.find("already running"), std::string::npos) << why;
    o.attach = true;
    auto att = hv::emu::open_port(o, &why);
    ASSERT_TRUE(att) << why;
    EXPECT_EQ((*att)->self(), 7);
    o.dom = 5000;
    EXPECT_EQ(hv::emu::open_port(o, &why).error(), -EINVAL);
}

TEST(EmuDomain, NoBrokerGivesClearError) {
    hv::emu::connect_options o;
    o.sock = "/tmp/zcnet-no-such-dir/broker.sock";
    o.dom = 1;
    std::string why;
    auto p = hv::emu::open_port(o, &why);
    EXPECT_EQ(p.error(), -ENOENT);
    EXPECT_NE(why.find("zc-emu up"), std::string::npos) << why;
}

// Domain death: the registry says so, and @releaseDomain fires in xenstore,
// as on Xen. The watcher is the real libxenstore.
TEST(EmuDomain, DeathFiresReleaseDomain) {
    test::emu_host host;
    ASSERT_TRUE(host.ok());
    auto dom0 = host.domain(0);
    ASSERT_TRUE(dom0);
    ::setenv("XENSTORED_PATH", dom0->xenstore_path().c_str(), 1);
    xs_handle* xs = ::xs_open(XS_OPEN_SOCKETONLY);
    ::unsetenv("XENSTORED_PATH");
    ASSERT_NE(xs, nullptr) << std::strerror(errno);
    ASSERT_TRUE(::xs_watch(xs, "@releaseDomain", "rel"));
    // Drain the initial firing of the watch.
    unsigned n = 0;
    ASSERT_TRUE(test::readable(::xs_fileno(xs), 5000));
    free(::xs_read_watch(xs, &n));

    test::chan up;
    pid_t pid = test::spawn([&]() -> int {
        auto me = host.domain(3);
        if (!me) return 10;
        up.put(1);
        ::pause();
        return 0;
    });
    int one;
    ASSERT_TRUE(up.get(one));
    auto* cli = hv::emu::client_of(*dom0);
    EXPECT_TRUE(cli->alive(3));
    ::kill(pid, SIGKILL);
    test::reap(pid);
    ASSERT_TRUE(test::readable(::xs_fileno(xs), 5000)) << "@releaseDomain did not fire";
    char** w = ::xs_read_watch(xs, &n);
    ASSERT_NE(w, nullptr);
    EXPECT_STREQ(w[XS_WATCH_PATH], "@releaseDomain");
    EXPECT_STREQ(w[XS_WATCH_TOKEN], "rel");
    free(w);
    EXPECT_FALSE(cli->alive(3));
    EXPECT_EQ(cli->view(3).error(), -ESRCH);
    ::xs_close(xs);
}

std::string run(const std::string& cmd, int* rc) {
    std::string out;
    FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!f) return out;
    char buf[512];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    int st = ::pclose(f);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

// The zc-emu tool end to end: up, run a program as a domain, status, down.
TEST(EmuTool, UpRunStatusDown) {
    char tmpl[] = "/tmp/zcnet-tool-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    std::string tool = ZC_EMU_BIN;
    int rc = -1;
    std::string out = run(tool + " up --dir " + dir, &rc);
    ASSERT_EQ(rc, 0) << out;
    out = run(tool + " up --dir " + dir, &rc);
    EXPECT_NE(rc, 0) << "a second broker on the same directory must be refused";
    EXPECT_NE(out.find("already"), std::string::npos) << out;
    out = run(tool + " run --dir " + dir + " --dom 6 -- sh -c 'echo dom=$ZCNET_DOMID hv=$ZCNET_HV; exit 3'", &rc);
    EXPECT_EQ(rc, 3) << "the program's exit code is passed through: " << out;
    EXPECT_NE(out.find("dom=6 hv=emu"), std::string::npos) << out;
    out = run(tool + " run --dir " + dir + " --dom 6 -- " + tool + " status --dir " + dir, &rc);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("dom6"), std::string::npos) << "domain 6 is alive while its program runs: " << out;
    out = run(tool + " run --dir " + dir + " --dom 6 -- " + tool + " run --dir " + dir + " --dom 6 -- true", &rc);
    EXPECT_NE(rc, 0) << "a second process may not create a running domain: " << out;
    out = run(tool + " run --dir " + dir + " --dom 6 -- " + tool + " run --dir " + dir +
                  " --dom 6 --attach -- sh -c 'echo attached=$ZCNET_DOMID'", &rc);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("attached=6"), std::string::npos) << out;
    out = run(tool + " status --dir " + dir, &rc);
    EXPECT_NE(out.find("0 domain(s)"), std::string::npos) << "domain 6 died with its program: " << out;
    out = run(tool + " run --dir " + dir + " --dom 99999 -- true", &rc);
    EXPECT_EQ(rc, 2) << out;
    out = run(tool + " down --dir " + dir, &rc);
    EXPECT_EQ(rc, 0) << out;
    out = run(tool + " status --dir " + dir, &rc);
    EXPECT_NE(rc, 0) << "no broker after down: " << out;
    (void)!std::system(("rm -rf " + dir).c_str());
}

} // namespace
