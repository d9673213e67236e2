// SPDX-License-Identifier: MIT
// The emulated xenstored. Behaviour follows Xen's C xenstored
// (tools/xenstore/xenstored_{core,watch,transaction,domain}.c, 4.17 era):
//  - permissions: perm_for_conn() (owner and dom0 get everything, then the
//    first explicit entry for the domain, else the owner entry's default);
//    a missing node reports EACCES instead of ENOENT when the nearest
//    existing ancestor would not grant the access (errno_from_parents);
//    a new node copies its parent's perms and an unprivileged creator
//    becomes its owner (construct_node);
//  - watches fire for the path and every descendant change, once up front on
//    registration, only to connections that may read the node or its parent
//    (watch_permitted); @introduceDomain/@releaseDomain only to connections
//    that may read their special perms (dom0 by default);
//  - transactions record the generation of every node they touch and fail
//    the commit with EAGAIN if any of those changed (finalize_transaction).
//    We keep a private copy of the tree per transaction and replay the
//    transaction's successful modifications on commit, which yields the same
//    state and the same watch events as applying them one by one.
//
// Threading: one mutex (_mu) protects the tree, domains, connections and
// their queues. The daemon thread holds it while handling a batch of epoll
// events; toolstack calls hold it for one operation. Sockets are
// non-blocking, so nothing blocks while the mutex is held.
#include "hv/emu/xenstored.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <xen/io/xs_wire.h>

#include "common/check.hpp"
#include "common/log.hpp"

namespace zc::hv::emu {

namespace {

constexpr const char* tag = "xenstored";

// Permission bits as in xenstore_lib.h (XS_PERM_*).
constexpr unsigned perm_none = 0x0, perm_read = 0x1, perm_write = 0x2, perm_owner = 0x8;

// Quotas: xenstored's defaults (quota_* in xenstored_core.c). They bound
// what one unprivileged guest can make us allocate.
constexpr size_t quota_entries_per_domain = 1000;
constexpr size_t quota_watches_per_conn = 128;
constexpr size_t quota_transactions_per_conn = 10;
constexpr size_t quota_perms_per_node = 5;
constexpr size_t quota_entry_size = 2048;
// Not from xenstored (whose output is bounded by its ring): a client that
// stops reading its replies and events is dropped rather than let it grow
// our memory without bound.
constexpr size_t max_out_bytes = 4u << 20;
constexpr size_t max_conns_per_domain = 256;

constexpr uint16_t domid_self = 0x7FF0; // DOMID_SELF, xen/xen.h

struct perm {
    uint32_t dom;
    unsigned bits; // perm_read | perm_write
};
using perms_t = std::vector<perm>;

struct node {
    std::string value;
    perms_t perms;
    // In creation order, as xenstored lists them.
    std::vector<std::string> children;
    // Changes whenever value, perms or the child list change.
    uint64_t gen = 0;
};
// Keyed by absolute path; a subtree is a contiguous key range.
using tree = std::map<std::string, node>;

struct who {
    uint16_t dom;
    bool priv() const noexcept { return dom == 0; }
};

unsigned perm_for(who w, const perms_t& p) noexcept {
    if (w.priv() || p.empty() || p[0].dom == w.dom)
        return perm_read | perm_write | perm_owner;
    for (size_t i = 1; i < p.size(); i++)
        if (p[i].dom == w.dom)
            return p[i].bits;
    return p[0].bits;
}

std::string parent_of(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == 0 || slash == std::string::npos)
        return "/";
    return path.substr(0, slash);
}

std::string basename_of(const std::string& path) { return path.substr(path.rfind('/') + 1); }

std::string domain_path(unsigned dom) { return "/local/domain/" + std::to_string(dom); }

bool valid_chars(std::string_view s) noexcept {
    for (char c : s) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '/' || c == '_' || c == '@';
        if (!ok)
            return false;
    }
    return true;
}

// is_valid_nodename(): the length limit for unprivileged domains applies to
// the part below their /local/domain/<id>/ (the ACC_PATHLEN quota).
bool valid_nodename(who w, const std::string& p) noexcept {
    if (p.empty() || p[0] != '/')
        return false;
    if (p.size() > 1 && p.back() == '/')
        return false;
    if (p.find("//") != std::string::npos)
        return false;
    if (p.size() > XENSTORE_ABS_PATH_MAX)
        return false;
    if (!w.priv()) {
        size_t local_off = 0;
        constexpr std::string_view pre = "/local/domain/";
        if (p.compare(0, pre.size(), pre) == 0) {
            size_t i = pre.size(), digits = 0;
            while (i < p.size() && p[i] >= '0' && p[i] <= '9' && digits < 5) {
                i++;
                digits++;
            }
            if (digits > 0 && i < p.size() && p[i] == '/')
                local_off = i + 1;
        }
        if (p.size() - local_off > XENSTORE_REL_PATH_MAX)
            return false;
    }
    return valid_chars(p);
}

// Special watch paths (@introduceDomain...): xenstored checks length and
// characters like a node name.
bool valid_special(const std::string& p) noexcept {
    return p.size() > 1 && p[0] == '@' && p.size() <= XENSTORE_REL_PATH_MAX && valid_chars(p);
}

