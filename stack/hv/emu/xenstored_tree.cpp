// SPDX-License-Identifier: MIT
// The emulated xenstored's tree: path validation and permissions
// (perm_for_conn, is_valid_nodename, errno_from_parents), node creation with
// its quota (construct_node), the read/write/mkdir/rm/set_perms operations on
// the live tree or a transaction's copy, and the commit that replays a
// transaction on the live tree (finalize_transaction). Overview and
// threading: xenstored_impl.hpp.
#include <cerrno>
#include <cstdint>

#include <string>
#include <string_view>
#include <vector>

#include "common/log.hpp"
#include "hv/emu/xenstored_impl.hpp"

namespace zc::hv::emu::xsd {

namespace {

bool valid_chars(std::string_view s) noexcept {
    for (char c : s) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '/' || c == '_' || c == '@';
        if (!ok)
            return false;
    }
    return true;
}

} // namespace

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

std::string domain_path(unsigned dom) { return "/local/domain/" + std::to_string(dom); }

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

std::string canonicalize(who w, const std::string& p) {
    if (p.empty() || p[0] == '/' || p[0] == '@')
        return p;
    return domain_path(w.dom) + "/" + p;
}

} // namespace zc::hv::emu::xsd

namespace zc::hv::emu {

namespace {

std::string basename_of(const std::string& path) { return path.substr(path.rfind('/') + 1); }

} // namespace

node* xenstored::impl::lookup(ctx& c, const std::string& path) {
    auto it = c.t->find(path);
    node* n = it == c.t->end() ? nullptr : &it->second;
    if (c.tx)
        c.tx->accessed.emplace(path, n ? n->gen : 0);
    return n;
}

node* xenstored::impl::get_node(who w, ctx& c, const std::string& path, unsigned perm, int* err) {
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

size_t xenstored::impl::owned_by(const tree& t, uint16_t dom) const {
    size_t n = 0;
    for (const auto& [k, v] : t)
        if (!v.perms.empty() && v.perms[0].dom == dom)
            n++;
    return n;
}

// create_node()/construct_node(): make `path` and any missing ancestors.
// Permission was checked on the nearest existing ancestor by get_node().
node* xenstored::impl::create(who w, ctx& c, const std::string& path, std::string value, int* err) {
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

// ---- operations (return 0 or a positive errno, as xenstored) ----------------

int xenstored::impl::op_read(who w, ctx& c, const std::string& path, std::string* out) {
    int err = 0;
    node* n = get_node(w, c, path, perm_read, &err);
    if (!n)
        return err;
    *out = n->value;
    return 0;
}

int xenstored::impl::op_write(who w, ctx& c, const std::string& path, std::string_view value) {
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

int xenstored::impl::op_mkdir(who w, ctx& c, const std::string& path) {
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

int xenstored::impl::op_rm(who w, ctx& c, const std::string& path) {
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

int xenstored::impl::op_set_perms(who w, ctx& c, const std::string& path, const perms_t& perms) {
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

int xenstored::impl::commit(who w, txn& t) {
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

} // namespace zc::hv::emu
