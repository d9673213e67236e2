// SPDX-License-Identifier: MIT
// The lifetime of a client's views of other domains (client.hpp, "Lifetime
// of the views"; docs/ARCHITECTURE.md, "The emulated hypervisor: lifetime
// of views").
//
// Xen frees a domain's struct once it is dead, its last reference (a grant
// mapping, put_domain) is gone and an RCU grace period has passed
// (rcu_lock_domain_by_id readers). Here:
//   - a view is *retired* when its domain is found dead or re-created
//     (sweep, or a fetch that finds a newer generation): it leaves
//     _cur/_ev_cur, so no read section that begins afterwards can find it;
//   - it is *freed* by reap() once its holds (grant mappings) are 0 and
//     no read section is open: every section that could have found it has
//     ended. The check is the store (leaving _cur) then load (_readers) of
//     the reaper against the increment (_readers) then load (_cur) of a
//     reader, all seq_cst: either the reaper sees the reader counted, or
//     the reader does not see the view.
//   - when the reap finds a section open, the last section to close reaps
//     (read_section's destructor), so nothing waits and nothing is left.
// A dead generation's handle eventfds, and those of a live domain's handles
// that no port is bound to any more, are closed by the same reap: they are
// used only inside read sections (notify).
#include <algorithm>
#include <unordered_map>
#include <vector>
#include <unistd.h>

#include "hv/emu/client.hpp"

namespace zc::hv::emu {

bool client::current(const domain_view& v) const noexcept {
    const registry_slot& s = _registry[v.dom];
    return s.state.load(std::memory_order_acquire) == dom_alive &&
           s.generation.load(std::memory_order_acquire) == v.generation;
}

void client::hold(const domain_view* v) noexcept {
    if (v != &_self) static_cast<const kept_view*>(v)->holds.fetch_add(1, std::memory_order_relaxed);
}

void client::unhold(const domain_view* v) noexcept {
    if (v == &_self) return;
    // acq_rel: the caller's last use of the view (its unpin) happens before
    // a reaper that sees 0 frees it.
    if (static_cast<const kept_view*>(v)->holds.fetch_sub(1, std::memory_order_acq_rel) == 1 && !current(*v))
        sweep();
}

result<const domain_view*> client::install_view(std::unique_ptr<kept_view> v) noexcept {
    const domid_t d = v->dom;
    std::lock_guard<std::mutex> g(_views_lock);
    auto& cache = v->evtchn_only ? _ev_cur : _cur;
    kept_view* old = cache[d].load(std::memory_order_relaxed);
    kept_view* full = _cur[d].load(std::memory_order_relaxed);
    // Another thread raced us to the same generation, or past it.
    const kept_view* keep = full && full->generation == v->generation ? full : old;
    if (keep && keep->generation >= v->generation) {
        const uint32_t gen = v->generation;
        unmap_view(*v);
        if (keep->generation != gen) return err(-ESRCH); // ours died meanwhile
        return static_cast<const domain_view*>(keep);
    }
    if (old) {
        auto it = std::find_if(_live.begin(), _live.end(), [old](const auto& p) { return p.get() == old; });
        if (it != _live.end()) retire_locked(size_t(it - _live.begin()));
    }
    kept_view* p = v.get();
    _live.push_back(std::move(v));
    cache[d].store(p, std::memory_order_seq_cst);
    if (old) reap_locked();
    return static_cast<const domain_view*>(p);
}

void client::retire_locked(size_t i) noexcept {
    kept_view* v = _live[i].get();
    auto& cache = v->evtchn_only ? _ev_cur : _cur;
    kept_view* expected = v;
    cache[v->dom].compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst);
    _retired.push_back(std::move(_live[i]));
    _live[i] = std::move(_live.back());
    _live.pop_back();
}

void client::sweep() noexcept {
    std::lock_guard<std::mutex> g(_views_lock);
    for (size_t i = 0; i < _live.size();) {
        if (current(*_live[i])) ++i;
        else retire_locked(i);
    }
    reap_locked();
}

void client::reap() noexcept {
    std::lock_guard<std::mutex> g(_views_lock);
    reap_locked();
}

void client::reap_locked() noexcept {
    if (_readers.load(std::memory_order_seq_cst) != 0) {
        // The last section to close comes back here.
        _reap_pending.store(true, std::memory_order_relaxed);
        return;
    }
    _reap_pending.store(false, std::memory_order_relaxed);
    std::erase_if(_retired, [](std::unique_ptr<kept_view>& v) {
        if (v->holds.load(std::memory_order_acquire) != 0) return false; // unhold sweeps again
        unmap_view(*v);
        return true;
    });
    // Handle eventfds of generations that are no longer the live one, and
    // of a live domain's handles that no port of it is bound to any more
    // (the process that had it closed it: a frontend restarted in a new
    // process). A notify that needs one again asks the broker.
    std::unordered_map<domid_t, std::vector<bool>> bound; // handles with a port, per domain
    std::erase_if(_handle_fds, [&](const auto& kv) {
        const auto gen = uint32_t(kv.first >> 32);
        const auto dom = domid_t((kv.first >> 16) & 0xFFFF);
        const auto handle = uint16_t(kv.first & 0xFFFF);
        const registry_slot& s = _registry[dom];
        bool keep = s.state.load(std::memory_order_acquire) == dom_alive &&
                    s.generation.load(std::memory_order_acquire) == gen;
        if (keep) {
            const kept_view* v = _cur[dom].load(std::memory_order_relaxed);
            if (!v || v->generation != gen) v = _ev_cur[dom].load(std::memory_order_relaxed);
            auto [it, fresh] = bound.try_emplace(dom);
            if (fresh && v && v->generation == gen && v->bindings) {
                it->second.assign(0x10000, false);
                for (evtchn_port_t p = 1; p < max_evtchn_ports; ++p)
                    if (v->bindings[p].state.load(std::memory_order_acquire) != ecs_free)
                        it->second[v->bindings[p].handle] = true;
            }
            keep = it->second.empty() || it->second[handle]; // no view: cannot tell, keep
        }
        if (!keep) ::close(kv.second);
        return !keep;
    });
}

client::view_stats client::stats() noexcept {
    std::lock_guard<std::mutex> g(_views_lock);
    return view_stats{uint32_t(_live.size()), uint32_t(_retired.size()), uint32_t(_handle_fds.size())};
}

} // namespace zc::hv::emu
