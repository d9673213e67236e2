// SPDX-License-Identifier: MIT
// zc-netback's control plane for the direct path (docs/ARCHITECTURE.md,
// "Direct path (guest to guest)"; keys in ring/zc_direct.hpp): which
// frontends negotiated it, and for each of them the zc-direct-peers
// directory: the configured MACs of the other vifs on the direct path that
// this switch would deliver a unicast frame to, with their domains.
#include <algorithm>

#include "netback/backend_device.hpp"
#include "ring/zc_direct.hpp"

namespace zc::netback {

namespace zd = ring::zc_direct;

namespace {
constexpr const char* tag = "netback";
}

// connect(): a frontend that wrote feature-zc-direct = 1 and a release
// ring reference gets the extension; any other gets the ordinary path.
void backend::read_direct_keys(device& d, vif_params& p) noexcept {
    p.zc_direct = false;
    auto f = _xs->read(d.fe_path + "/" + zd::key_feature);
    uint32_t on = 0;
    if (!f || !parse_u32(*f, on) || on == 0) return;
    auto r = _xs->read(d.fe_path + "/" + zd::key_release_ring);
    uint32_t ref = 0;
    if (!r || !parse_u32(*r, ref)) {
        DEV_LOG(d, warn, "vif %s: %s without a valid %s: the ordinary path", d.key.c_str(), zd::key_feature,
                zd::key_release_ring);
        return;
    }
    p.zc_direct = true;
    p.zc_release_ring_ref = ref;
}

// After every connect and disconnect: rewrite the peers of every vif on
// the direct path whose set changed, in one transaction each (the frontend
// watches the directory and sees all of a change or none of it). Only
// vifs with the toolstack's `mac` key count (the source checks pass for
// that MAC only); never the vif itself.
void backend::publish_direct_peers() noexcept {
    for (auto& [k, d] : _devices) {
        if (!d->vif_added || !d->direct) continue;
        std::vector<std::pair<std::string, std::string>> want;
        for (auto& [k2, e] : _devices)
            if (e.get() != d.get() && e->vif_added && e->direct && e->mac_configured)
                want.emplace_back(zd::peer_key(e->mac.b.data()), std::to_string(e->frontend));
        std::sort(want.begin(), want.end());
        if (want == d->peers_written) continue;
        const std::string dir = d->be_path + "/" + zd::key_peers;
        int rc = -EAGAIN;
        for (int attempt = 0; attempt < 16 && rc == -EAGAIN; attempt++) {
            auto t = _xs->transaction_start();
            if (!t) {
                rc = t.error();
                break;
            }
            _xs->rm(dir, *t); // -ENOENT the first time
            int wrc = 0;
            for (auto& [mac, dom] : want)
                if (int e = _xs->write(dir + "/" + mac, dom, *t); e < 0) wrc = e;
            rc = _xs->transaction_end(*t, wrc < 0);
            if (rc == 0 && wrc < 0) rc = wrc;
        }
        if (rc < 0) {
            DEV_LOG(*d, warn, "vif %s: cannot publish %s: %d", d->key.c_str(), zd::key_peers, rc);
            continue;
        }
        d->peers_written = std::move(want);
    }
}

// disconnect(): the vif leaves the direct path; its own peers go, and it
// goes from every other vif's peers.
void backend::withdraw_direct(device& d) noexcept {
    if (!d.direct) return;
    d.direct = false;
    d.peers_written.clear();
    _xs->rm(d.be_path + "/" + zd::key_peers);
    publish_direct_peers();
}

} // namespace zc::netback