bool is_child(const std::string& child, const std::string& parent) noexcept {
    if (parent == "/")
        return true;
    if (child.compare(0, parent.size(), parent) != 0)
        return false;
    return child.size() == parent.size() || child[parent.size()] == '/';
}

std::string canonicalize(who w, const std::string& p) {
    if (p.empty() || p[0] == '/' || p[0] == '@')
        return p;
    return domain_path(w.dom) + "/" + p;
}

const char* errno_name(int e) noexcept {
    for (const auto& x : xsd_errors)
        if (x.errnum == e)
            return x.errstring;
    return "EINVAL";
}

// "r5" -> {5, read}. xenstore_strings_to_perms() rejects anything else.
bool parse_perm(std::string_view s, perm* out) noexcept {
    if (s.size() < 2 || s.size() > 6)
        return false;
    switch (s[0]) {
    case 'n': out->bits = perm_none; break;
    case 'r': out->bits = perm_read; break;
    case 'w': out->bits = perm_write; break;
    case 'b': out->bits = perm_read | perm_write; break;
    default: return false;
    }
    uint32_t v = 0;
    for (size_t i = 1; i < s.size(); i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + uint32_t(s[i] - '0');
    }
    if (v > 0xFFFF)
        return false;
    out->dom = v;
    return true;
}

std::string perm_string(const perm& p) {
    char c = 'n';
    if ((p.bits & (perm_read | perm_write)) == (perm_read | perm_write))
        c = 'b';
    else if (p.bits & perm_read)
        c = 'r';
    else if (p.bits & perm_write)
        c = 'w';
    return c + std::to_string(p.dom);
}

// A decimal number no larger than `max`; anything else is EINVAL.
bool parse_uint(const char* s, uint32_t max, unsigned* out) noexcept {
    if (!*s)
        return false;
    uint64_t v = 0;
    for (const char* p = s; *p; p++) {
        if (*p < '0' || *p > '9' || p - s >= 10)
            return false;
        v = v * 10 + unsigned(*p - '0');
    }
    if (v > max)
        return false;
    *out = unsigned(v);
    return true;
}

bool parse_domid(const char* s, unsigned* out) noexcept { return parse_uint(s, 0xFFFF, out); }

// The NUL-terminated strings of a payload; bytes after the last NUL are
// ignored, as xenstored's get_strings() does.
std::vector<std::string_view> split_strings(const char* body, uint32_t len) {
    std::vector<std::string_view> v;
    uint32_t off = 0;
    while (off < len) {
        const void* nul = std::memchr(body + off, 0, len - off);
        if (!nul)
            break;
        uint32_t n = uint32_t(static_cast<const char*>(nul) - (body + off));
        v.emplace_back(body + off, n);
        off += n + 1;
    }
    return v;
}

// A payload that is exactly one string: one NUL, at the end (onearg()).
const char* onearg(const char* body, uint32_t len) noexcept {
    if (len == 0 || std::memchr(body, 0, len) != body + len - 1)
        return nullptr;
    return body;
}

enum class op_kind { write, mkdir, rm, set_perms };
struct logged_op {
    op_kind kind;
    std::string path; // canonical
    std::string value;
    perms_t perms;
};

struct txn {
    tree snap;
    // Generation of each node at the transaction's first access to it
    // (0: it did not exist). Commit fails if any of them changed since.
    std::map<std::string, uint64_t> accessed;
    // Successful modifications, replayed on the live tree at commit.
    std::vector<logged_op> log;
};

struct watch {
    std::string node;  // canonical
    std::string token;
    bool relative;     // events report the path below the domain's home
};

struct conn {
    uint64_t key;
    int fd;
    uint16_t dom;
    std::vector<char> in;
    std::string out; // bytes queued for the socket
    size_t out_off = 0;
    bool want_out = false; // EPOLLOUT registered
    std::vector<watch> watches;
    std::map<uint32_t, std::unique_ptr<txn>> txns;
    uint32_t next_tx = 1;
};

struct domain_rec {
    uint16_t dom;
    uint64_t key;
    int listen_fd;
    std::string sock_path;
};

// Where an operation applies: the live tree, or a transaction's copy.
struct ctx {
    tree* t;
    txn* tx;
};

} // namespace

struct xenstored::impl {
    std::mutex _mu;
    tree _tree;
    uint64_t _gen = 0;
    std::map<std::string, perms_t> _special;
    std::map<uint16_t, domain_rec> _domains;
    std::map<uint64_t, uint16_t> _listener_keys;
    std::unordered_map<uint64_t, std::unique_ptr<conn>> _conns;
    uint64_t _next_key = 1; // 0 is the eventfd
    int _ep = -1;
    int _evfd = -1;
    int _init_err = 0;
    bool _stopping = false;
    bool _stopped = false;
    std::thread _thr;
    log::ratelimit _rl_bad{10, 1};

