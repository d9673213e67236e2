// SPDX-License-Identifier: MIT
// Private to the emulated xenstored: the types (nodes, connections,
// transactions, watches), limits and helpers its source files share, and the
// xenstored::impl struct they implement between them:
//   xenstored_tree.cpp   nodes, permissions, quotas, transactions
//   xenstored_watch.cpp  watches, events and the replies queued for clients
//   xenstored_ops.cpp    one handler per message type and their dispatch
//   xenstored.cpp        the daemon: sockets, epoll loop, connections, domains
//
// Behaviour follows Xen's C xenstored
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
#pragma once

#include <cstddef>
#include <cstdint>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <xen/io/xs_wire.h>

#include "common/log.hpp"
#include "hv/emu/xenstored.hpp"

namespace zc::hv::emu::xsd {

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

// Paths and permissions (xenstored_tree.cpp).
unsigned perm_for(who w, const perms_t& p) noexcept;
std::string parent_of(const std::string& path);
std::string domain_path(unsigned dom);
bool valid_nodename(who w, const std::string& p) noexcept;
bool valid_special(const std::string& p) noexcept;
std::string canonicalize(who w, const std::string& p);
// The xsd_errors[] name of errno `e` (xenstored_watch.cpp).
const char* errno_name(int e) noexcept;

} // namespace zc::hv::emu::xsd

namespace zc::hv::emu {

// The xenstored source files all work in terms of the types above.
using namespace xsd;

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

    impl();
    ~impl();

    // ---- tree access (xenstored_tree.cpp) -----------------------------------

    node* lookup(ctx& c, const std::string& path);
    void touch(node& n) { n.gen = ++_gen; }
    // get_node(): the node if `w` has all of `perm` on it; else EINVAL,
    // EACCES or ENOENT, never revealing existence to someone who could not
    // have seen it.
    node* get_node(who w, ctx& c, const std::string& path, unsigned perm, int* err);
    size_t owned_by(const tree& t, uint16_t dom) const;
    node* create(who w, ctx& c, const std::string& path, std::string value, int* err);

    // Operations (return 0 or a positive errno, as xenstored).
    int op_read(who w, ctx& c, const std::string& path, std::string* out);
    int op_write(who w, ctx& c, const std::string& path, std::string_view value);
    int op_mkdir(who w, ctx& c, const std::string& path);
    int op_rm(who w, ctx& c, const std::string& path);
    int op_set_perms(who w, ctx& c, const std::string& path, const perms_t& perms);
    int commit(who w, txn& t);

    // ---- watches and output (xenstored_watch.cpp) ---------------------------

    bool watch_permitted(who w, const std::string& name, const node* n, const perms_t* old);
    void fire(ctx& c, const std::string& name, bool exact, const node* n, const perms_t* old);
    void fire_live(const std::string& name, bool exact, const node* n, const perms_t* old);
    void send_event(conn& cn, const watch& wt, const std::string& name);
    void queue(conn& cn, xsd_sockmsg h, const char* data, uint32_t len);
    void reply(conn& cn, const xsd_sockmsg& req, uint32_t type, const std::string& body);
    void ack(conn& cn, const xsd_sockmsg& req) { reply(cn, req, req.type, std::string("OK", 3)); }
    void send_error(conn& cn, const xsd_sockmsg& req, int e);

    // ---- messages (xenstored_ops.cpp) ---------------------------------------

    void process(conn& cn, const xsd_sockmsg& h, const char* body, uint32_t len);

    // ---- daemon (xenstored.cpp) ---------------------------------------------

    void set_out_interest(conn& cn, bool want);
    // Returns false if the connection died and was closed.
    bool flush(conn& cn);
    void flush_all();
    void close_conn(uint64_t key);
    void handle_input(conn& cn);
    void accept_on(uint16_t dom, int lfd);
    void run();
    void close_domain_locked(uint16_t dom);
};

} // namespace zc::hv::emu
