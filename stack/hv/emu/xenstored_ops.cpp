// SPDX-License-Identifier: MIT
// The emulated xenstored's message handling: one handler per xenstore
// message type (do_read, do_write, ... as in Xen's xenstored_core.c), the
// wire_funcs[] table that maps each type to its handler and flags, and
// process(), which checks privilege and the transaction and dispatches.
// Overview and threading: xenstored_impl.hpp.
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hv/emu/xenstored_impl.hpp"

namespace zc::hv::emu {

namespace {

// ---- payload parsing --------------------------------------------------------

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

// The child names of `n`, each NUL-terminated, in creation order.
std::string child_list(const node& n) {
    std::string out;
    for (const auto& ch : n.children) {
        out += ch;
        out.push_back('\0');
    }
    return out;
}

txn* find_txn(conn& cn, uint32_t id) {
    auto it = cn.txns.find(id);
    return it == cn.txns.end() ? nullptr : it->second.get();
}

// ---- handlers ---------------------------------------------------------------

// One message being handled: its connection, sender, payload and where it
// applies (the transaction named by its tx_id, else the live tree).
struct xs_request {
    xenstored::impl& d;
    conn& cn;
    const xsd_sockmsg& h;
    const char* body;
    uint32_t len;
    who w;
    txn* tx;
    ctx c;

