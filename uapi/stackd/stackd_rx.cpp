// SPDX-License-Identifier: MIT
// zc-stackd, receive: frames from netfront through the proto host (ARP and
// ping answered there), UDP datagrams copied into the bound socket's RX
// buffers and RX ring, echo replies for pings, and the RX buffers
// applications give back on their fill rings.
#include <algorithm>
#include <cstring>

#include <arpa/inet.h>

#include "common/clock.hpp"
#include "proto/checksum.hpp"
#include "proto/ether.hpp"
#include "proto/icmp.hpp"
#include "proto/ipv4.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

namespace {

// recv_view fills rx_info before it calls back.
struct rx_ctx {
    service::impl* self;
    const link::rx_info* info;
};

void on_frame(const uint8_t* f, size_t len, void* arg) noexcept {
    auto* c = static_cast<rx_ctx*>(arg);
    if (c->info->direct) c->self->rx_direct(f, len, *c->info); // direct_rx.cpp
    else c->self->rx_frame(f, len, c->info->flags);
}

} // namespace

void service::impl::rx_frame(const uint8_t* f, size_t len, uint16_t flags) noexcept {
    n.rx_frames++;
    auto v = host->receive(std::span<const uint8_t>(f, len), proto::rx_csum_from_netrxf(flags),
                           std::span<uint8_t>(reply, sizeof reply), now);
    switch (v.action) {
    case proto::rx_action::reply:
        if (v.reply_len >= 14) {
            // ARP replies go out padded to the Ethernet minimum.
            size_t l = std::max<size_t>(v.reply_len, 60);
            if (l > v.reply_len) std::memset(reply + v.reply_len, 0, l - v.reply_len);
            (void)nf->send(reply, l);
            if (f[12] == 0x08 && f[13] == 0x06) n.arp_replies++;
            else n.echo_replies++;
        }
        if (!v.released.empty()) arp_released(v.released, &v.released_mac);
        break;
    case proto::rx_action::consumed:
        if (!v.released.empty()) arp_released(v.released, &v.released_mac);
        pings_resolve();
        break;
    case proto::rx_action::udp: deliver(f, v.udp); break;
    case proto::rx_action::drop:
        if (v.reason == proto::drop_reason::icmp_ignored) maybe_echo_reply(f, len);
        break;
    }
}

// An echo reply (the host ignores those: it only answers requests).
void service::impl::maybe_echo_reply(const uint8_t* f, size_t len) noexcept {
    proto::eth_view e;
    if (proto::parse_eth(std::span<const uint8_t>(f, len), e) != proto::eth_error::none ||
        e.type != proto::ethertype::ipv4)
        return;
    proto::ipv4_view ip;
    auto l3 = std::span<const uint8_t>(f + e.hdr_len, len - e.hdr_len);
    if (proto::parse_ipv4(l3, ip) != proto::ipv4_error::none || ip.proto != proto::ip_proto::icmp) return;
    const uint8_t* ic = l3.data() + ip.hdr_len;
    if (ip.payload_len() < 8 || ic[0] != proto::icmp_type::echo_reply || ic[1] != 0) return;
    if (!proto::csum_verify(ic, ip.payload_len())) return;
    uint16_t id = uint16_t(ic[4] << 8 | ic[5]), seq = uint16_t(ic[6] << 8 | ic[7]);
    for (auto& sp : socks) {
        if (!sp || !sp->ping || sp->ping_id != id || sp->ping_seq != seq ||
            htonl(ip.src.v) != sp->ping_ip)
            continue;
        sp->ping = false;
        n.pings_answered++;
        (void)send_rc(sp->ctl, int32_t(std::min<uint64_t>(uint64_t(mono_us()) - sp->ping_t0, 0x7fffffff)));
    }
}

void service::impl::deliver(const uint8_t* f, const proto::udp_delivery& u) noexcept {
    deliver_payload(f + u.payload_off, uint32_t(u.payload_len), htonl(u.src_ip.v), htons(u.src_port),
                    htonl(u.dst_ip.v), htons(u.dst_port));
}

