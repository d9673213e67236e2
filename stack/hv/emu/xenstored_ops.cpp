// SPDX-License-Identifier: MIT
// The emulated xenstored's message handling: payload parsing and process(),
// which checks privilege and the transaction and handles each message type.
// Overview and threading: xenstored_impl.hpp.
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hv/emu/xenstored_impl.hpp"

namespace zc::hv::emu {

namespace {

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

txn* find_txn(conn& cn, uint32_t id) {
    auto it = cn.txns.find(id);
    return it == cn.txns.end() ? nullptr : it->second.get();
}

} // namespace

void xenstored::impl::process(conn& cn, const xsd_sockmsg& h, const char* body, uint32_t len) {
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

} // namespace zc::hv::emu