    void reply(const std::string& out) { d.reply(cn, h, h.type, out); }
    // Acknowledge with "OK" unless `err`; returns `err`.
    int ack_unless(int err) {
        if (!err)
            d.ack(cn, h);
        return err;
    }
};

// A handler queues its reply and returns 0, or returns the errno that
// process() reports in an XS_ERROR reply.
using handler = int (*)(xs_request&);

int do_read(xs_request& r) {
    const char* p = onearg(r.body, r.len);
    std::string out;
    int err = p ? r.d.op_read(r.w, r.c, canonicalize(r.w, p), &out) : EINVAL;
    if (!err)
        r.reply(out);
    return err;
}

int do_write(xs_request& r) {
    auto v = split_strings(r.body, r.len);
    if (v.empty())
        return EINVAL;
    size_t off = v[0].size() + 1;
    return r.ack_unless(r.d.op_write(r.w, r.c, canonicalize(r.w, std::string(v[0])),
                                     std::string_view(r.body + off, r.len - off)));
}

int do_mkdir(xs_request& r) {
    const char* p = onearg(r.body, r.len);
    if (!p)
        return EINVAL;
    return r.ack_unless(r.d.op_mkdir(r.w, r.c, canonicalize(r.w, p)));
}

int do_rm(xs_request& r) {
    const char* p = onearg(r.body, r.len);
    if (!p)
        return EINVAL;
    return r.ack_unless(r.d.op_rm(r.w, r.c, canonicalize(r.w, p)));
}

// The node a one-string payload names, if the caller may read it; else
// nullptr with the errno in *err.
node* node_to_read(xs_request& r, int* err) {
    const char* p = onearg(r.body, r.len);
    if (!p) {
        *err = EINVAL;
        return nullptr;
    }
    return r.d.get_node(r.w, r.c, canonicalize(r.w, p), perm_read, err);
}

int do_directory(xs_request& r) {
    int err = 0;
    node* n = node_to_read(r, &err);
    if (!n)
        return err;
    std::string out = child_list(*n);
    // Too big for one reply: libxenstore retries with DIRECTORY_PART.
    if (out.size() > XENSTORE_PAYLOAD_MAX)
        return E2BIG;
    r.reply(out);
    return 0;
}

// send_directory_part(): the node's generation, then as many whole names
// from byte offset `offv` of the child list as fit, then an empty name if
// the list is complete.
int do_directory_part(xs_request& r) {
    auto v = split_strings(r.body, r.len);
    unsigned offv = 0;
    if (v.size() != 2 || !parse_uint(std::string(v[1]).c_str(), UINT32_MAX, &offv))
        return EINVAL;
    int err = 0;
    node* n = r.d.get_node(r.w, r.c, canonicalize(r.w, std::string(v[0])), perm_read, &err);
    if (!n)
        return err;
    std::string all = child_list(*n);
    std::string out = std::to_string(n->gen);
    out.push_back('\0');
    if (offv >= all.size()) {
        out.push_back('\0');
        r.reply(out);
        return 0;
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
    r.reply(out);
    return 0;
}

int do_get_perms(xs_request& r) {
    int err = 0;
    node* n = node_to_read(r, &err);
    if (!n)
        return err;
    std::string out;
    for (const auto& pm : n->perms) {
        out += perm_string(pm);
        out.push_back('\0');
    }
    r.reply(out);
    return 0;
}

int do_set_perms(xs_request& r) {
    auto v = split_strings(r.body, r.len);
    if (v.size() < 2)
        return EINVAL;
    if (!r.w.priv() && v.size() - 1 > quota_perms_per_node)
        return ENOSPC;
    perms_t perms(v.size() - 1);
    for (size_t i = 1; i < v.size(); i++)
        if (!parse_perm(v[i], &perms[i - 1]))
            return EINVAL;
    std::string path(v[0]);
    if (path.empty() || path[0] != '@')
        path = canonicalize(r.w, path);
    return r.ack_unless(r.d.op_set_perms(r.w, r.c, path, perms));
}

// The node a watch on `p` is set on: a special path as is, else the
// canonical path (relative paths make events report relative paths).
int watch_node(who w, const std::string& p, watch* wt) {
    if (!p.empty() && p[0] == '@') {
        if (!valid_special(p))
            return EINVAL;
        wt->relative = false;
        wt->node = p;
        return 0;
    }
    wt->relative = p.empty() || p[0] != '/';
    wt->node = canonicalize(w, p);
    return valid_nodename(w, wt->node) ? 0 : EINVAL;
}

int do_watch(xs_request& r) {
    auto v = split_strings(r.body, r.len);
    if (v.size() != 2)
        return EINVAL;
    watch wt;
    if (int err = watch_node(r.w, std::string(v[0]), &wt))
        return err;
    wt.token.assign(v[1]);
    for (const auto& o : r.cn.watches)
        if (o.node == wt.node && o.token == wt.token)
            return EEXIST;
    if (!r.w.priv() && r.cn.watches.size() >= quota_watches_per_conn)
        return E2BIG;
    r.cn.watches.push_back(std::move(wt));
    r.d.ack(r.cn, r.h);
    // Fired once up front, as xenstored does ("simplifies clients").
    r.d.send_event(r.cn, r.cn.watches.back(), r.cn.watches.back().node);
    return 0;
}

int do_unwatch(xs_request& r) {
    auto v = split_strings(r.body, r.len);
    if (v.size() != 2)
        return EINVAL;
    std::string node_path = canonicalize(r.w, std::string(v[0]));
    for (auto it = r.cn.watches.begin(); it != r.cn.watches.end(); ++it)
        if (it->node == node_path && it->token == v[1]) {
            r.cn.watches.erase(it);
            return r.ack_unless(0);
        }
    return ENOENT;
}

int do_transaction_start(xs_request& r) {
    if (r.tx)
        return EBUSY;
    conn& cn = r.cn;
    if (cn.txns.size() >= quota_transactions_per_conn)
        return ENOSPC;
    uint32_t id = cn.next_tx;
    while (id == 0 || cn.txns.count(id))
        id++;
    cn.next_tx = id + 1;
    auto t = std::make_unique<txn>();
    t->snap = r.d._tree;
    cn.txns.emplace(id, std::move(t));
    std::string out = std::to_string(id);
    out.push_back('\0');
    r.reply(out);
    return 0;
}

int do_transaction_end(xs_request& r) {
    const char* a = onearg(r.body, r.len);
    if (!a || (std::strcmp(a, "T") != 0 && std::strcmp(a, "F") != 0))
        return EINVAL;
    if (!r.tx)
        return ENOENT;
    std::unique_ptr<txn> owned = std::move(r.cn.txns[r.h.tx_id]);
    r.cn.txns.erase(r.h.tx_id);
    int err = a[0] == 'T' ? r.d.commit(r.w, *owned) : 0;
    return r.ack_unless(err);
}

int do_get_domain_path(xs_request& r) {
    const char* a = onearg(r.body, r.len);
    unsigned d = 0;
    if (!a || !parse_domid(a, &d))
        return EINVAL;
    std::string out = domain_path(d);
    out.push_back('\0');
    r.reply(out);
    return 0;
}

int do_is_domain_introduced(xs_request& r) {
    const char* a = onearg(r.body, r.len);
    unsigned d = 0;
    if (!a || !parse_domid(a, &d))
        return EINVAL;
    bool yes = d == domid_self || r.d._domains.count(uint16_t(d));
    r.reply(std::string(yes ? "T" : "F", 2));
    return 0;
}

int do_reset_watches(xs_request& r) {
    r.cn.watches.clear();
    r.cn.txns.clear();
    return r.ack_unless(0);
}

// ---- dispatch ---------------------------------------------------------------

// Per-type flags, as in xenstored_core.c.
constexpr unsigned flag_priv = 0x1;  // XS_FLAG_PRIV: dom0 only
constexpr unsigned flag_notid = 0x2; // XS_FLAG_NOTID: tx_id is ignored

struct wire_func {
    uint32_t type; // its index in wire_funcs[]
    handler func;  // null: ENOSYS
    unsigned flags;
};

// Types without a handler: daemon-to-client messages (WATCH_EVENT, ERROR),
// the removed XS_RESTRICT, and toolstack operations this emulation does not
// provide (domains are introduced through the xenstored API instead).
constexpr wire_func wire_funcs[] = {
    {XS_CONTROL, nullptr, flag_priv},
    {XS_DIRECTORY, do_directory, 0},
    {XS_READ, do_read, 0},
    {XS_GET_PERMS, do_get_perms, 0},
    {XS_WATCH, do_watch, flag_notid},
    {XS_UNWATCH, do_unwatch, flag_notid},
    {XS_TRANSACTION_START, do_transaction_start, 0},
    {XS_TRANSACTION_END, do_transaction_end, 0},
    {XS_INTRODUCE, nullptr, flag_priv},
    {XS_RELEASE, nullptr, flag_priv},
    {XS_GET_DOMAIN_PATH, do_get_domain_path, 0},
    {XS_WRITE, do_write, 0},
    {XS_MKDIR, do_mkdir, 0},
    {XS_RM, do_rm, 0},
    {XS_SET_PERMS, do_set_perms, 0},
    {XS_WATCH_EVENT, nullptr, 0},
    {XS_ERROR, nullptr, 0},
    {XS_IS_DOMAIN_INTRODUCED, do_is_domain_introduced, flag_priv},
    {XS_RESUME, nullptr, flag_priv},
    {XS_SET_TARGET, nullptr, flag_priv},
    {XS_SET_TARGET + 1, nullptr, 0}, // XS_RESTRICT, removed
    {XS_RESET_WATCHES, do_reset_watches, 0},
    {XS_DIRECTORY_PART, do_directory_part, 0},
};

consteval bool wire_funcs_indexed_by_type() {
    for (size_t i = 0; i < std::size(wire_funcs); i++)
        if (wire_funcs[i].type != i)
            return false;
    return std::size(wire_funcs) == XS_TYPE_COUNT;
}
static_assert(wire_funcs_indexed_by_type());

} // namespace

void xenstored::impl::process(conn& cn, const xsd_sockmsg& h, const char* body, uint32_t len) {
    who w{cn.dom};
    // Types past the table have no flags and no handler.
    const wire_func* wf = h.type < std::size(wire_funcs) ? &wire_funcs[h.type] : nullptr;
    const unsigned flags = wf ? wf->flags : 0;
    if ((flags & flag_priv) && !w.priv()) {
        send_error(cn, h, EACCES);
        return;
    }
    // Transaction lookup, except for XS_FLAG_NOTID operations.
    txn* tx = nullptr;
    if (!(flags & flag_notid) && h.tx_id != 0) {
        tx = find_txn(cn, h.tx_id);
        if (!tx) {
            send_error(cn, h, ENOENT);
            return;
        }
    }
    xs_request r{*this, cn, h, body, len, w, tx, ctx{tx ? &tx->snap : &_tree, tx}};
    int err = wf && wf->func ? wf->func(r) : ENOSYS;
    if (err)
        send_error(cn, h, err);
}

} // namespace zc::hv::emu