    impl() {
        // setup_structure(): "/" and /tool/xenstored, owned by dom0.
        for (const char* p : {"/", "/tool", "/tool/xenstored"}) {
            node& n = _tree[p];
            n.perms = {{0, perm_none}};
            n.gen = ++_gen;
        }
        _tree["/"].children = {"tool"};
        _tree["/tool"].children = {"xenstored"};
        _special["@introduceDomain"] = {{0, perm_none}};
        _special["@releaseDomain"] = {{0, perm_none}};

        _ep = epoll_create1(EPOLL_CLOEXEC);
        _evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (_ep < 0 || _evfd < 0) {
            _init_err = -errno;
            return;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = 0;
        if (epoll_ctl(_ep, EPOLL_CTL_ADD, _evfd, &ev) < 0)
            _init_err = -errno;
    }

    ~impl() {
        if (_ep >= 0)
            close(_ep);
        if (_evfd >= 0)
            close(_evfd);
    }

    // ---- tree access -------------------------------------------------------

    node* lookup(ctx& c, const std::string& path) {
        auto it = c.t->find(path);
        node* n = it == c.t->end() ? nullptr : &it->second;
        if (c.tx)
            c.tx->accessed.emplace(path, n ? n->gen : 0);
        return n;
    }

    void touch(node& n) { n.gen = ++_gen; }

    // get_node(): the node if `w` has all of `perm` on it; else EINVAL,
    // EACCES or ENOENT, never revealing existence to someone who could not
    // have seen it.
    node* get_node(who w, ctx& c, const std::string& path, unsigned perm, int* err) {
        if (!valid_nodename(w, path)) {
            *err = EINVAL;
            return nullptr;
        }
        node* n = lookup(c, path);
        if (n && (perm_for(w, n->perms) & perm) == perm)
            return n;
        *err = n ? EACCES : ENOENT;
        // errno_from_parents(): ask the nearest existing ancestor.
        std::string p = path;
        node* anc = nullptr;
        while (p != "/" && !anc) {
            p = parent_of(p);
            anc = lookup(c, p);
        }
        unsigned pp = anc ? perm_for(w, anc->perms) : perm_none;
        if (!(pp & perm))
            *err = EACCES;
        return nullptr;
    }

    size_t owned_by(const tree& t, uint16_t dom) const {
        size_t n = 0;
        for (const auto& [k, v] : t)
            if (!v.perms.empty() && v.perms[0].dom == dom)
                n++;
        return n;
    }

    // create_node()/construct_node(): make `path` and any missing ancestors.
    // Permission was checked on the nearest existing ancestor by get_node().
    node* create(who w, ctx& c, const std::string& path, std::string value, int* err) {
        std::vector<std::string> missing{path};
        std::string p = path;
        node* top = nullptr;
        for (;;) {
            p = parent_of(p);
            top = lookup(c, p);
            if (top)
                break;
            missing.push_back(p);
        }
        if (!w.priv() && owned_by(*c.t, w.dom) + missing.size() > quota_entries_per_domain) {
            *err = ENOSPC;
            return nullptr;
        }
        node* parent = top;
        for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
            node n;
            n.perms = parent->perms;
            if (!w.priv())
                n.perms[0].dom = w.dom;
            parent->children.push_back(basename_of(*it));
            touch(*parent);
            node& ins = (*c.t)[*it];
            ins = std::move(n);
            touch(ins);
            parent = &ins;
        }
        parent->value = std::move(value);
        return parent;
    }

    // ---- operations (return 0 or a positive errno, as xenstored) ----------

    int op_read(who w, ctx& c, const std::string& path, std::string* out) {
        int err = 0;
        node* n = get_node(w, c, path, perm_read, &err);
        if (!n)
            return err;
        *out = n->value;
        return 0;
    }

    int op_write(who w, ctx& c, const std::string& path, std::string_view value) {
        if (!w.priv() && value.size() >= quota_entry_size)
            return ENOSPC;
        int err = 0;
        node* n = get_node(w, c, path, perm_write, &err);
        if (!n) {
            if (err != ENOENT)
                return err;
            n = create(w, c, path, std::string(value), &err);
            if (!n)
                return err;
        } else {
            n->value.assign(value);
            touch(*n);
        }
        if (c.tx)
            c.tx->log.push_back({op_kind::write, path, std::string(value), {}});
        fire(c, path, false, n, nullptr);
        return 0;
    }

    int op_mkdir(who w, ctx& c, const std::string& path) {
        int err = 0;
        node* n = get_node(w, c, path, perm_write, &err);
        if (n)
            return 0;
        if (err != ENOENT)
            return err;
        n = create(w, c, path, {}, &err);
        if (!n)
            return err;
        if (c.tx)
            c.tx->log.push_back({op_kind::mkdir, path, {}, {}});
        fire(c, path, false, n, nullptr);
        return 0;
    }

