// SPDX-License-Identifier: MIT
// The netfront's side of the direct path between two zcnet guests
// (docs/ARCHITECTURE.md, "Direct path (guest to guest)"; the wire format is
// ring/zc_direct.hpp, zc-netback's side netback/direct.cpp and
// backend_direct.cpp): the release ring and the keys written before
// Connected, the backend's zc-direct-peers followed into a lookup, a frame
// sent as headers in a TX slot plus the payload's grant in two TX extras,
// the two RX extras parsed into a descriptor, and the releases.
// Not a Linux xen-netfront feature: our extension, negotiated like one.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "link/netfront_impl.hpp"

namespace zc::link {

using namespace detail;
namespace zd = ring::zc_direct;

namespace {

uint64_t mac_key(const mac_addr& m) noexcept {
    uint64_t k = 0;
    for (size_t i = 0; i < 6; i++) k = (k << 8) | m[i];
    return k;
}

} // namespace

// --- negotiation (talk_to_netback, before Connected) --------------------------

// The release ring: one page the backend writes its responses into.
int netfront::impl::setup_direct(std::string* why) noexcept {
    if (!opts.zc_direct || !be_read_unsigned(zd::key_feature, 0)) return 0;
    auto r = gs->share(be_id, 1, true);
    if (!r) {
        if (why) *why = std::string("granting the release ring: ") + std::strerror(-r.error());
        return r.error();
    }
    std::lock_guard g(dir_lock);
    release_pg = std::move(*r);
    release.init(release_pg.addr); // SHARED_RING_INIT + FRONT_RING_INIT
    return 0;
}

// In write_keys' transaction: both keys or neither (a frontend with only
// one takes the ordinary path, backend_direct.cpp).
int netfront::impl::write_direct_keys(hv::xs::txn t, std::string* what) noexcept {
    if (!release_pg.count) return 0;
    int rc = xs->write(fe_path + "/" + zd::key_feature, "1", t);
    if (!rc) rc = xs->write(fe_path + "/" + zd::key_release_ring, std::to_string(release_pg.refs[0]), t);
    if (rc && what) *what = std::string("writing ") + zd::key_feature;
    return rc;
}

// Connected: the backend took our keys. Its peers are published in one
// transaction whenever a vif on the extension comes or goes: watch them.
void netfront::impl::start_direct() noexcept {
    if (!release_pg.count) return;
    peers_path = be_path + "/" + zd::key_peers;
    if (int rc = xs->watch(peers_path, watch_token); rc) {
        ZC_LOG(warn, tag, "%s: watching %s: %d; direct path off", fe_path.c_str(), peers_path.c_str(), rc);
        return; // the release ring stays granted until disconnect
    }
    direct = true;
    load_peers();
}

// Re-read zc-direct-peers/<aa-bb-cc-dd-ee-ff> = <domid>. An entry that does
// not parse is skipped (the backend is not trusted to write sense).
void netfront::impl::load_peers() noexcept {
    std::map<uint64_t, hv::domid_t> m;
    if (auto names = xs->directory(peers_path)) {
        for (const auto& n : *names) {
            mac_addr mac{};
            unsigned long dom = 0;
            auto v = xs->read(peers_path + "/" + n);
            if (!v || !parse_mac(n, mac, mac_allow_dash) || !parse_uint(*v, &dom) || dom >= hv::domid_self) continue;
            m[mac_key(mac)] = hv::domid_t(dom);
        }
    }
    std::lock_guard g(dir_lock);
    peers = std::move(m);
}

// ctl_lock held. The release ring's page goes with the queues' pages
// (ended once the backend unmapped it).
void netfront::impl::stop_direct() noexcept {
    if (direct.exchange(false)) (void)xs->unwatch(peers_path, watch_token);
    std::lock_guard g(dir_lock);
    peers.clear();
    release.detach();
    if (release_pg.count) leftovers.push_back(std::exchange(release_pg, hv::shared_pages{}));
}

// --- RX: the two extras (xennet_get_extras, for our private types) -------------

// An extra of ours while on the direct path: record it in the chain.
bool netfront::impl::direct_extra(const netif_extra_info_t& ex, rx_chain& c) noexcept {
    if (!direct.load(std::memory_order_relaxed)) return false;
    if (ex.type != zd::extra_rx_grant && ex.type != zd::extra_rx_desc) return false;
    const bool again = c.d_seen;
    c.d_seen = true;
    if (ex.type == zd::extra_rx_grant) {
        auto g = zd::from_extra<zd::rx_grant>(ex);
        c.d_grant = !again && (ex.flags & XEN_NETIF_EXTRA_FLAG_MORE);
        c.desc.domid = g.domid;
        c.desc.gref = g.gref;
        return true;
    }
    auto d = zd::from_extra<zd::rx_desc>(ex);
    c.d_desc = c.d_grant && !c.d_desc;
    c.desc.offset = d.offset;
    c.desc.len = d.len;
    c.desc.cookie = d.cookie;
    return true;
}

// A parsed chain carrying our extras: the headers in one slot, both extras
// in order, a payload within one page of the sender's. 0 or -EINVAL.
int netfront::impl::check_direct(nf_queue& q, const rx_chain& c) noexcept {
    if (!c.d_seen) return 0;
    bool ok = c.d_grant && c.d_desc && c.nslots == 1 && !c.gso && !(c.flags & NETRXF_more_data) &&
              c.len <= zd::tx_header_max && c.desc.len && size_t{c.desc.offset} + c.desc.len <= hv::page_size &&
              c.desc.domid < hv::domid_self;
    if (ok) return 0;
    q.st_rx.bad.rx_bad_direct++;
    if (rl_rx.allow()) ZC_LOG(warn, tag, "%s: malformed direct-path descriptor", fe_path.c_str());
    return -EINVAL;
}

// A descriptor we do not hand over (a bad frame, nobody to take it): give
// its cookie back at once so that the sender's request completes. A first
// response carrying an error means the cookie is already void.
void netfront::impl::drop_direct(nf_queue& q, const rx_chain& c) noexcept {
    if (!c.d_desc) return;
    q.st_rx.rx_direct_dropped++;
    if (c.nslots == 0) return; // the first response was an error
    (void)release_direct(&c.desc.cookie, 1);
}

// --- TX -------------------------------------------------------------------------

int netfront::impl::send_direct(const void* hdr, size_t hdr_len, hv::domid_t dest, hv::gref_t gref, uint16_t offset,
                                uint16_t len, uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept {
    if (!direct.load(std::memory_order_relaxed)) return -EOPNOTSUPP;
    if (queue >= qs.size() || !hdr || hdr_len < eth_hlen || hdr_len > zd::tx_header_max || len == 0) return -EINVAL;
    if (size_t{offset} + len > hv::page_size) return -EMSGSIZE;
    nf_queue& q = *qs[queue];
    std::lock_guard g(q.tx_lock);
    if (int rc = tx_check(q); rc) return rc;
    if (int rc = tx_make_room(q, 1, 2); rc) return rc;
    uint16_t id = q.tx_free.back();
    q.tx_free.pop_back();
    std::memcpy(q.tx_page(id), hdr, hdr_len); // our page: the caller cannot change the headers checked
    q.tx_cookie[id] = cookie;
    q.tx_state[id] = tx_direct;

    RING_IDX i = q.tx.req_prod_pvt;
    netif_tx_request_t req{};
    req.gref = q.tx_pages.refs[id];
    req.offset = 0;
    req.id = id;
    req.size = uint16_t(hdr_len); // the headers only: one slot, what the backend's header copy reads
    req.flags = NETTXF_extra_info;
    // Checksum flags as for any frame (xennet_start_xmit); GSO never.
    if (off && off->csum_blank) req.flags |= NETTXF_csum_blank | NETTXF_data_validated;
    else if (off && off->data_validated) req.flags |= NETTXF_data_validated;
    q.tx.write_request(i++, req);
    q.tx.write_request(i++, zd::to_extra(zd::tx_payload{zd::extra_tx_payload, XEN_NETIF_EXTRA_FLAG_MORE, offset, gref}));
    q.tx.write_request(i++, zd::to_extra(zd::tx_dest{zd::extra_tx_dest, 0, dest, len, 0}));
    q.tx.req_prod_pvt = i;
    if (q.tx.push_requests_and_check_notify()) notify(q, q.tx_port, q.st_tx.tx_notifies);
    q.st_tx.tx_packets++;
    q.st_tx.tx_bytes += hdr_len + len;
    q.st_tx.tx_slots++;
    q.st_tx.tx_extras += 2;
    q.st_tx.tx_direct++;
    (void)tx_gc(q);
    return 0;
}

// --- releases -------------------------------------------------------------------

// Take the backend's answers off the release ring. dir_lock held.
void netfront::impl::reap_releases() noexcept {
    RING_IDX prod = release.rsp_prod();
    if (prod - release.rsp_cons > release.pushed() - release.rsp_cons) {
        mark_broken("release ring: illegal number of responses " + std::to_string(prod - release.rsp_cons));
        return;
    }
    for (; release.rsp_cons != prod; release.rsp_cons++) {
        auto r = release.read_response<zc_direct_release_response>(release.rsp_cons);
        if (r.status != NETIF_RSP_OKAY) bad_releases++;
    }
}

result<size_t> netfront::impl::release_direct(const uint16_t* cookies, size_t n) noexcept {
    if (!direct.load(std::memory_order_relaxed)) return err(-EOPNOTSUPP);
    if (!cookies && n) return err(-EINVAL);
    if (is_broken) return err(-EIO);
    if (!is_connected || qs.empty()) return err(-ENOTCONN);
    size_t done = 0;
    {
        std::lock_guard g(dir_lock);
        if (!release_pg.count) return err(-ENOTCONN);
        reap_releases();
        if (is_broken) return err(-EIO);
        constexpr RING_IDX size = zd::release_front_ring::size;
        for (; done < n && release.req_prod_pvt - release.rsp_cons < size; done++)
            release.write_request(release.req_prod_pvt++, zc_direct_release_request{cookies[done], 0});
        if (!done || !release.push_requests_and_check_notify()) return done;
    }
    // The backend takes releases on our first queue's TX event channel.
    nf_queue& q = *qs[0];
    std::lock_guard t(q.tx_lock);
    notify(q, q.tx_port, q.st_tx.tx_notifies);
    return done;
}

// --- public ---------------------------------------------------------------------

bool netfront::zc_direct() const noexcept { return _p->direct; }

result<hv::domid_t> netfront::peer_domid(const mac_addr& mac) const noexcept {
    if (!_p->direct) return err(-EOPNOTSUPP);
    std::lock_guard g(_p->dir_lock);
    auto it = _p->peers.find(mac_key(mac));
    if (it == _p->peers.end()) return err(-ENOENT);
    return it->second;
}

int netfront::send_direct(const void* hdr, size_t hdr_len, hv::domid_t dest, hv::gref_t gref, uint16_t offset,
                          uint16_t len, uint64_t cookie, uint32_t queue, const tx_offload* off) noexcept {
    if (off && off->gso_size) return -EINVAL;
    return _p->send_direct(hdr, hdr_len, dest, gref, offset, len, cookie, queue, off);
}

std::vector<hv::domid_t> netfront::peer_domains() const {
    std::vector<hv::domid_t> v;
    std::lock_guard g(_p->dir_lock);
    for (const auto& [mac, dom] : _p->peers) v.push_back(dom);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

result<size_t> netfront::release_direct(const uint16_t* cookies, size_t n) noexcept {
    return _p->release_direct(cookies, n);
}

uint64_t netfront::direct_bad_releases() const noexcept {
    std::lock_guard g(_p->dir_lock);
    if (_p->release_pg.count) _p->reap_releases();
    return _p->bad_releases;
}

} // namespace zc::link
