// SPDX-License-Identifier: MIT
// The receiver's persistent read-only mappings of senders' pool pages
// (direct.hpp).
#include "stackd/direct.hpp"

#include <algorithm>

namespace zc::stackd {

direct_maps::~direct_maps() {
    for (auto& [k, e] : _m) unmap(e);
}

void direct_maps::unmap(entry& e) noexcept {
    if (e.m.addr && _tab.unmap(e.m) == 0) _unmaps++;
}

void direct_maps::evict_lru() noexcept {
    auto lru = std::min_element(_m.begin(), _m.end(),
                                [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
    if (lru == _m.end()) return;
    unmap(lru->second);
    _m.erase(lru);
}

const uint8_t* direct_maps::get(hv::domid_t dom, hv::gref_t ref, uint64_t now_ms, int16_t* status) noexcept {
    if (auto it = _m.find(key(dom, ref)); it != _m.end()) {
        it->second.used = now_ms;
        return static_cast<const uint8_t*>(it->second.m.addr);
    }
    int16_t st = GNTST_general_error;
    uint32_t& failed = _failures[dom];
    if (failed >= max_failures) {
        if (status) *status = st;
        return nullptr;
    }
    if (_m.size() >= _max) evict_lru();
    auto r = _tab.map(1, &dom, &ref, false, &st);
    if (!r) {
        failed++;
        if (status) *status = st;
        return nullptr;
    }
    _maps++;
    auto [it, ok] = _m.emplace(key(dom, ref), entry{*r, now_ms});
    (void)ok;
    return static_cast<const uint8_t*>(it->second.m.addr);
}

template <class Pred>
void direct_maps::unmap_if(Pred drop) noexcept {
    for (auto it = _m.begin(); it != _m.end();) {
        if (!drop(it->first, it->second)) {
            ++it;
            continue;
        }
        unmap(it->second);
        it = _m.erase(it);
    }
}

void direct_maps::drop_domain(hv::domid_t dom) noexcept {
    unmap_if([dom](uint64_t k, const entry&) { return k >> 32 == dom; });
}

void direct_maps::expire(uint64_t now_ms) noexcept {
    _failures.clear();
    unmap_if([&](uint64_t, const entry& e) { return e.used + _idle <= now_ms; });
}

std::vector<hv::domid_t> direct_maps::domains() const {
    std::vector<hv::domid_t> v;
    for (const auto& [k, e] : _m) v.push_back(hv::domid_t(k >> 32));
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

} // namespace zc::stackd