    int op_rm(who w, ctx& c, const std::string& path) {
        int err = 0;
        node* n = get_node(w, c, path, perm_write, &err);
        if (!n) {
            // Removing a missing node is fine if its parent exists.
            if (err == ENOENT && lookup(c, parent_of(path)))
                return 0;
            return err;
        }
        if (path == "/")
            return EINVAL;
        node* parent = lookup(c, parent_of(path));
        if (!parent)
            return EINVAL;
        // Fire while the nodes still exist so that watch_permitted() can see
        // their perms: the node itself for everyone below, then every removed
        // descendant for watches set exactly on it.
        fire(c, path, false, n, nullptr);
        std::string prefix = path + "/";
        std::vector<std::string> gone;
        for (auto it = c.t->lower_bound(prefix); it != c.t->end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
            gone.push_back(it->first);
        for (const auto& d : gone) {
            node* dn = lookup(c, d);
            fire(c, d, true, dn, nullptr);
        }
        for (const auto& d : gone)
            c.t->erase(d);
        c.t->erase(path);
        auto& ch = parent->children;
        std::string base = basename_of(path);
        for (auto it = ch.begin(); it != ch.end(); ++it)
            if (*it == base) {
                ch.erase(it);
                break;
            }
        touch(*parent);
        if (c.tx)
            c.tx->log.push_back({op_kind::rm, path, {}, {}});
        return 0;
    }

    int op_set_perms(who w, ctx& c, const std::string& path, const perms_t& perms) {
        if (!path.empty() && path[0] == '@') {
            auto it = _special.find(path);
            if (it == _special.end())
                return EINVAL;
            if ((perm_for(w, it->second) & (perm_write | perm_owner)) != (perm_write | perm_owner))
                return EACCES;
            it->second = perms;
            return 0;
        }
        int err = 0;
        node* n = get_node(w, c, path, perm_write | perm_owner, &err);
        if (!n)
            return err;
        // Unprivileged domains may not give their nodes away.
        if (!w.priv() && perms[0].dom != n->perms[0].dom)
            return EPERM;
        perms_t old = n->perms;
        n->perms = perms;
        touch(*n);
        if (c.tx)
            c.tx->log.push_back({op_kind::set_perms, path, {}, perms});
        // Watchers who lose access still hear about it (the old perms).
        fire(c, path, false, n, &old);
        return 0;
    }

    // ---- watches -----------------------------------------------------------

    bool watch_permitted(who w, const std::string& name, const node* n, const perms_t* old) {
        if (old && (perm_for(w, *old) & perm_read))
            return true;
        if (!n) {
            auto it = _tree.find(name);
            if (it == _tree.end())
                return false;
            n = &it->second;
        }
        if (perm_for(w, n->perms) & perm_read)
            return true;
        auto pit = _tree.find(parent_of(name));
        return pit != _tree.end() && (perm_for(w, pit->second.perms) & perm_read);
    }

    void fire(ctx& c, const std::string& name, bool exact, const node* n, const perms_t* old) {
        // Inside a transaction events are due only if it commits; the replay
        // on the live tree fires them then.
        if (c.tx)
            return;
        fire_live(name, exact, n, old);
    }

    void fire_live(const std::string& name, bool exact, const node* n, const perms_t* old) {
        bool special = !name.empty() && name[0] == '@';
        const perms_t* sp = nullptr;
        if (special) {
            auto it = _special.find(name);
            if (it == _special.end())
                return;
            sp = &it->second;
        }
        for (auto& [k, cn] : _conns) {
            who w{cn->dom};
            if (special ? !(perm_for(w, *sp) & perm_read) : !watch_permitted(w, name, n, old))
                continue;
            for (const auto& wt : cn->watches) {
                bool match = exact ? wt.node == name : (!special && is_child(name, wt.node)) || (special && wt.node == name);
                if (match)
                    send_event(*cn, wt, name);
            }
        }
    }

    void send_event(conn& cn, const watch& wt, const std::string& name) {
        std::string_view path = name;
        if (wt.relative) {
            std::string home = domain_path(cn.dom);
            if (path.compare(0, home.size(), home) == 0) {
                path.remove_prefix(home.size());
                if (!path.empty() && path[0] == '/')
                    path.remove_prefix(1);
            }
        }
        std::string body;
        body.append(path);
        body.push_back('\0');
        body.append(wt.token);
        body.push_back('\0');
        if (body.size() > XENSTORE_PAYLOAD_MAX)
            return; // as send_event(): never send over-long events
        xsd_sockmsg h{};
        h.type = XS_WATCH_EVENT;
        queue(cn, h, body.data(), uint32_t(body.size()));
    }

    // ---- output ------------------------------------------------------------

    void queue(conn& cn, xsd_sockmsg h, const char* data, uint32_t len) {
        h.len = len;
        cn.out.append(reinterpret_cast<const char*>(&h), sizeof(h));
        cn.out.append(data, len);
    }

    void reply(conn& cn, const xsd_sockmsg& req, uint32_t type, const std::string& body) {
        xsd_sockmsg h = req;
        if (body.size() > XENSTORE_PAYLOAD_MAX) {
            send_error(cn, req, E2BIG);
            return;
        }
        h.type = type;
        queue(cn, h, body.data(), uint32_t(body.size()));
    }

    void ack(conn& cn, const xsd_sockmsg& req) { reply(cn, req, req.type, std::string("OK", 3)); }

    void send_error(conn& cn, const xsd_sockmsg& req, int e) {
        xsd_sockmsg h = req;
        h.type = XS_ERROR;
        const char* s = errno_name(e);
        queue(cn, h, s, uint32_t(std::strlen(s) + 1));
    }

    void set_out_interest(conn& cn, bool want) {
        if (cn.want_out == want)
            return;
        epoll_event ev{};
        ev.events = want ? uint32_t(EPOLLIN | EPOLLOUT) : uint32_t(EPOLLIN);
        ev.data.u64 = cn.key;
        if (epoll_ctl(_ep, EPOLL_CTL_MOD, cn.fd, &ev) == 0)
            cn.want_out = want;
    }

    // Returns false if the connection died and was closed.
    bool flush(conn& cn) {
        while (cn.out_off < cn.out.size()) {
            ssize_t n = send(cn.fd, cn.out.data() + cn.out_off, cn.out.size() - cn.out_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                cn.out_off += size_t(n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            close_conn(cn.key);
            return false;
        }
        if (cn.out_off == cn.out.size()) {
            cn.out.clear();
            cn.out_off = 0;
        } else if (cn.out.size() - cn.out_off > max_out_bytes) {
            if (_rl_bad.allow())
                ZC_LOG(warn, tag, "dom%u: client not reading its replies, disconnecting", cn.dom);
            close_conn(cn.key);
            return false;
        }
        set_out_interest(cn, cn.out_off < cn.out.size());
        return true;
    }

    void flush_all() {
        std::vector<uint64_t> keys;
        for (auto& [k, cn] : _conns)
            if (cn->out_off < cn->out.size())
                keys.push_back(k);
        for (uint64_t k : keys) {
            auto it = _conns.find(k);
            if (it != _conns.end())
                flush(*it->second);
        }
    }

    void close_conn(uint64_t key) {
        auto it = _conns.find(key);
        if (it == _conns.end())
            return;
        // Deregister first: a forked child may hold a copy of the fd, which
        // would keep the epoll registration (and its events) alive.
        epoll_ctl(_ep, EPOLL_CTL_DEL, it->second->fd, nullptr);
        close(it->second->fd);
        _conns.erase(it);
    }

    // ---- input -------------------------------------------------------------

    void handle_input(conn& cn) {
        const uint64_t key = cn.key;
        // Bounded read: at most one chunk per wakeup, then every complete
        // message is processed, so `in` never holds more than a chunk plus
        // one partial message.
        size_t old = cn.in.size();
        cn.in.resize(old + 65536);
        ssize_t n;
        do {
            n = recv(cn.fd, cn.in.data() + old, 65536, MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            cn.in.resize(old);
            return;
        }
        if (n <= 0) {
            close_conn(key);
            return;
        }
        cn.in.resize(old + size_t(n));

        size_t off = 0;
        while (cn.in.size() - off >= sizeof(xsd_sockmsg)) {
            xsd_sockmsg h;
            std::memcpy(&h, cn.in.data() + off, sizeof(h));
            if (h.len > XENSTORE_PAYLOAD_MAX) {
                // As xenstored: the stream cannot be resynchronised.
                if (_rl_bad.allow())
                    ZC_LOG(warn, tag, "dom%u: message length %u > %u, disconnecting", cn.dom, h.len,
                           unsigned(XENSTORE_PAYLOAD_MAX));
                close_conn(key);
                return;
            }
            if (cn.in.size() - off < sizeof(h) + h.len)
                break;
            // Copy the payload out: processing may append to other
            // connections but never reallocates this one's input.
            std::vector<char> body(cn.in.begin() + long(off + sizeof(h)),
                                   cn.in.begin() + long(off + sizeof(h) + h.len));
            off += sizeof(h) + h.len;
            process(cn, h, body.data(), h.len);
        }
        cn.in.erase(cn.in.begin(), cn.in.begin() + long(off));
        flush_all();
    }

    txn* find_txn(conn& cn, uint32_t id) {
        auto it = cn.txns.find(id);
        return it == cn.txns.end() ? nullptr : it->second.get();
    }

    void process(conn& cn, const xsd_sockmsg& h, const char* body, uint32_t len) {
        who w{cn.dom};
        const uint32_t type = h.type;

        switch (type) {
        case XS_CONTROL:
        case XS_INTRODUCE:
        case XS_RELEASE:
        case XS_RESUME:
        case XS_SET_TARGET:
        case XS_IS_DOMAIN_INTRODUCED:
            // XS_FLAG_PRIV operations.
            if (!w.priv()) {
                send_error(cn, h, EACCES);
                return;
            }
            break;
        default: break;
        }

        // Transaction lookup, except for XS_FLAG_NOTID operations.
        txn* tx = nullptr;
        if (type != XS_WATCH && type != XS_UNWATCH && h.tx_id != 0) {
            tx = find_txn(cn, h.tx_id);
            if (!tx) {
                send_error(cn, h, ENOENT);
                return;
            }
        }
        ctx c{tx ? &tx->snap : &_tree, tx};

        int err = 0;
        switch (type) {
        case XS_READ: {
            const char* p = onearg(body, len);
            std::string out;
            err = p ? op_read(w, c, canonicalize(w, p), &out) : EINVAL;
            if (!err)
                reply(cn, h, type, out);
            break;
        }
        case XS_WRITE: {
            auto v = split_strings(body, len);
            if (v.empty()) {
                err = EINVAL;
                break;
            }
            size_t off = v[0].size() + 1;
            err = op_write(w, c, canonicalize(w, std::string(v[0])), std::string_view(body + off, len - off));
            if (!err)
                ack(cn, h);
            break;
        }
        case XS_MKDIR:
        case XS_RM: {
            const char* p = onearg(body, len);
            if (!p) {
                err = EINVAL;
                break;
            }
            std::string path = canonicalize(w, p);
            err = type == XS_MKDIR ? op_mkdir(w, c, path) : op_rm(w, c, path);
            if (!err)
                ack(cn, h);
            break;
        }
        case XS_DIRECTORY: {
            const char* p = onearg(body, len);
            node* n = p ? get_node(w, c, canonicalize(w, p), perm_read, &err) : nullptr;
            if (!p)
                err = EINVAL;
            if (!n)
                break;
            std::string out;
            for (const auto& ch : n->children) {
                out += ch;
                out.push_back('\0');
            }
            // Too big for one reply: libxenstore retries with DIRECTORY_PART.
            if (out.size() > XENSTORE_PAYLOAD_MAX)
                err = E2BIG;
            else
                reply(cn, h, type, out);
            break;
        }
        case XS_DIRECTORY_PART: {
            auto v = split_strings(body, len);
            unsigned offv = 0;
            if (v.size() != 2 || !parse_uint(std::string(v[1]).c_str(), UINT32_MAX, &offv)) {
                err = EINVAL;
                break;
            }
            node* n = get_node(w, c, canonicalize(w, std::string(v[0])), perm_read, &err);
            if (!n)
                break;
            std::string all;
            for (const auto& ch : n->children) {
                all += ch;
                all.push_back('\0');
            }
            std::string out = std::to_string(n->gen);
            out.push_back('\0');
            if (offv >= all.size()) {
                out.push_back('\0');
                reply(cn, h, type, out);
                break;
            }
            size_t maxlen = XENSTORE_PAYLOAD_MAX - out.size() - 1;
            size_t pos = offv, taken = 0;
            while (pos < all.size()) {
                size_t l = std::strlen(all.c_str() + pos);
                if (taken + l >= maxlen)
                    break;
                taken += l + 1;
                pos += l + 1;
            }
            out.append(all, offv, taken);
            if (offv + taken == all.size())
                out.push_back('\0'); // the empty string that ends the list
            reply(cn, h, type, out);
            break;
        }
        case XS_GET_PERMS: {
            const char* p = onearg(body, len);
            node* n = p ? get_node(w, c, canonicalize(w, p), perm_read, &err) : nullptr;
            if (!p)
                err = EINVAL;
            if (!n)
                break;
            std::string out;
            for (const auto& pm : n->perms) {
                out += perm_string(pm);
                out.push_back('\0');
            }
            reply(cn, h, type, out);
            break;
        }
        case XS_SET_PERMS: {
            auto v = split_strings(body, len);
            if (v.size() < 2) {
                err = EINVAL;
                break;
            }
            if (!w.priv() && v.size() - 1 > quota_perms_per_node) {
                err = ENOSPC;
                break;
            }
            perms_t perms(v.size() - 1);
            for (size_t i = 1; i < v.size() && !err; i++)
                if (!parse_perm(v[i], &perms[i - 1]))
                    err = EINVAL;
            if (err)
                break;
            std::string path(v[0]);
            if (path.empty() || path[0] != '@')
                path = canonicalize(w, path);
            err = op_set_perms(w, c, path, perms);
            if (!err)
                ack(cn, h);
            break;
        }
        case XS_WATCH: {
            auto v = split_strings(body, len);
            if (v.size() != 2) {
                err = EINVAL;
                break;
            }
            watch wt;
            std::string p(v[0]);
            if (!p.empty() && p[0] == '@') {
                if (!valid_special(p)) {
                    err = EINVAL;
                    break;
                }
                wt.relative = false;
                wt.node = p;
            } else {
                wt.relative = p.empty() || p[0] != '/';
                wt.node = canonicalize(w, p);
                if (!valid_nodename(w, wt.node)) {
                    err = EINVAL;
                    break;
                }
            }
            wt.token.assign(v[1]);
            for (const auto& o : cn.watches)
                if (o.node == wt.node && o.token == wt.token)
                    err = EEXIST;
            if (err)
                break;
            if (!w.priv() && cn.watches.size() >= quota_watches_per_conn) {
                err = E2BIG;
                break;
            }
            cn.watches.push_back(std::move(wt));
            ack(cn, h);
            // Fired once up front, as xenstored does ("simplifies clients").
            send_event(cn, cn.watches.back(), cn.watches.back().node);
            break;
        }
        case XS_UNWATCH: {
            auto v = split_strings(body, len);
            if (v.size() != 2) {
                err = EINVAL;
                break;
            }
            std::string node_path = canonicalize(w, std::string(v[0]));
            err = ENOENT;
            for (auto it = cn.watches.begin(); it != cn.watches.end(); ++it)
                if (it->node == node_path && it->token == v[1]) {
                    cn.watches.erase(it);
                    err = 0;
                    break;
                }
            if (!err)
                ack(cn, h);
            break;
        }
        case XS_TRANSACTION_START: {
            if (tx) {
                err = EBUSY;
                break;
            }
            if (cn.txns.size() >= quota_transactions_per_conn) {
                err = ENOSPC;
                break;
            }
            uint32_t id = cn.next_tx;
            while (id == 0 || cn.txns.count(id))
                id++;
            cn.next_tx = id + 1;
            auto t = std::make_unique<txn>();
            t->snap = _tree;
            cn.txns.emplace(id, std::move(t));
            std::string out = std::to_string(id);
            out.push_back('\0');
            reply(cn, h, type, out);
            break;
        }
        case XS_TRANSACTION_END: {
            const char* a = onearg(body, len);
            if (!a || (std::strcmp(a, "T") != 0 && std::strcmp(a, "F") != 0)) {
                err = EINVAL;
                break;
            }
            if (!tx) {
                err = ENOENT;
                break;
            }
            std::unique_ptr<txn> owned = std::move(cn.txns[h.tx_id]);
            cn.txns.erase(h.tx_id);
            if (a[0] == 'T')
                err = commit(w, *owned);
            if (!err)
                ack(cn, h);
            break;
        }
        case XS_GET_DOMAIN_PATH: {
            const char* a = onearg(body, len);
            unsigned d = 0;
            if (!a || !parse_domid(a, &d)) {
                err = EINVAL;
                break;
            }
            std::string out = domain_path(d);
            out.push_back('\0');
            reply(cn, h, type, out);
            break;
        }
        case XS_IS_DOMAIN_INTRODUCED: {
            const char* a = onearg(body, len);
            unsigned d = 0;
            if (!a || !parse_domid(a, &d)) {
                err = EINVAL;
                break;
            }
            bool yes = d == domid_self || _domains.count(uint16_t(d));
            reply(cn, h, type, std::string(yes ? "T" : "F", 2));
            break;
        }
        case XS_RESET_WATCHES:
            cn.watches.clear();
            cn.txns.clear();
            ack(cn, h);
            break;
        default:
            // Unknown, removed, daemon-to-client (WATCH_EVENT, ERROR) and
            // toolstack operations this emulation does not provide.
            err = ENOSYS;
            break;
        }
        if (err)
            send_error(cn, h, err);
    }

    int commit(who w, txn& t) {
        for (const auto& [path, gen] : t.accessed) {
            auto it = _tree.find(path);
            uint64_t now = it == _tree.end() ? 0 : it->second.gen;
            if (now != gen)
                return EAGAIN;
        }
        // Every node the operations looked at is as they saw it, so the
        // replay takes the same decisions and cannot fail.
        ctx live{&_tree, nullptr};
        for (const auto& op : t.log) {
            int e = 0;
            switch (op.kind) {
            case op_kind::write: e = op_write(w, live, op.path, op.value); break;
            case op_kind::mkdir: e = op_mkdir(w, live, op.path); break;
            case op_kind::rm: e = op_rm(w, live, op.path); break;
            case op_kind::set_perms: e = op_set_perms(w, live, op.path, op.perms); break;
            }
            if (e)
                ZC_LOG(error, tag, "transaction replay of %s failed: %s", op.path.c_str(), errno_name(e));
        }
        return 0;
    }

    // ---- daemon loop -------------------------------------------------------

    void accept_on(uint16_t dom, int lfd) {
        for (int i = 0; i < 16; i++) {
            int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                return;
            size_t n = 0;
            for (auto& [k, cn] : _conns)
                n += cn->dom == dom;
            if (n >= max_conns_per_domain) {
                if (_rl_bad.allow())
                    ZC_LOG(warn, tag, "dom%u: too many connections", dom);
                close(fd);
                continue;
            }
            auto cn = std::make_unique<conn>();
            cn->key = _next_key++;
            cn->fd = fd;
            cn->dom = dom;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = cn->key;
            if (epoll_ctl(_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                close(fd);
                continue;
            }
            _conns.emplace(cn->key, std::move(cn));
        }
    }

    void run() {
        epoll_event evs[32];
        for (;;) {
            int n = epoll_wait(_ep, evs, 32, -1);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                ZC_LOG(error, tag, "epoll_wait: %s", std::strerror(errno));
                return;
            }
            std::lock_guard<std::mutex> g(_mu);
            if (_stopping)
                return;
            for (int i = 0; i < n; i++) {
                uint64_t key = evs[i].data.u64;
                if (key == 0) {
                    uint64_t v;
                    (void)!::read(_evfd, &v, sizeof(v));
                    continue;
                }
                // Keys are never reused, so a stale event for a connection
                // closed earlier in this batch finds nothing.
                if (auto lit = _listener_keys.find(key); lit != _listener_keys.end()) {
                    auto d = _domains.find(lit->second);
                    if (d != _domains.end())
                        accept_on(d->first, d->second.listen_fd);
                    continue;
                }
                auto cit = _conns.find(key);
                if (cit == _conns.end())
                    continue;
                conn& cn = *cit->second;
                if (evs[i].events & EPOLLOUT) {
                    if (!flush(cn))
                        continue;
                }
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    handle_input(cn);
            }
        }
    }

    void close_domain_locked(uint16_t dom) {
        auto it = _domains.find(dom);
        if (it == _domains.end())
            return;
        epoll_ctl(_ep, EPOLL_CTL_DEL, it->second.listen_fd, nullptr);
        close(it->second.listen_fd);
        unlink(it->second.sock_path.c_str());
        _listener_keys.erase(it->second.key);
        std::vector<uint64_t> keys;
        for (auto& [k, cn] : _conns)
            if (cn->dom == dom)
                keys.push_back(k);
        for (uint64_t k : keys)
            close_conn(k);
        _domains.erase(it);
    }
};

xenstored::xenstored() : _p(std::make_unique<impl>()) {}

xenstored::~xenstored() { stop(); }

int xenstored::start() noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    if (_p->_init_err)
        return _p->_init_err;
    if (_p->_thr.joinable() || _p->_stopped)
        return -EALREADY;
    try {
        _p->_thr = std::thread([p = _p.get()] { p->run(); });
    } catch (...) {
        return -EAGAIN;
    }
    return 0;
}

void xenstored::stop() noexcept {
    {
        std::lock_guard<std::mutex> g(_p->_mu);
        if (_p->_stopped)
            return;
        _p->_stopping = true;
        _p->_stopped = true;
        if (_p->_evfd >= 0) {
            uint64_t one = 1;
            (void)!::write(_p->_evfd, &one, sizeof(one));
        }
    }
    if (_p->_thr.joinable())
        _p->_thr.join();
    std::lock_guard<std::mutex> g(_p->_mu);
    std::vector<uint16_t> doms;
    for (auto& [d, r] : _p->_domains)
        doms.push_back(d);
    for (uint16_t d : doms)
        _p->close_domain_locked(d);
    std::vector<uint64_t> keys;
    for (auto& [k, c] : _p->_conns)
        keys.push_back(k);
    for (uint64_t k : keys)
        _p->close_conn(k);
}

int xenstored::add_domain(uint16_t dom, const std::string& sock_path, const std::string& name) noexcept {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (sock_path.empty() || sock_path.size() >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    if (dom >= domid_self) // DOMID_FIRST_RESERVED and above
        return -EINVAL;
    std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);

    std::lock_guard<std::mutex> g(_p->_mu);
    if (_p->_init_err)
        return _p->_init_err;
    if (_p->_stopped)
        return -ESHUTDOWN;
    if (_p->_domains.count(dom))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(sock_path.c_str()); // a stale socket from an earlier run
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd, 64) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint64_t key = _p->_next_key++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (epoll_ctl(_p->_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = -errno;
        close(fd);
        unlink(sock_path.c_str());
        return e;
    }
    _p->_domains[dom] = domain_rec{dom, key, fd, sock_path};
    _p->_listener_keys[key] = dom;

    // What a toolstack writes at domain creation: the home directory owned
    // by the guest (others: none; dom0 is privileged anyway).
    who tool{0};
    ctx live{&_p->_tree, nullptr};
    std::string home = domain_path(dom);
    int e = _p->op_mkdir(tool, live, home);
    if (!e)
        e = _p->op_set_perms(tool, live, home, {{dom, perm_none}});
    if (!e)
        e = _p->op_write(tool, live, home + "/domid", std::to_string(dom));
    if (!e)
        e = _p->op_write(tool, live, home + "/name", name);
    if (e) {
        _p->close_domain_locked(dom);
        return -e;
    }
    _p->fire_live("@introduceDomain", false, nullptr, nullptr);
    _p->flush_all();
    return 0;
}

void xenstored::remove_domain(uint16_t dom) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    if (!_p->_domains.count(dom))
        return;
    _p->close_domain_locked(dom);
    ctx live{&_p->_tree, nullptr};
    (void)_p->op_rm(who{0}, live, domain_path(dom));
    _p->fire_live("@releaseDomain", false, nullptr, nullptr);
    _p->flush_all();
}

int xenstored::write(const std::string& path, const std::string& value) noexcept {
    if (value.size() > XENSTORE_PAYLOAD_MAX)
        return -E2BIG;
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    int e = _p->op_write(who{0}, live, canonicalize(who{0}, path), value);
    _p->flush_all();
    return -e;
}

result<std::string> xenstored::read(const std::string& path) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    std::string out;
    int e = _p->op_read(who{0}, live, canonicalize(who{0}, path), &out);
    if (e)
        return err(-e);
    return out;
}

int xenstored::rm(const std::string& path) noexcept {
    std::lock_guard<std::mutex> g(_p->_mu);
    ctx live{&_p->_tree, nullptr};
    int e = _p->op_rm(who{0}, live, canonicalize(who{0}, path));
    _p->flush_all();
    return -e;
}

} // namespace zc::hv::emu
