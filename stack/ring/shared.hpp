// SPDX-License-Identifier: MIT
// What every ring shared with another domain or process needs, whatever its
// layout: read an entry exactly once, and load/store indices with the
// ordering the peer relies on. Used by the netif rings (ring/netif_ring.hpp)
// and by zc-stackd's socket rings (uapi/src/shm.hpp).
//
// The peer may change shared memory at any time. An entry is copied into
// private memory with one load per 32-bit word before it is looked at
// (Xen's RING_COPY_REQUEST, xen/io/ring.h; XSA-155): the compiler can then
// neither re-read the shared slot for a second check nor tear a field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace zc::ring {

// Copy `T` out of shared memory once. Every ring entry this project reads is
// a multiple of 4 bytes and 4-byte aligned (netif entries are unions of
// 4-byte-aligned members; socket ring entries are static_asserted).
template <class T>
inline T read_once(const void* shared) noexcept {
    static_assert(sizeof(T) % 4 == 0 && std::is_trivially_copyable_v<T>);
    uint32_t w[sizeof(T) / 4];
    const uint32_t* s = static_cast<const uint32_t*>(shared);
    for (size_t i = 0; i < sizeof(T) / 4; ++i) w[i] = __atomic_load_n(s + i, __ATOMIC_RELAXED);
    T out;
    std::memcpy(&out, w, sizeof out);
    return out;
}

// A shared index the peer publishes: acquire pairs with the peer's release
// (or wmb) before it moved the index, so the entries below it are visible.
inline uint32_t load_acquire(const uint32_t* p) noexcept { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
// Publish our index: the peer sees the entries we wrote before the index.
inline void store_release(uint32_t* p, uint32_t v) noexcept { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

} // namespace zc::ring
