// SPDX-License-Identifier: MIT
// Counter structs: plain structs of uint64_t fields, one per event or drop
// reason, summed across queues, workers and threads with one operator.
//
//   struct queue_stats { uint64_t rx_packets = 0, drop_bad_id = 0; };
//   ZC_COUNTERS_ADDABLE(queue_stats)   // queue_stats& operator+=(...)
//
// A struct that also needs names (stats output, JSON, the benchmark's
// per-frame figures) declares its fields through an X-macro list and gets
// its schema from ZC_COUNTER_SCHEMA (netback/counters.hpp is the example):
// one place lists each counter with its unit and what it counts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace zc {

// into += from, field by field, for a struct made only of uint64_t.
template <class T>
inline void add_counters(T& into, const T& from) noexcept {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % sizeof(uint64_t) == 0,
                  "counter structs hold uint64_t fields only");
    constexpr size_t n = sizeof(T) / sizeof(uint64_t);
    uint64_t a[n], b[n];
    std::memcpy(a, &into, sizeof a);
    std::memcpy(b, &from, sizeof b);
    for (size_t i = 0; i < n; i++) a[i] += b[i];
    std::memcpy(&into, a, sizeof a);
}

// What one counter of a schema means. `unit` is "packets", "bytes",
// "frames", "slots", "segments", "calls" or "events"; `drop` is set on
// counters that count something lost, with the reason in `help`.
struct counter_desc {
    const char* name;
    const char* unit;
    bool drop;
    const char* help;
};

} // namespace zc

#define ZC_COUNTERS_ADDABLE(T)                                                 \
    inline T& operator+=(T& a, const T& b) noexcept {                          \
        ::zc::add_counters(a, b);                                              \
        return a;                                                              \
    }

// Inside a struct whose fields come from LIST(X), with
// X(name, unit, drop, help): declares the fields and a static `schema`
// array, in field order, so that printers walk the array with `field(i)`.
#define ZC_COUNTER_FIELD_(name, unit, drop, help) uint64_t name = 0;
#define ZC_COUNTER_DESC_(name, unit, drop, help) ::zc::counter_desc{#name, unit, drop, help},
#define ZC_COUNTER_SCHEMA(LIST)                                                \
    LIST(ZC_COUNTER_FIELD_)                                                    \
    static constexpr ::zc::counter_desc schema[] = {LIST(ZC_COUNTER_DESC_)};   \
    static constexpr size_t schema_size = sizeof(schema) / sizeof(schema[0]);  \
    uint64_t field(size_t i) const noexcept {                                  \
        uint64_t v;                                                            \
        std::memcpy(&v, reinterpret_cast<const char*>(this) + i * sizeof(uint64_t), sizeof v); \
        return v;                                                              \
    }
