// SPDX-License-Identifier: MIT
// zc-stackd, sending on the direct path (docs/ARCHITECTURE.md, "Direct path
// (guest to guest)"): a connected socket's datagrams to its peer, when the
// peer's MAC is in the backend's zc-direct-peers, leave as headers in a TX
// page of ours plus a descriptor of the payload in the socket's pool, whose
// pages are granted read-only to the peer's domain as well as to the
// backend. zc-netback copies no payload; the receiver takes it, and the
// send completes when it released it.
//
// Per destination, the ordinary path takes over (counted
// tx_direct_fallback) when the destination is not a peer, when
// direct_quota of our datagrams to it are outstanding (the receiver is slow
// to release), after zc-netback refused one (until the direct sends out
// complete), or when the grant could not be made. All of a socket's
// datagrams to one destination go through the one TX ring in order, and
// zc-netback hands a descriptor over at once or refuses it, so none
// overtakes another; the exception is a refused one, sent again behind
// those queued after it (counted tx_direct_refused).
//
// The pool is the socket's: the peer's domain can read every send buffer of
// it (datagrams the socket sends elsewhere with sendto too), never another
// socket's, and never write.
#include <algorithm>
#include <cerrno>

#include <arpa/inet.h>

extern "C" {
#include <xen/io/netif.h>
}

#include "common/clock.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

namespace {
constexpr uint32_t direct_sweep_ms = 250;
}

int service::impl::direct_submit(zsock& s, const tx_desc& d, const proto::mac_addr& dmac, const uint8_t* hdr,
                                 size_t hdr_len, const link::tx_offload& off) noexcept {
    s.direct_fell = false;
    // Only send buffers: the receive buffers are not granted to the peer
    // (stackd_pool.cpp), so a received buffer sent on takes the ordinary path.
    if (!opt.zc_direct || !s.peer_ip || d.dst_ip != s.peer_ip || d.dst_port != s.peer_port || d.len == 0 ||
        d.buf >= s.tx_bufs || (d.flags & tx_f_ordinary) || !nf->zc_direct())
        return 0;
    auto dom = nf->peer_domid(dmac);
    if (!dom) return 0; // not a peer: the ordinary path, not a fallback
    auto fallback = [&] {
        s.direct_fell = true; // counted once the ordinary path took it (accepted())
        return 0;
    };
    if (s.direct_st == zsock::direct_unused) {
        // The first datagram on the direct path: the pool is granted to
        // this domain for the socket's life, and to no other one ever (a
        // socket reconnected elsewhere, or whose peer left and came back,
        // stays on the ordinary path): in the emulation a domain once lent
        // a region keeps its memfd (hv/emu/foreign.hpp), and a domain id
        // can be reused by a new guest.
        s.direct_st = zsock::direct_over;
        auto refs = shr->grant_also(s.pool, *dom, false);
        if (!refs) {
            ZC_LOG(warn, tag, "socket %u: granting its pool to d%u for the direct path: %d; ordinary path",
                   s.slot, unsigned(*dom), refs.error());
            return fallback();
        }
        s.direct_st = zsock::direct_granted;
        s.direct_dom = *dom;
        s.direct_refs = std::move(*refs);
        s.direct_mac.assign(s.tx_bufs, proto::mac_addr{});
    }
    if (s.direct_st != zsock::direct_granted || s.direct_dom != *dom || s.direct_hold) return fallback();
    uint32_t& out = dir_out[*dom];
    if (out >= opt.direct_quota) return opt.direct_wait ? -EAGAIN : fallback();
    const size_t at = size_t{d.buf} * buf_size + d.off;
    int rc = nf->send_direct(hdr, hdr_len, *dom, s.direct_refs[at / hv::page_size], uint16_t(at % hv::page_size),
                             d.len, cookie_of(s.slot, s.gen, d.buf), 0, &off);
    if (rc == -EAGAIN) return -EAGAIN;
    if (rc < 0) return fallback();
    accepted(s, d);
    s.inflight[d.buf] = zsock::tx_direct;
    s.direct_mac[d.buf] = dmac;
    s.direct_n++;
    out++;
    n.tx_direct++;
    s.st.tx_direct++;
    return 1;
}

void service::impl::direct_done(zsock& s, uint32_t b, int16_t status) noexcept {
    const tx_desc d = s.sent[b];
    s.inflight[b] = 0;
    s.inflight_n--;
    if (s.direct_n) s.direct_n--;
    if (auto it = dir_out.find(s.direct_dom); it != dir_out.end() && it->second) it->second--;
    s.direct_hold = s.direct_hold && s.direct_n;
    if (status == NETIF_RSP_OKAY) {
        complete(s, d, int32_t(d.len));
        return;
    }
    // Refused (the destination's RX ring short or busy, or it left): the
    // ordinary path, and no more direct sends until those out are back.
    n.tx_direct_refused++;
    if (s.direct_n) s.direct_hold = true;
    if (s.closing) {
        complete(s, d, -EIO);
        return;
    }
    const proto::mac_addr mac = s.direct_mac[b];
    s.sent[b].flags |= tx_f_ordinary;
    if (!s.arp_ready.empty() || !submit(s, s.sent[b], mac)) {
        // netfront full (or older ones wait): sent first by drain_tx.
        s.inflight[b] = zsock::tx_arp;
        s.inflight_n++;
        s.arp_ready.push_back({b, mac});
    }
}

// Every direct_sweep_ms: the mappings of senders that left zc-direct-peers
// (or died: zc-netback rewrites it as vifs go) and idle ones are unmapped;
// a socket whose peer's domain left ends its grants to it once nothing is
// out (a domain id can be reused by a new guest).
void service::impl::direct_sweep() noexcept {
    const uint64_t t = uint64_t(mono_ms());
    if (t < dir_swept + direct_sweep_ms) return;
    dir_swept = t;
    const auto peers = nf->peer_domains();
    auto is_peer = [&](hv::domid_t d) { return std::binary_search(peers.begin(), peers.end(), d); };
    if (dmaps) {
        for (hv::domid_t d : dmaps->domains())
            if (!is_peer(d)) dmaps->drop_domain(d);
        dmaps->expire(t);
        n.direct_maps = dmaps->maps();
        n.direct_unmaps = dmaps->unmaps();
    }
    for (auto& sp : socks) {
        if (!sp || sp->direct_st != zsock::direct_granted || sp->direct_n || is_peer(sp->direct_dom)) continue;
        if (shr->end_also(sp->pool) == 0) {
            sp->direct_st = zsock::direct_over;
            sp->direct_refs.clear();
        }
    }
}

} // namespace zc::stackd
