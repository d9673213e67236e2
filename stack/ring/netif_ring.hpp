// SPDX-License-Identifier: MIT
// The netif shared rings (xen/io/ring.h) over Xen's own netif_tx_sring /
// netif_rx_sring layouts: the back end (zc-netback, tests acting as a
// backend) and the front end (the userspace netfront, tests acting as a
// frontend). One implementation of the index and notification rules of
// ring.h's macros, in C++ with explicit atomics.
//
// Indices are free-running 32-bit RING_IDX values, masked with (size - 1) on
// access; size is a power of two (__RING_SIZE). The shared indices (req_prod,
// rsp_prod, req_event, rsp_event) live in the frontend's page; our private
// cursors are req_cons and rsp_prod_pvt, exactly as BACK_RING_ATTACH sets
// them up. Every helper keeps the index semantics of the ring.h macro it is
// named after, including the req_event/rsp_event notification scheme.
//
// The peer may change anything in the page at any time: entries are read
// exactly once into private memory (read_request / read_response, as
// RING_COPY_REQUEST does; XSA-155) and shared indices are read once per
// decision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

extern "C" {
#include <xen/io/netif.h>
}

// ring.h maps xen_mb()/xen_rmb()/xen_wmb() to the guest kernel's barriers.
// The classes below implement its macros' rules themselves; should any code
// that includes this header expand one of ring.h's macros, it gets userspace
// fences ordering our ring accesses against the peer's in another domain: a
// full fence for the event-index checks, release before publishing a
// producer index, acquire after reading one. This is the only override.
#undef xen_mb
#undef xen_rmb
#undef xen_wmb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include "ring/shared.hpp"

namespace zc::ring {

// One ring is one page (XEN_PAGE_SIZE: the ring.h macros take it as a
// parameter; netif uses 4 KiB pages on every architecture Xen supports).
inline constexpr size_t page_size = 4096;

// __RING_SIZE for a one-page ring of `Sring`: entries that fit after the
// 64-byte header, rounded down to a power of two.
template <class Sring>
constexpr uint32_t ring_size_of() noexcept {
    constexpr size_t n = (page_size - offsetof(Sring, ring)) / sizeof(Sring{}.ring[0]);
    uint32_t p = 1;
    while (p * 2 <= n) p *= 2;
    return p;
}

static_assert(sizeof(netif_tx_request) == 12 && sizeof(netif_extra_info) == 8 && sizeof(netif_rx_request) == 8 &&
              sizeof(netif_rx_response) == 8 && sizeof(netif_tx_response) == 4);
static_assert(offsetof(netif_tx_sring, ring) == 64 && offsetof(netif_rx_sring, ring) == 64);
static_assert(ring_size_of<netif_tx_sring>() == 256 && ring_size_of<netif_rx_sring>() == 256);

template <class Sring>
class back_ring {
public:
    using entry_t = std::remove_reference_t<decltype(Sring{}.ring[0])>;
    static constexpr uint32_t size = ring_size_of<Sring>();

    back_ring() noexcept = default;

    // BACK_RING_ATTACH at the frontend's current rsp_prod (Linux
    // xenvif_map_frontend_data_rings). False when the frontend already claims
    // more requests than the ring holds.
    bool attach(void* page) noexcept {
        _s = static_cast<Sring*>(page);
        const RING_IDX rsp = load(&_s->rsp_prod);
        const RING_IDX req = load(&_s->req_prod);
        rsp_prod_pvt = req_cons = rsp;
        return RING_IDX(req - rsp) <= size;
    }
    void detach() noexcept { _s = nullptr; }
    bool attached() const noexcept { return _s != nullptr; }

    // The frontend's req_prod. Acquire pairs with the frontend's wmb before
    // it publishes req_prod (RING_PUSH_REQUESTS): the requests below it are
    // visible once we have seen it.
    RING_IDX req_prod() const noexcept { return __atomic_load_n(&_s->req_prod, __ATOMIC_ACQUIRE); }

    // XEN_RING_NR_UNCONSUMED_REQUESTS: requests we may consume, bounded by
    // the slots whose responses we have produced (a frontend cannot make us
    // overrun our own unpublished responses by lying about req_prod).
    uint32_t unconsumed() const noexcept {
        const uint32_t req = req_prod() - req_cons;
        const uint32_t rsp = size - (req_cons - rsp_prod_pvt);
        return req < rsp ? req : rsp;
    }

    // RING_COPY_REQUEST.
    template <class T>
    T read_request(RING_IDX idx) const noexcept {
        static_assert(sizeof(T) <= sizeof(entry_t));
        return read_once<T>(&_s->ring[idx & (size - 1)]);
    }
    // Where the response for ring index `idx` goes (RING_GET_RESPONSE).
    void* response_slot(RING_IDX idx) noexcept { return &_s->ring[idx & (size - 1)]; }
    template <class T>
    void write_response(RING_IDX idx, const T& v) noexcept {
        static_assert(sizeof(T) <= sizeof(entry_t));
        std::memcpy(response_slot(idx), &v, sizeof v);
    }

    // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publish rsp_prod_pvt; true when
    // the frontend asked to be told (rsp_event within the new responses).
    bool push_responses_and_check_notify() noexcept {
        const RING_IDX old_prod = load(&_s->rsp_prod);
        const RING_IDX new_prod = rsp_prod_pvt;
        // Release: the frontend sees the responses before the new rsp_prod
        // (the wmb of the macro).
        __atomic_store_n(&_s->rsp_prod, new_prod, __ATOMIC_RELEASE);
        // Full barrier: the frontend's RING_FINAL_CHECK_FOR_RESPONSES writes
        // rsp_event then re-reads rsp_prod; we write rsp_prod then read
        // rsp_event. One of the two sees the other (the macro's mb).
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        const RING_IDX ev = load(&_s->rsp_event);
        return RING_IDX(new_prod - ev) < RING_IDX(new_prod - old_prod);
    }

