// SPDX-License-Identifier: MIT
// The emulated xenstored, driven by the real libxenstore through hv::xs (and
// by a raw socket for malformed input). Absence of an event is checked with
// an ordering barrier, not a timeout: events and replies on one connection
// arrive in order, so once a later "sync" event is seen an earlier event
// would have been seen too.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <xen/io/xs_wire.h>
extern "C" {
#include <xenstore.h>
}

#include "hv/emu/xenstored.hpp"
#include "hv/xs.hpp"

using zc::hv::xs;
using zc::hv::emu::xenstored;

namespace {

constexpr int wait_ms = 5000; // upper bound for anything to arrive

std::optional<xs::watch_event> next_event(xs& h) {
    for (;;) {
        auto ev = h.read_watch();
        if (ev)
            return *ev;
        if (ev.error() != -EAGAIN)
            return std::nullopt;
        pollfd p{h.fileno(), POLLIN, 0};
        if (poll(&p, 1, wait_ms) <= 0)
            return std::nullopt;
    }
}

// Every event up to and including the first one with token `until`.
std::vector<xs::watch_event> events_until(xs& h, const std::string& until) {
    std::vector<xs::watch_event> v;
    for (;;) {
        auto ev = next_event(h);
        if (!ev) {
            ADD_FAILURE() << "no event with token " << until;
            return v;
        }
        v.push_back(*ev);
        if (ev->token == until)
            return v;
    }
}

template <class T>
T val(zc::result<T> r) {
    EXPECT_TRUE(r.ok()) << "error " << r.error();
    return r.ok() ? std::move(r).value() : T{};
}

bool saw(const std::vector<xs::watch_event>& v, const std::string& path, const std::string& token) {
    for (const auto& e : v)
        if (e.path == path && e.token == token)
            return true;
    return false;
}

class XenstoredTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/zc-xenstored-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        _dir = tmpl;
        ASSERT_EQ(_d.start(), 0);
        for (uint16_t dom : {0, 1, 2})
            ASSERT_EQ(_d.add_domain(dom, sock(dom), dom ? "guest" + std::to_string(dom) : "Domain-0"), 0);
    }
    void TearDown() override {
        _d.stop();
        for (uint16_t dom : {0, 1, 2, 3})
            unlink(sock(dom).c_str());
        rmdir(_dir.c_str());
    }
    std::string sock(uint16_t dom) const { return _dir + "/dom" + std::to_string(dom) + ".sock"; }
    std::unique_ptr<xs> open(uint16_t dom) {
        auto r = xs::open(sock(dom));
        EXPECT_TRUE(r.ok()) << r.error();
        return r.ok() ? std::move(r.value()) : nullptr;
    }
    // Sets a watch and consumes the event every watch fires on registration.
    void watch(xs& h, const std::string& path, const std::string& token) {
        ASSERT_EQ(h.watch(path, token), 0);
        auto ev = next_event(h);
        ASSERT_TRUE(ev);
        EXPECT_EQ(ev->path, path);
        EXPECT_EQ(ev->token, token);
    }

    std::string _dir;
    xenstored _d;
};

