// SPDX-License-Identifier: MIT
// The ARP cache: IPv4 -> MAC with timeouts, and resolution in progress.
//
// Time is injected: every call takes `now_ms`, milliseconds of any monotonic
// clock the caller reads once per batch, so tests drive expiry by hand and
// the data path never makes a system call here.
//
// Entry life:
//   (miss) --resolve--> pending --update--> resolved --reachable_ms--> gone
//   pending: one request is sent per retry_ms; after max_requests without an
//     answer the entry fails and is removed (its waiters come back).
//   resolved: usable until learned + reachable_ms. From refresh_ms before that,
//     the first lookup also asks the caller to send a request, so a live peer
//     is re-learned before it expires and traffic never stalls on a re-ARP.
//
// Waiting packets: resolve() can queue an opaque 64-bit cookie (a pool buffer
// index, a descriptor pointer: the cache never interprets it), at most
// max_waiters per pending entry. Every queued cookie is handed back exactly
// once: by update() when the address resolves (send it now), by expire()
// when resolution fails (drop it), by remove(), or by drain() (call it until
// it returns false before destroying the cache, or the cookies are lost).
//
// Memory is allocated once in create(); no call after it allocates. The
// table is small (a guest talks to its gateway and a handful of peers) and
// is searched linearly; callers on a hot path keep the resolved MAC per flow.
// Not thread-safe: one cache per host, one host per thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.hpp"
#include "proto/ether.hpp"
#include "proto/ipv4.hpp"

namespace zc::proto {

class arp_cache {
public:
    struct options {
        uint32_t capacity = 64;       // entries, resolved and pending
        uint32_t max_waiters = 4;     // queued cookies per pending entry
        uint64_t reachable_ms = 60000;
        uint64_t refresh_ms = 5000;   // < reachable_ms
        uint64_t retry_ms = 1000;     // Linux's retrans_time
        uint32_t max_requests = 3;    // Linux's mcast_solicit
    };

    // -EINVAL for a zero capacity, max_waiters > 1024, refresh_ms >=
    // reachable_ms, zero retry_ms or max_requests.
    static result<arp_cache> create(const options& o);

    enum class status : uint8_t {
        resolved,    // `mac` is valid
        pending,     // resolution in progress; the cookie (if any) was queued
        queue_full,  // pending, and max_waiters cookies already wait: drop the packet
        table_full,  // no entry free (all pending): nothing queued, drop the packet
        unknown,     // lookup() only: no entry, nothing started
    };

    struct lookup_result {
        status st = status::unknown;
        mac_addr mac;               // when resolved
        bool send_request = false;  // the caller should send an ARP request for the address now
    };

    // Looks `ip` up without starting resolution.
    lookup_result lookup(ipv4_addr ip, uint64_t now_ms) noexcept;

    // Looks `ip` up and, on a miss, starts resolving it (send_request is set
    // on the call that creates the pending entry). When the result is
    // pending and `cookie` is non-null, *cookie was queued. A full table
    // evicts the resolved entry closest to expiry, never a pending one.
    lookup_result resolve(ipv4_addr ip, uint64_t now_ms, const uint64_t* cookie) noexcept;

    struct update_result {
        bool known = false;    // the address had an entry (resolved or pending)
        bool created = false;  // a new entry was made (create == true and no entry)
        bool table_full = false;  // create == true, no entry, and none could be freed
        // Cookies whose packets may now be sent to `mac`, oldest first; valid
        // until the next non-const call.
        std::span<const uint64_t> released;
    };

    // Learns ip -> mac at now_ms: refreshes an existing entry, resolves a
    // pending one (releasing its waiters), or creates an entry when `create`
    // (RFC 826: only when the packet was addressed to us). Evicts as resolve().
    update_result update(ipv4_addr ip, const mac_addr& mac, uint64_t now_ms, bool create) noexcept;

    struct event {
        enum class kind : uint8_t {
            retry,   // send another ARP request for `ip`
            failed,  // no answer: entry removed; `waiters` are packets to drop
        } what = kind::retry;
        ipv4_addr ip;
        std::span<const uint64_t> waiters;  // failed only; valid until the next non-const call
    };

    // Timer work due at now_ms, one event per call: call until it returns
    // false. Resolved entries past their lifetime are removed silently.
    bool expire(uint64_t now_ms, event& ev) noexcept;

    // Fails every pending entry, one per call, as expire() does when retries
    // run out (event::kind::failed), and forgets resolved entries. Call until
    // it returns false; afterwards the cache is empty.
    bool drain(event& ev) noexcept;

    // Forgets an address; a pending entry's waiters are returned as by
    // update(). False when there was no entry.
    bool remove(ipv4_addr ip, std::span<const uint64_t>* released) noexcept;

    size_t size() const noexcept { return _used; }
    size_t capacity() const noexcept { return _entries.size(); }
    const options& opts() const noexcept { return _o; }

private:
    struct entry {
        ipv4_addr ip;
        mac_addr mac;
        uint64_t deadline = 0;    // resolved: expiry; pending: next retry
        uint32_t nwaiters = 0;
        uint8_t requests = 0;     // pending: requests sent so far
        bool used = false;
        bool pending = false;
        bool refresh_sent = false;
    };

    explicit arp_cache(const options& o);
    entry* find(ipv4_addr ip) noexcept;
    entry* alloc(uint64_t now_ms) noexcept;
    std::span<const uint64_t> take_waiters(entry& e) noexcept;
    void drop(entry& e) noexcept;

    options _o;
    std::vector<entry> _entries;
    std::vector<uint64_t> _waiters;  // capacity * max_waiters, entry i owns [i*max_waiters, ...)
    std::vector<uint64_t> _out;      // what `released` / `waiters` spans point at
    size_t _used = 0;
};

} // namespace zc::proto