    // RING_FINAL_CHECK_FOR_REQUESTS: true when there is work; otherwise
    // req_event is set so that the frontend notifies the next request.
    bool final_check_for_requests() noexcept {
        if (unconsumed()) return true;
        __atomic_store_n(&_s->req_event, req_cons + 1, __ATOMIC_RELAXED);
        // Pairs with the frontend's mb between writing req_prod and reading
        // req_event in RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        return unconsumed() != 0;
    }

    // Ask for a notification when the frontend produces past `prod` (Linux
    // xenvif_rx_ring_slots_available: req_event = prod + 1, then mb).
    void request_event_after(RING_IDX prod) noexcept {
        __atomic_store_n(&_s->req_event, prod + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }

    RING_IDX rsp_prod_pvt = 0;
    RING_IDX req_cons = 0;

private:
    static RING_IDX load(const RING_IDX* p) noexcept { return load_acquire(p); }
    Sring* _s = nullptr;
};

template <class Sring>
class front_ring {
public:
    using entry_t = std::remove_reference_t<decltype(Sring{}.ring[0])>;
    static constexpr uint32_t size = ring_size_of<Sring>();

    front_ring() noexcept = default;

    // XEN_FRONT_RING_INIT on a page we own and are about to grant:
    // SHARED_RING_INIT (indices 0, event indices 1) then FRONT_RING_INIT.
    void init(void* page) noexcept {
        _s = static_cast<Sring*>(page);
        _s->req_prod = _s->rsp_prod = 0;
        _s->req_event = _s->rsp_event = 1;
        std::memset(&_s->pvt, 0, sizeof _s->pvt);
        std::memset(_s->__pad, 0, sizeof _s->__pad);
        req_prod_pvt = rsp_cons = _pushed = 0;
    }
    void detach() noexcept { _s = nullptr; }
    bool attached() const noexcept { return _s != nullptr; }

    // RING_GET_REQUEST: the slot for ring index `idx`, ours to fill until
    // push_requests_and_check_notify() publishes it.
    entry_t* request_slot(RING_IDX idx) noexcept { return &_s->ring[idx & (size - 1)]; }
    template <class T>
    void write_request(RING_IDX idx, const T& v) noexcept {
        static_assert(sizeof(T) <= sizeof(entry_t));
        std::memcpy(request_slot(idx), &v, sizeof v);
    }
    // RING_FREE_REQUESTS.
    uint32_t free_requests() const noexcept { return size - (req_prod_pvt - rsp_cons); }

    // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish req_prod_pvt; true when
    // the backend asked to be told (req_event within the new requests). The
    // old index is our own copy of what we published, not the shared one
    // (the backend can write the shared page).
    bool push_requests_and_check_notify() noexcept {
        const RING_IDX old_prod = _pushed;
        const RING_IDX new_prod = req_prod_pvt;
        // Release: the backend sees the requests before req_prod (the wmb).
        store_release(&_s->req_prod, new_prod);
        // Full barrier: the backend's RING_FINAL_CHECK_FOR_REQUESTS writes
        // req_event then re-reads req_prod; we write req_prod then read
        // req_event (the macro's mb).
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        const RING_IDX ev = load_acquire(&_s->req_event);
        _pushed = new_prod;
        return RING_IDX(new_prod - ev) < RING_IDX(new_prod - old_prod);
    }
    // The req_prod we last published: a backend can never have produced
    // more responses than that (RING_RESPONSE_PROD_OVERFLOW, tightened).
    RING_IDX pushed() const noexcept { return _pushed; }

    // The backend's rsp_prod. Acquire pairs with its wmb before publishing.
    RING_IDX rsp_prod() const noexcept { return load_acquire(&_s->rsp_prod); }
    // RING_COPY_RESPONSE.
    template <class T>
    T read_response(RING_IDX idx) const noexcept {
        static_assert(sizeof(T) <= sizeof(entry_t));
        return read_once<T>(&_s->ring[idx & (size - 1)]);
    }
    // RING_FINAL_CHECK_FOR_RESPONSES: true when there are unconsumed
    // responses; otherwise rsp_event is set so that the backend notifies
    // the next one.
    // `ahead` > 1 asks for the notification only once that many responses
    // are unconsumed (Linux netfront's xennet_tx_buf_gc asks for the next
    // one; netif.h lets the frontend place rsp_event anywhere ahead).
    bool final_check_for_responses(RING_IDX ahead = 1) noexcept {
        if (rsp_prod() != rsp_cons) return true;
        __atomic_store_n(&_s->rsp_event, rsp_cons + ahead, __ATOMIC_RELAXED);
        // Pairs with the backend's mb between writing rsp_prod and reading
        // rsp_event in RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        return rsp_prod() != rsp_cons;
    }

    // The shared page, for what the protocol keeps outside the indices.
    Sring* sring() noexcept { return _s; }

    RING_IDX req_prod_pvt = 0;
    RING_IDX rsp_cons = 0;

private:
    Sring* _s = nullptr;
    RING_IDX _pushed = 0;
};

using tx_back_ring = back_ring<netif_tx_sring>;
using rx_back_ring = back_ring<netif_rx_sring>;
using tx_front_ring = front_ring<netif_tx_sring>;
using rx_front_ring = front_ring<netif_rx_sring>;

} // namespace zc::ring