TEST_F(XenstoredTest, ReadWriteMkdirRmDirectory) {
    auto h = open(0);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->write("/a/b", "v1"), 0); // creates /a on the way
    auto v = h->read("/a/b");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, "v1");
    std::string bin("x\0y\xff", 4);
    EXPECT_EQ(h->write("/a/bin", bin), 0);
    EXPECT_EQ(val(h->read("/a/bin")), bin);
    EXPECT_EQ(val(h->read("/a")), "");
    EXPECT_EQ(h->mkdir("/a/c"), 0);
    EXPECT_EQ(h->mkdir("/a/c"), 0); // already there: fine

    auto d = h->directory("/a");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, (std::vector<std::string>{"b", "bin", "c"}));
    EXPECT_EQ(h->directory("/nope").error(), -ENOENT);

    // The toolstack side sees the same tree.
    EXPECT_EQ(val(_d.read("/a/b")), "v1");
    EXPECT_EQ(_d.write("/a/c/t", "tool"), 0);
    EXPECT_EQ(val(h->read("/a/c/t")), "tool");

    EXPECT_EQ(h->rm("/a"), 0); // recursive
    EXPECT_EQ(h->read("/a/b").error(), -ENOENT);
    EXPECT_EQ(h->read("/a").error(), -ENOENT);
    EXPECT_EQ(_d.read("/a/c/t").error(), -ENOENT);
    EXPECT_EQ(h->rm("/a"), 0);             // gone, parent exists: fine
    EXPECT_EQ(h->rm("/a/b"), -ENOENT);     // parent missing too

    // Invalid paths.
    EXPECT_EQ(h->write("/bad path", "x"), -EINVAL);
    EXPECT_EQ(h->write("/trailing/", "x"), -EINVAL);
    EXPECT_EQ(h->write("//double", "x"), -EINVAL);
    EXPECT_EQ(h->rm("/"), -EINVAL);

    // Relative paths resolve to the caller's home.
    auto g = open(1);
    ASSERT_TRUE(g);
    EXPECT_EQ(g->write("data/x", "rel"), 0);
    EXPECT_EQ(val(_d.read("/local/domain/1/data/x")), "rel");
    EXPECT_EQ(val(g->read("name")), "guest1");
    EXPECT_EQ(val(g->read("domid")), "1");
    EXPECT_EQ(val(g->get_domain_path(7)), "/local/domain/7");
}

TEST_F(XenstoredTest, LargeDirectoryUsesDirectoryPart) {
    auto h = open(0);
    ASSERT_TRUE(h);
    std::vector<std::string> want;
    for (int i = 0; i < 60; i++) {
        std::string name = "child" + std::to_string(100 + i) + std::string(100, 'x');
        want.push_back(name);
        ASSERT_EQ(h->mkdir("/big/" + name), 0);
    }
    // 60 * 109 bytes > XENSTORE_PAYLOAD_MAX: XS_DIRECTORY says E2BIG and
    // libxenstore falls back to XS_DIRECTORY_PART chunks.
    auto d = h->directory("/big");
    ASSERT_TRUE(d.ok()) << d.error();
    EXPECT_EQ(*d, want);
}

TEST_F(XenstoredTest, PermissionsAsXenstored) {
    auto h0 = open(0), h1 = open(1);
    ASSERT_TRUE(h0 && h1);
    ASSERT_EQ(h0->write("/secret", "s"), 0);
    EXPECT_EQ(val(h0->get_perms("/secret")), (std::vector<std::string>{"n0"})); // inherited from /

    EXPECT_EQ(h1->read("/secret").error(), -EACCES);
    EXPECT_EQ(h1->write("/secret", "x"), -EACCES);
    EXPECT_EQ(h1->rm("/secret"), -EACCES);
    // A missing node under a node we may not read: EACCES, not ENOENT.
    EXPECT_EQ(h1->read("/secret/none").error(), -EACCES);
    EXPECT_EQ(h1->read("/local/domain/2/name").error(), -EACCES); // another guest's home
    EXPECT_EQ(h1->read("/local/domain/1/none").error(), -ENOENT);  // own home: honest

    // dom0 grants read to dom1.
    ASSERT_EQ(h0->set_perms("/secret", {"n0", "r1"}), 0);
    auto v = h1->read("/secret");
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(*v, "s");
    EXPECT_EQ(h1->write("/secret", "x"), -EACCES); // read only
    EXPECT_EQ(val(h1->get_perms("/secret")), (std::vector<std::string>{"n0", "r1"}));
    EXPECT_EQ(h1->set_perms("/secret", {"b1"}), -EACCES); // not the owner
    // Still denied to a third domain.
    auto h2 = open(2);
    ASSERT_TRUE(h2);
    EXPECT_EQ(h2->read("/secret").error(), -EACCES);

    // The guest's home is its own; nodes it creates are owned by it and
    // inherit the rest of the parent's perms.
    EXPECT_EQ(val(h0->get_perms("/local/domain/1")), (std::vector<std::string>{"n1"}));
    ASSERT_EQ(h0->write("/shared", ""), 0);
    ASSERT_EQ(h0->set_perms("/shared", {"n0", "b1"}), 0);
    ASSERT_EQ(h1->write("/shared/g", "guest"), 0);
    EXPECT_EQ(val(h0->get_perms("/shared/g")), (std::vector<std::string>{"n1", "b1"}));
    ASSERT_EQ(h0->write("/shared/t", "tool"), 0);
    EXPECT_EQ(val(h0->get_perms("/shared/t")), (std::vector<std::string>{"n0", "b1"}));
    // A guest may change perms of what it owns, but not give it away.
    EXPECT_EQ(h1->set_perms("/shared/g", {"n1", "r2"}), 0);
    EXPECT_EQ(val(h2->read("/shared/g")), "guest");
    EXPECT_EQ(h1->set_perms("/shared/g", {"n2"}), -EPERM);
    EXPECT_EQ(h1->set_perms("/shared/g", {"x1"}), -EINVAL);

    // Guests may not ask privileged questions.
    EXPECT_TRUE(xs_is_domain_introduced(h0->raw(), 2));
    EXPECT_FALSE(xs_is_domain_introduced(h0->raw(), 9));
    errno = 0;
    EXPECT_FALSE(xs_is_domain_introduced(h1->raw(), 2));
    EXPECT_EQ(errno, EACCES);
}

