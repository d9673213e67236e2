// SPDX-License-Identifier: MIT
#include "proto/arp_cache.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace zc::proto {

namespace {
// Deadlines saturate instead of wrapping: a caller's clock may start
// anywhere, and drain-like calls pass huge times.
uint64_t after(uint64_t now, uint64_t d) noexcept {
    return now > std::numeric_limits<uint64_t>::max() - d ? std::numeric_limits<uint64_t>::max() : now + d;
}
} // namespace

result<arp_cache> arp_cache::create(const options& o) {
    if (o.capacity == 0 || o.capacity > (1u << 20) || o.max_waiters > 1024 || o.refresh_ms >= o.reachable_ms ||
        o.retry_ms == 0 || o.max_requests == 0 || o.max_requests > 255)
        return err(-EINVAL);
    return arp_cache(o);
}

arp_cache::arp_cache(const options& o)
    : _o(o), _entries(o.capacity), _waiters(size_t(o.capacity) * o.max_waiters), _out(o.max_waiters) {}

arp_cache::entry* arp_cache::find(ipv4_addr ip) noexcept {
    for (auto& e : _entries)
        if (e.used && e.ip == ip) return &e;
    return nullptr;
}

arp_cache::entry* arp_cache::alloc(uint64_t) noexcept {
    entry* victim = nullptr;
    for (auto& e : _entries) {
        if (!e.used) {
            victim = &e;
            break;
        }
        // Pending entries hold waiters and are bounded by max_requests
        // anyway; only a resolved entry may be evicted (it is re-learnt).
        if (!e.pending && (!victim || e.deadline < victim->deadline)) victim = &e;
    }
    if (!victim) return nullptr;
    if (victim->used) drop(*victim);
    *victim = entry{};
    victim->used = true;
    _used++;
    return victim;
}

std::span<const uint64_t> arp_cache::take_waiters(entry& e) noexcept {
    const size_t i = size_t(&e - _entries.data());
    const uint32_t n = e.nwaiters;
    if (n) std::memcpy(_out.data(), &_waiters[i * _o.max_waiters], n * sizeof(uint64_t));
    e.nwaiters = 0;
    return {_out.data(), n};
}

void arp_cache::drop(entry& e) noexcept {
    // Callers take the waiters first; a resolved entry has none.
    e = entry{};
    _used--;
}

arp_cache::lookup_result arp_cache::lookup(ipv4_addr ip, uint64_t now_ms) noexcept {
    lookup_result r;
    entry* e = find(ip);
    if (!e) return r;
    if (e->pending) {
        r.st = status::pending;
        return r;
    }
    if (now_ms >= e->deadline) {
        drop(*e);
        return r;
    }
    r.st = status::resolved;
    r.mac = e->mac;
    if (!e->refresh_sent && after(now_ms, _o.refresh_ms) >= e->deadline) {
        e->refresh_sent = true;
        r.send_request = true;
    }
    return r;
}

arp_cache::lookup_result arp_cache::resolve(ipv4_addr ip, uint64_t now_ms, const uint64_t* cookie) noexcept {
    lookup_result r = lookup(ip, now_ms);
    if (r.st == status::resolved) return r;
    entry* e = nullptr;
    if (r.st == status::unknown) {
        e = alloc(now_ms);
        if (!e) {
            r.st = status::table_full;
            return r;
        }
        e->ip = ip;
        e->pending = true;
        e->requests = 1;
        e->deadline = after(now_ms, _o.retry_ms);
        r.send_request = true;
    } else {
        e = find(ip);
    }
    r.st = status::pending;
    if (cookie) {
        if (e->nwaiters >= _o.max_waiters) {
            r.st = status::queue_full;
            return r;
        }
        _waiters[size_t(e - _entries.data()) * _o.max_waiters + e->nwaiters++] = *cookie;
    }
    return r;
}

arp_cache::update_result arp_cache::update(ipv4_addr ip, const mac_addr& mac, uint64_t now_ms,
                                           bool create) noexcept {
    update_result r;
    entry* e = find(ip);
    if (e) {
        r.known = true;
    } else {
        if (!create) return r;
        e = alloc(now_ms);
        if (!e) {
            r.table_full = true;
            return r;
        }
        e->ip = ip;
        r.created = true;
    }
    if (e->pending) r.released = take_waiters(*e);
    e->pending = false;
    e->requests = 0;
    e->refresh_sent = false;
    e->mac = mac;
    e->deadline = after(now_ms, _o.reachable_ms);
    return r;
}

bool arp_cache::expire(uint64_t now_ms, event& ev) noexcept {
    for (auto& e : _entries) {
        if (!e.used || now_ms < e.deadline) continue;
        if (!e.pending) {
            drop(e);
            continue;
        }
        ev.ip = e.ip;
        if (e.requests < _o.max_requests) {
            e.requests++;
            e.deadline = after(now_ms, _o.retry_ms);
            ev.what = event::kind::retry;
            ev.waiters = {};
        } else {
            ev.what = event::kind::failed;
            ev.waiters = take_waiters(e);
            drop(e);
        }
        return true;
    }
    return false;
}

bool arp_cache::drain(event& ev) noexcept {
    for (auto& e : _entries) {
        if (!e.used) continue;
        if (!e.pending) {
            drop(e);
            continue;
        }
        ev.ip = e.ip;
        ev.what = event::kind::failed;
        ev.waiters = take_waiters(e);
        drop(e);
        return true;
    }
    return false;
}

bool arp_cache::remove(ipv4_addr ip, std::span<const uint64_t>* released) noexcept {
    entry* e = find(ip);
    if (!e) return false;
    auto w = take_waiters(*e);
    if (released) *released = w;
    drop(*e);
    return true;
}

} // namespace zc::proto
