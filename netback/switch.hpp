// SPDX-License-Identifier: MIT
// The L2 learning switch between vifs: which vif a destination MAC lives
// behind. Learned from source MACs of frames a vif sends (and seeded with the
// MAC the frontend announced). A guest chooses its source MACs, so the table
// is bounded per vif: a guest spraying random source MACs can only evict its
// own entries, never grow the table without bound or steal another vif's
// configured MAC. An uplink port (docs/ARCHITECTURE.md, "Uplinks") has a
// larger bound, and its learned MACs age out: an entry not refreshed for
// `aging` is treated as unknown (flooded) and may be learned anew anywhere.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "netback/datapath.hpp"

namespace zc::netback {

inline uint64_t mac_key(const uint8_t* m) noexcept {
    uint64_t k = 0;
    for (int i = 0; i < 6; ++i) k = (k << 8) | m[i];
    return k;
}
inline bool mac_is_group(const uint8_t* m) noexcept { return m[0] & 1; } // broadcast or multicast

// `Port` is the switch's view of a vif; it is only stored and compared.
template <class Port>
class l2_switch {
public:
    static constexpr uint32_t max_learned_per_port = 64;

    struct port_opts {
        uint32_t max_learned = max_learned_per_port;
        std::chrono::nanoseconds aging{0}; // 0: learned entries never age
    };

    void add(const std::shared_ptr<Port>& p, const mac_addr& configured, port_opts o = {}) {
        std::unique_lock g(_lock);
        _ports.push_back(p);
        _opts[p.get()] = o;
        const uint64_t k = mac_key(configured.b.data());
        if (k != 0 && !configured.is_multicast()) {
            entry& e = _table[k];
            e.port = p;
            e.pinned = true;
        }
    }

    void remove(const Port* p) {
        std::unique_lock g(_lock);
        std::erase_if(_ports, [p](const auto& q) { return q.get() == p; });
        std::erase_if(_table, [p](const auto& e) { return e.second.port.get() == p; });
        _learned.erase(p);
        _opts.erase(p);
    }

    // Learn `mac` behind `p` (cheap when already known: read lock only).
    void learn(const uint8_t* mac, const std::shared_ptr<Port>& p) {
        if (mac_is_group(mac)) return;
        const uint64_t k = mac_key(mac);
        if (k == 0) return;
        {
            std::shared_lock g(_lock);
            auto it = _table.find(k);
            if (it != _table.end() && (it->second.pinned || (it->second.port == p && it->second.refresh()))) return;
        }
        std::unique_lock g(_lock);
        auto it = _table.find(k);
        const port_opts o = _opts.count(p.get()) ? _opts[p.get()] : port_opts{};
        if (it != _table.end()) {
            if (it->second.pinned || (it->second.port == p && it->second.refresh())) return;
            // Moving (or renewing an aged entry): the old port's count drops.
            if (it->second.port != p && _learned[p.get()] >= o.max_learned) return;
            --_learned[it->second.port.get()];
            it->second.port = p;
        } else {
            if (_learned[p.get()] >= o.max_learned) return; // keep flooding to it instead
            it = _table.try_emplace(k).first;
            it->second.port = p;
        }
        it->second.aging = o.aging.count();
        it->second.seen.store(now_ns(), std::memory_order_relaxed);
        ++_learned[p.get()];
    }

    // Destinations of a frame to `dst` from `src`: the learned port, or every
    // other port (flood). Returns true when it flooded.
    bool lookup(const uint8_t* dst, const Port* src, std::vector<std::shared_ptr<Port>>& out) {
        out.clear();
        std::shared_lock g(_lock);
        if (!mac_is_group(dst)) {
            auto it = _table.find(mac_key(dst));
            if (it != _table.end() && !it->second.aged()) {
                if (it->second.port.get() != src) out.push_back(it->second.port);
                return false; // known: never flood, even if it is the sender itself
            }
        }
        for (auto& p : _ports)
            if (p.get() != src) out.push_back(p);
        return true;
    }

private:
    static int64_t now_ns() noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
    struct entry {
        std::shared_ptr<Port> port;
        bool pinned = false;            // the frontend's configured MAC: not moved by learning
        int64_t aging = 0;              // ns; 0: never ages
        std::atomic<int64_t> seen{0};   // last learned (ns), refreshed under the read lock
        // Refreshes an ageing entry; false when it had already aged out
        // (the caller then re-learns it under the write lock).
        bool refresh() noexcept {
            if (aging == 0) return true;
            const int64_t now = now_ns();
            if (now - seen.load(std::memory_order_relaxed) > aging && seen.load(std::memory_order_relaxed) != 0)
                return false;
            seen.store(now, std::memory_order_relaxed);
            return true;
        }
        bool aged() const noexcept {
            return aging != 0 && now_ns() - seen.load(std::memory_order_relaxed) > aging;
        }
    };
    std::shared_mutex _lock; // protects everything below
    std::vector<std::shared_ptr<Port>> _ports;
    std::unordered_map<uint64_t, entry> _table;
    std::unordered_map<const Port*, uint32_t> _learned;
    std::unordered_map<const Port*, port_opts> _opts;
};

} // namespace zc::netback