TEST_F(XenstoredTest, WatchesFireAcrossConnections) {
    auto h0 = open(0), h1 = open(1);
    ASSERT_TRUE(h0 && h1);
    watch(*h0, "/local/domain/1/data", "home1");
    watch(*h0, "/local/domain/0/sync", "sync");
    watch(*h1, "data", "rel");                     // relative watch
    watch(*h1, "/secret", "nosee");                // not readable by dom1
    watch(*h1, "/local/domain/1/sync", "sync");

    ASSERT_EQ(h1->write("data/x", "1"), 0);
    auto ev = next_event(*h0);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "/local/domain/1/data/x");
    EXPECT_EQ(ev->token, "home1");
    ev = next_event(*h1);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "data/x"); // reported relative, as it was set
    EXPECT_EQ(ev->token, "rel");

    // dom1 must not learn about a node it cannot read.
    ASSERT_EQ(h0->write("/secret", "s"), 0);
    ASSERT_EQ(h0->write("/local/domain/1/sync", "1"), 0);
    auto seen = events_until(*h1, "sync");
    EXPECT_FALSE(saw(seen, "/secret", "nosee"));
    EXPECT_EQ(seen.size(), 1u);
    // ...until it may.
    ASSERT_EQ(h0->set_perms("/secret", {"n0", "r1"}), 0);
    ev = next_event(*h1);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "/secret");
    EXPECT_EQ(ev->token, "nosee");

    // Removing a subtree: the removed path for watchers above, and each
    // removed node for watchers set exactly on it.
    watch(*h0, "/tree/a/b", "deep");
    watch(*h0, "/tree", "top");
    ASSERT_EQ(h0->write("/tree/a/b/c", "x"), 0);
    auto w = events_until(*h0, "top");
    EXPECT_TRUE(saw(w, "/tree/a/b/c", "deep"));
    EXPECT_TRUE(saw(w, "/tree/a/b/c", "top"));
    ASSERT_EQ(h0->rm("/tree/a"), 0);
    ASSERT_EQ(h0->write("/local/domain/0/sync", "1"), 0);
    w = events_until(*h0, "sync");
    EXPECT_TRUE(saw(w, "/tree/a", "top"));
    EXPECT_TRUE(saw(w, "/tree/a/b", "deep"));

    // After unwatch, no more events for it.
    ASSERT_EQ(h1->unwatch("data", "rel"), 0);
    EXPECT_EQ(h1->unwatch("data", "rel"), -ENOENT);
    ASSERT_EQ(h1->write("data/y", "2"), 0);
    ASSERT_EQ(h0->write("/local/domain/1/sync", "2"), 0);
    seen = events_until(*h1, "sync");
    EXPECT_EQ(seen.size(), 1u);

    // Duplicate watch, bad path.
    EXPECT_EQ(h0->watch("/tree", "top"), -EEXIST);
    EXPECT_EQ(h0->watch("/bad path", "t"), -EINVAL);
}

