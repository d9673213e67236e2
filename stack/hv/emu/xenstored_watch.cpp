// SPDX-License-Identifier: MIT
// The emulated xenstored's watches and what it queues for clients: which
// connections hear about a change (fire_watches, watch_permitted), the
// XS_WATCH_EVENT messages (send_event), and the framing of replies and
// XS_ERROR messages they share. Overview and threading: xenstored_impl.hpp.
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <string>
#include <string_view>

#include "hv/emu/xenstored_impl.hpp"

namespace zc::hv::emu::xsd {

const char* errno_name(int e) noexcept {
    for (const auto& x : xsd_errors)
        if (x.errnum == e)
            return x.errstring;
    return "EINVAL";
}

} // namespace zc::hv::emu::xsd

namespace zc::hv::emu {

namespace {

bool is_child(const std::string& child, const std::string& parent) noexcept {
    if (parent == "/")
        return true;
    if (child.compare(0, parent.size(), parent) != 0)
        return false;
    return child.size() == parent.size() || child[parent.size()] == '/';
}

} // namespace

bool xenstored::impl::watch_permitted(who w, const std::string& name, const node* n, const perms_t* old) {
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

void xenstored::impl::fire(ctx& c, const std::string& name, bool exact, const node* n, const perms_t* old) {
    // Inside a transaction events are due only if it commits; the replay
    // on the live tree fires them then.
    if (c.tx)
        return;
    fire_live(name, exact, n, old);
}

void xenstored::impl::fire_live(const std::string& name, bool exact, const node* n, const perms_t* old) {
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

void xenstored::impl::send_event(conn& cn, const watch& wt, const std::string& name) {
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

// ---- replies ----------------------------------------------------------------

void xenstored::impl::queue(conn& cn, xsd_sockmsg h, const char* data, uint32_t len) {
    h.len = len;
    cn.out.append(reinterpret_cast<const char*>(&h), sizeof(h));
    cn.out.append(data, len);
}

void xenstored::impl::reply(conn& cn, const xsd_sockmsg& req, uint32_t type, const std::string& body) {
    xsd_sockmsg h = req;
    if (body.size() > XENSTORE_PAYLOAD_MAX) {
        send_error(cn, req, E2BIG);
        return;
    }
    h.type = type;
    queue(cn, h, body.data(), uint32_t(body.size()));
}

void xenstored::impl::send_error(conn& cn, const xsd_sockmsg& req, int e) {
    xsd_sockmsg h = req;
    h.type = XS_ERROR;
    const char* s = errno_name(e);
    queue(cn, h, s, uint32_t(std::strlen(s) + 1));
}

} // namespace zc::hv::emu