void service::impl::deliver_payload(const uint8_t* pay, uint32_t len, uint32_t src_ip, uint16_t src_port,
                                    uint32_t dst_ip, uint16_t dst_port) noexcept {
    uint32_t slot = ports[dst_port];
    if (slot == no_slot) {
        n.rx_no_socket++;
        return;
    }
    zsock& s = *socks[slot];
    if (s.closing || !s.open) return;
    if (s.ip && s.ip != dst_ip) {
        n.rx_no_socket++;
        return;
    }
    // A connected socket takes datagrams from its peer only (connect(2) on
    // a UDP socket: compute_score() in Linux's net/ipv4/udp.c).
    if (s.peer_ip && (s.peer_ip != src_ip || s.peer_port != src_port)) {
        n.rx_not_peer++;
        s.st.rx_not_peer++;
        return;
    }
    if (s.rx_free.empty() || s.rx.free_slots(s.rx_prod) == 0) {
        n.rx_drops++;
        s.st.rx_drops++;
        bump(s.lay->stats.rx_drops, 1);
        return;
    }
    uint32_t b = s.rx_free.back();
    s.rx_free.pop_back();
    s.rx_given[b] = zsock::rx_app;
    // A datagram longer than a receive buffer (a jumbo frame from the vif)
    // is delivered cut to the buffer with its full length, as recvmsg(2)
    // reports MSG_TRUNC, rather than dropped.
    const uint32_t full = len;
    if (len > rx_capacity) {
        len = rx_capacity;
        n.rx_truncated++;
        s.st.rx_truncated++;
    }
    // The one local copy of a receive: netfront RX page (or, delivered
    // locally, the sender's pool buffer) -> the socket's pool.
    std::memcpy(s.rxmem + size_t{b} * buf_size + headroom, pay, len);
    rx_desc d{};
    d.buf = b;
    d.off = uint16_t(headroom);
    d.len = uint16_t(len);
    d.full_len = full > len ? uint16_t(std::min<uint32_t>(full, 0xffff)) : 0;
    d.src_ip = src_ip;
    d.src_port = src_port;
    s.rx.write(s.rx_prod++, d);
    s.rx.publish(s.rx_prod);
    s.dirty = true;
    s.dirty_rx = true;
    n.rx_udp++;
    s.st.rx_datagrams++;
    s.st.rx_bytes += len;
    bump(s.lay->stats.rx_packets, 1);
    bump(s.lay->stats.rx_bytes, len);
}

void service::impl::drain_fr(zsock& s) noexcept {
    if (!s.open || s.closing) return;
    uint32_t avail = s.fr.avail(s.fr_cons);
    if (avail > s.entries) avail = 0;
    while (avail--) {
        fr_desc d = s.fr.read(s.fr_cons++);
        // Only a buffer the application holds; one it sent is ours until
        // its completion.
        if (d.buf >= s.rx_bufs || s.rx_given[d.buf] != zsock::rx_app) {
            n.fr_bad++;
            s.st.fr_bad++;
            continue;
        }
        s.rx_given[d.buf] = zsock::rx_ours;
        s.rx_free.push_back(d.buf);
    }
    s.fr.release(s.fr_cons);
}

// A received buffer sent on without a copy (zc.h: forwarders, echo
// servers). It is granted to the backend like a send buffer (the receive
// buffers' own share, stackd_pool.cpp), so it goes out as one (a payload
// slot of its grant, buf_gref(); headers in our own page as always). It must be the application's (handed out, not released); the
// entry's offset and length are checked as for a send buffer (the bytes are
// the socket's own either way). It is ours again once the entry completes
// (complete()), not the application's.
int service::impl::take_rx_for_send(zsock& s, const tx_desc& d) noexcept {
    const uint32_t r = d.buf - s.tx_bufs;
    if (s.rx_given[r] == zsock::rx_sending) return -EBUSY;
    if (s.rx_given[r] != zsock::rx_app) return -EINVAL;
    s.rx_given[r] = zsock::rx_sending;
    n.tx_rx_bufs++;
    return 0;
}

void service::impl::rx_all() noexcept {
    for (int i = 0; i < 512; i++) {
        link::rx_info info;
        rx_ctx c{this, &info};
        auto r = nf->recv_view(&on_frame, &c, 0, &info);
        if (!r) break;
    }
    direct_release_flush();
}

} // namespace zc::stackd