TEST_F(XenstoredTest, WatchAcrossProcesses) {
    auto h0 = open(0);
    ASSERT_TRUE(h0);
    watch(*h0, "/local/domain/1/ping", "ping");

    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    // Never leave the child behind when an assertion returns early.
    struct reaper {
        pid_t pid;
        ~reaper() {
            if (pid > 0) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
            }
        }
    } reap{pid};
    if (pid == 0) {
        // The guest: a separate process with its own libxenstore handle.
        auto r = xs::open(sock(1));
        if (!r)
            _exit(10);
        xs& g = *r.value();
        if (g.watch("pong", "pong") != 0)
            _exit(11);
        auto first = next_event(g);
        if (!first || first->path != "pong")
            _exit(12);
        if (g.write("ping", "hello") != 0)
            _exit(13);
        auto ev = next_event(g);
        if (!ev || ev->path != "pong" || ev->token != "pong")
            _exit(14);
        auto v = g.read("pong");
        _exit(v.ok() && *v == "world" ? 0 : 15);
    }
    // Events for the ping node come while it does not exist yet (none) and
    // when the child writes it.
    auto ev = next_event(*h0);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "/local/domain/1/ping");
    auto v = h0->read("/local/domain/1/ping");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, "hello");
    ASSERT_EQ(h0->write("/local/domain/1/pong", "world"), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    reap.pid = 0;
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(XenstoredTest, IntroduceAndReleaseDomain) {
    auto h0 = open(0), h1 = open(1);
    ASSERT_TRUE(h0 && h1);
    watch(*h0, "@introduceDomain", "intro");
    watch(*h0, "@releaseDomain", "release");
    watch(*h1, "@releaseDomain", "release");        // dom1 may not see it
    watch(*h1, "/local/domain/1/sync", "sync");

    ASSERT_EQ(_d.add_domain(3, sock(3), "guest3"), 0);
    auto ev = next_event(*h0);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "@introduceDomain");
    EXPECT_EQ(ev->token, "intro");
    EXPECT_TRUE(xs_is_domain_introduced(h0->raw(), 3));

    auto h3 = open(3);
    ASSERT_TRUE(h3);
    EXPECT_EQ(val(h3->read("name")), "guest3");
    watch(*h3, "domid", "mine");

    _d.remove_domain(3);
    ev = next_event(*h0);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "@releaseDomain");
    EXPECT_EQ(ev->token, "release");
    EXPECT_FALSE(xs_is_domain_introduced(h0->raw(), 3));
    EXPECT_EQ(_d.read("/local/domain/3").error(), -ENOENT);

    // Its connections are gone and nobody can connect as it any more.
    // (get_domain_path succeeds on any live connection.)
    ASSERT_TRUE(h0->get_domain_path(3).ok());
    EXPECT_FALSE(h3->get_domain_path(3).ok());
    EXPECT_FALSE(xs::open(sock(3)).ok());

    ASSERT_EQ(h0->write("/local/domain/1/sync", "1"), 0);
    auto seen = events_until(*h1, "sync");
    EXPECT_EQ(seen.size(), 1u) << "a guest saw @releaseDomain";

    // dom0 may let a guest see it.
    ASSERT_EQ(h0->set_perms("@releaseDomain", {"n0", "r1"}), 0);
    EXPECT_EQ(h1->set_perms("@releaseDomain", {"n1"}), -EACCES);
    _d.remove_domain(2);
    ev = next_event(*h1);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "@releaseDomain");
}

TEST_F(XenstoredTest, Transactions) {
    auto h0 = open(0), other = open(0);
    ASSERT_TRUE(h0 && other);
    watch(*other, "/tx", "tx");

    // Commit: invisible outside until committed, then visible with events.
    auto t = h0->transaction_start();
    ASSERT_TRUE(t.ok());
    ASSERT_EQ(h0->write("/tx/a", "1", *t), 0);
    EXPECT_EQ(val(h0->read("/tx/a", *t)), "1");
    EXPECT_EQ(other->read("/tx/a").error(), -ENOENT);
    EXPECT_EQ(val(h0->directory("/tx", *t)), std::vector<std::string>{"a"});
    ASSERT_EQ(h0->transaction_end(*t, false), 0);
    EXPECT_EQ(val(other->read("/tx/a")), "1");
    auto ev = next_event(*other);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->path, "/tx/a");

    // Abort: nothing happened.
    t = h0->transaction_start();
    ASSERT_TRUE(t.ok());
    ASSERT_EQ(h0->write("/tx/b", "2", *t), 0);
    ASSERT_EQ(h0->rm("/tx/a", *t), 0);
    ASSERT_EQ(h0->transaction_end(*t, true), 0);
    EXPECT_EQ(other->read("/tx/b").error(), -ENOENT);
    EXPECT_EQ(val(other->read("/tx/a")), "1");
    // The ended transaction is gone.
    EXPECT_EQ(h0->read("/tx/a", *t).error(), -ENOENT);

    // Conflict: a node the transaction read changed under it.
    t = h0->transaction_start();
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(val(h0->read("/tx/a", *t)), "1");
    ASSERT_EQ(other->write("/tx/a", "other"), 0);
    ASSERT_EQ(h0->write("/tx/a", "mine", *t), 0);
    EXPECT_EQ(h0->transaction_end(*t, false), -EAGAIN);
    EXPECT_EQ(val(other->read("/tx/a")), "other");

    // A change elsewhere does not conflict.
    t = h0->transaction_start();
    ASSERT_TRUE(t.ok());
    ASSERT_EQ(h0->write("/tx/c", "mine", *t), 0);
    ASSERT_EQ(other->write("/elsewhere", "x"), 0);
    EXPECT_EQ(h0->transaction_end(*t, false), 0);
    EXPECT_EQ(val(other->read("/tx/c")), "mine");

    // Two transactions creating the same node: the second commit loses.
    auto t1 = h0->transaction_start();
    auto t2 = other->transaction_start();
    ASSERT_TRUE(t1.ok() && t2.ok());
    ASSERT_EQ(h0->write("/tx/d", "one", *t1), 0);
    ASSERT_EQ(other->write("/tx/d", "two", *t2), 0);
    EXPECT_EQ(h0->transaction_end(*t1, false), 0);
    EXPECT_EQ(other->transaction_end(*t2, false), -EAGAIN);
    EXPECT_EQ(val(other->read("/tx/d")), "one");

    // Unknown transaction id.
    EXPECT_EQ(h0->read("/tx/a", 12345).error(), -ENOENT);
}

// ---- raw wire protocol ------------------------------------------------------

struct raw_msg {
    xsd_sockmsg hdr;
    std::string body;
};

int raw_connect(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool raw_send(int fd, uint32_t type, uint32_t req_id, const std::string& body, uint32_t len_override = UINT32_MAX) {
    xsd_sockmsg h{type, req_id, 0, len_override == UINT32_MAX ? uint32_t(body.size()) : len_override};
    std::string buf(reinterpret_cast<const char*>(&h), sizeof(h));
    buf += body;
    return send(fd, buf.data(), buf.size(), MSG_NOSIGNAL) == ssize_t(buf.size());
}

// 1: got `n` bytes; 0: orderly EOF; -1: error or nothing within wait_ms.
int raw_read(int fd, void* dst, size_t n) {
    char* p = static_cast<char*>(dst);
    while (n) {
        pollfd pf{fd, POLLIN, 0};
        if (poll(&pf, 1, wait_ms) <= 0)
            return -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        p += r;
        n -= size_t(r);
    }
    return 1;
}

std::optional<raw_msg> raw_recv(int fd) {
    raw_msg m{};
    if (raw_read(fd, &m.hdr, sizeof(m.hdr)) != 1 || m.hdr.len > XENSTORE_PAYLOAD_MAX)
        return std::nullopt;
    m.body.resize(m.hdr.len);
    if (m.hdr.len && raw_read(fd, m.body.data(), m.hdr.len) != 1)
        return std::nullopt;
    return m;
}

void expect_error(int fd, uint32_t req_id, const char* name) {
    auto m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_ERROR));
    EXPECT_EQ(m->hdr.req_id, req_id);
    EXPECT_EQ(m->body, std::string(name) + '\0');
}

TEST_F(XenstoredTest, MalformedMessagesAreRejected) {
    using namespace std::string_literals;
    auto good = open(1);
    ASSERT_TRUE(good);

    int fd = raw_connect(sock(1));
    ASSERT_GE(fd, 0);
    // A well-formed read first: the reply echoes req_id.
    ASSERT_TRUE(raw_send(fd, XS_READ, 7, "name\0"s));
    auto m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_READ));
    EXPECT_EQ(m->hdr.req_id, 7u);
    EXPECT_EQ(m->body, "guest1");

    ASSERT_TRUE(raw_send(fd, XS_READ, 8, "name"));              // no NUL
    expect_error(fd, 8, "EINVAL");
    ASSERT_TRUE(raw_send(fd, XS_READ, 9, "na\0me\0"s));         // two strings
    expect_error(fd, 9, "EINVAL");
    ASSERT_TRUE(raw_send(fd, XS_READ, 10, ""));                 // empty
    expect_error(fd, 10, "EINVAL");
    ASSERT_TRUE(raw_send(fd, XS_WRITE, 11, "/bad path\0x"s));
    expect_error(fd, 11, "EINVAL");
    ASSERT_TRUE(raw_send(fd, 999, 12, "x\0"s));                 // unknown type
    expect_error(fd, 12, "ENOSYS");
    ASSERT_TRUE(raw_send(fd, XS_WATCH_EVENT, 13, "x\0y\0"s));   // daemon->client only
    expect_error(fd, 13, "ENOSYS");
    ASSERT_TRUE(raw_send(fd, XS_TRANSACTION_END, 14, "X\0"s));
    expect_error(fd, 14, "EINVAL");
    ASSERT_TRUE(raw_send(fd, XS_SET_PERMS, 15, "name\0"s));     // no perms
    expect_error(fd, 15, "EINVAL");
    ASSERT_TRUE(raw_send(fd, XS_INTRODUCE, 16, "5\0"s "1\0"s "1\0"s)); // privileged
    expect_error(fd, 16, "EACCES");
    ASSERT_TRUE(raw_send(fd, XS_DIRECTORY_PART, 17, "/local/domain/1\0"s "abc\0"s));
    expect_error(fd, 17, "EINVAL");
    std::string longpath = "/local/domain/1/" + std::string(XENSTORE_REL_PATH_MAX + 1, 'a');
    ASSERT_TRUE(raw_send(fd, XS_WRITE, 18, longpath + '\0' + "v"));
    expect_error(fd, 18, "EINVAL");

    // Watches dropped by XS_RESET_WATCHES: the next message after the reset
    // ack is the reply to our read, not an event.
    ASSERT_TRUE(raw_send(fd, XS_WATCH, 20, "data\0tok\0"s));
    m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_WATCH));
    m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_WATCH_EVENT));
    EXPECT_EQ(m->body, "data\0tok\0"s);
    ASSERT_TRUE(raw_send(fd, XS_RESET_WATCHES, 21, ""));
    m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_RESET_WATCHES));
    ASSERT_EQ(_d.write("/local/domain/1/data/z", "1"), 0);
    ASSERT_TRUE(raw_send(fd, XS_READ, 22, "name\0"s));
    m = raw_recv(fd);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hdr.type, uint32_t(XS_READ));
    EXPECT_EQ(m->hdr.req_id, 22u);

    // A length beyond XENSTORE_PAYLOAD_MAX cannot be resynchronised: the
    // daemon hangs up.
    ASSERT_TRUE(raw_send(fd, XS_READ, 30, "", XENSTORE_PAYLOAD_MAX + 1));
    char c;
    EXPECT_EQ(raw_read(fd, &c, 1), 0);
    close(fd);

    // A client that leaves half a message behind.
    fd = raw_connect(sock(1));
    ASSERT_GE(fd, 0);
    xsd_sockmsg h{XS_READ, 1, 0, 100};
    ASSERT_EQ(send(fd, &h, sizeof(h) - 3, MSG_NOSIGNAL), ssize_t(sizeof(h) - 3));
    close(fd);

    // Everyone else is still served.
    auto v = good->read("name");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, "guest1");
    auto h0 = open(0);
    ASSERT_TRUE(h0);
    EXPECT_EQ(h0->write("/still", "alive"), 0);
}

} // namespace
