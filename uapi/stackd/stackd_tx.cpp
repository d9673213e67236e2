// SPDX-License-Identifier: MIT
// zc-stackd, transmit: entries of a socket's TX ring checked, given headers
// and handed to netfront as grants of the socket's pool; their completions
// back into the socket's completion ring; entries waiting for ARP; and the
// ARP requests, timers and ping echo requests the service sends itself.
#include <algorithm>
#include <cerrno>

#include <arpa/inet.h>

extern "C" {
#include <xen/io/netif.h>
}

#include "common/clock.hpp"
#include "proto/checksum.hpp"
#include "proto/ether.hpp"
#include "proto/icmp.hpp"
#include "proto/ipv4.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

void service::impl::complete(zsock& s, const tx_desc& d, int32_t res, bool taken) noexcept {
    if (s.cq_reserved) s.cq_reserved--;
    // A received buffer the application sent: ours again, to receive into.
    if (taken && d.buf >= s.tx_bufs) {
        const uint32_t r = d.buf - s.tx_bufs;
        if (r < s.rx_bufs && s.rx_given[r] == zsock::rx_sending) {
            s.rx_given[r] = zsock::rx_ours;
            s.rx_free.push_back(r);
        }
    }
    if (res < 0) {
        n.tx_errors++;
        s.st.tx_errors++;
        if (s.lay) bump(s.lay->stats.tx_errors, 1);
    }
    if (s.closing) return;
    cq_desc c{d.user_data, res, d.buf | ((d.flags & tx_f_copied) ? cq_buf_copied : 0)};
    s.cq.write(s.cq_prod++, c);
    s.cq.publish(s.cq_prod);
    s.dirty = true;
}

// Headers, then the payload as the pool page's grant, into netfront TX
// slots. Returns false when netfront is full (retry later).
bool service::impl::submit(zsock& s, const tx_desc& d, const proto::mac_addr& dmac) noexcept {
    proto::udp_flow f;
    f.dst_mac = dmac;
    f.dst_ip = proto::ipv4_addr{ntohl(d.dst_ip)};
    f.src_port = ntohs(s.port);
    f.dst_port = ntohs(d.dst_port);
    if (copy_pool) return submit_copy(s, d, f); // stackd_pool.cpp
    if (!opt.private_headers) return submit_headroom(s, d, f);
    proto::tx_headers h;
    const proto::tx_csum mode = opt.csum_offload && d.len ? proto::tx_csum::offload : proto::tx_csum::full;
    // Headers in a page of ours (netfront copies them into its TX page), the
    // payload from the application's pool page: the application cannot
    // rewrite the headers between here and the backend's copy.
    uint8_t hdr[std::max<size_t>(proto::udp_headroom, 60)] = {};
    const uint8_t* pay = buf_ptr(s, d.buf) + d.off;
    uint32_t sum = mode == proto::tx_csum::full && d.len ? proto::csum_partial(pay, d.len) : 0;
    int rc = host->udp_headers(std::span<uint8_t>(hdr, proto::udp_headroom), d.len, sum, f, mode, h);
    if (rc < 0) {
        complete(s, d, rc);
        return true;
    }
    if (d.len == 0) {
        // No payload slot: the whole frame is ours, sent by copy (padded to
        // the Ethernet minimum; the IP length says where it ends).
        rc = nf->send(hdr, sizeof hdr);
        if (rc == -EAGAIN) return false;
        n.tx_zc += rc == 0;
        s.st.tx_datagrams += rc == 0;
        complete(s, d, rc < 0 ? rc : 0);
        return true;
    }
    link::tx_offload off{};
    off.csum_blank = h.csum_blank;
    if (int dr = direct_submit(s, d, dmac, hdr, proto::udp_headroom, off); dr != 0) return dr > 0;
    uint16_t po = 0;
    const hv::gref_t ref = buf_gref(s, d.buf, d.off, po);
    rc = nf->tx_submit_granted_sg(hdr, proto::udp_headroom, ref, po, d.len, cookie_of(s.slot, s.gen, d.buf), 0, &off);
    if (rc == -EAGAIN) return false;
    // -EOPNOTSUPP: the backend has no feature-sg; headers in the buffer
    // would be the application's to rewrite, so the datagram is refused.
    if (rc < 0) complete(s, d, rc);
    else accepted(s, d);
    return true;
}

// --tx-headers headroom (trusted applications only, stackd.hpp): headers
// written into the buffer's headroom, the frame one slot.
bool service::impl::submit_headroom(zsock& s, const tx_desc& d, const proto::udp_flow& f) noexcept {
    uint8_t* b = buf_ptr(s, d.buf);
    proto::tx_headers h;
    const proto::tx_csum mode = opt.csum_offload ? proto::tx_csum::offload : proto::tx_csum::full;
    int rc = host->udp_in_headroom(std::span<uint8_t>(b, buf_size), d.off, d.len, f, mode, h);
    if (rc < 0) {
        complete(s, d, rc);
        return true;
    }
    uint16_t po = 0;
    const hv::gref_t ref = buf_gref(s, d.buf, h.frame_off, po);
    link::tx_offload off{};
    off.csum_blank = h.csum_blank;
    rc = nf->tx_submit_granted(ref, po, h.frame_len,
                               cookie_of(s.slot, s.gen, d.buf), 0, &off);
    if (rc == -EAGAIN) return false;
    if (rc < 0) complete(s, d, rc);
    else accepted(s, d);
    return true;
}

// netfront took the buffer: it is the stack's until its TX response.
void service::impl::accepted(zsock& s, const tx_desc& d) noexcept {
    s.inflight[d.buf] = zsock::tx_sent;
    s.inflight_n++;
    if (s.direct_fell) { // direct_tx.cpp: to a direct-path peer, on the ordinary path
        s.direct_fell = false;
        n.tx_direct_fallback++;
        s.st.tx_direct_fallback++;
    }
    n.tx_zc++;
    s.st.tx_datagrams++;
    s.st.tx_bytes += d.len;
    s.sent[d.buf] = d;
}

uint32_t service::impl::source_for(const zsock& s, uint32_t dst) const noexcept {
    if (s.ip) return s.ip;
    return (ntohl(dst) >> 24) == 127 ? htonl(INADDR_LOOPBACK) : htonl(opt.ip);
}

// A datagram between two sockets of this guest never reaches the vif, as
// Linux routes its own addresses through the loopback device (the local
// table, ip_route_output_key()): the receiver's copy from the sender's
// pool buffer is the only one, and the send completes at once. The source
// is source_for(): 127.0.0.1 toward 127.0.0.0/8, the guest's address
// toward the guest's address (unless the sender is bound to one).
bool service::impl::deliver_local(zsock& s, const tx_desc& d) noexcept {
    const uint32_t dst = ntohl(d.dst_ip);
    if (dst != opt.ip && (dst >> 24) != 127) return false;
    const uint8_t* pay = buf_ptr(s, d.buf) + d.off;
    n.tx_zc++;
    n.tx_local++;
    s.st.tx_datagrams++;
    s.st.tx_bytes += d.len;
    deliver_payload(pay, d.len, source_for(s, d.dst_ip), s.port, d.dst_ip, d.dst_port);
    complete(s, d, int32_t(d.len));
    return true;
}

// Returns false when the entry is held (netfront full, or its neighbour's
// ARP queue full). A destination whose neighbour is being resolved does not
// hold the ring: the entry waits in the neighbour's queue of the ARP cache
// (bounded, opts.unres_qlen, as Linux's arp_queue) and the entries behind
// it, to other destinations, go.
bool service::impl::send_one(zsock& s, const tx_desc& d) noexcept {
    if (deliver_local(s, d)) return true;
    proto::ipv4_addr dst{ntohl(d.dst_ip)};
    uint64_t ck = cookie_of(s.slot, s.gen, d.buf);
    auto r = host->resolve(dst, now, &ck);
    if (r.send_request) send_arp_request(r.target);
    switch (r.st) {
    case proto::arp_cache::status::resolved:
        if (submit(s, d, r.mac)) return true;
        s.held = zsock::hold::retry;
        s.held_desc = d;
        return false;
    case proto::arp_cache::status::pending:
        // Queued: the buffer is the stack's until arp_released().
        s.inflight[d.buf] = zsock::tx_arp;
        s.inflight_n++;
        s.sent[d.buf] = d;
        return true;
    case proto::arp_cache::status::queue_full:
        // The neighbour's queue is full: unlike Linux, which drops the
        // oldest (neigh_event_send), the ring waits behind this entry until
        // the neighbour resolves or fails (back-pressure, never a loss).
        n.tx_unres_waits++;
        s.held = zsock::hold::retry;
        s.held_desc = d;
        return false;
    case proto::arp_cache::status::unknown: complete(s, d, -ENETUNREACH); return true;
    default: complete(s, d, -ENOBUFS); return true;
    }
}

void service::impl::send_arp_request(proto::ipv4_addr target) noexcept {
    uint8_t f[64] = {};
    size_t len = host->build_arp_request(target, std::span<uint8_t>(f, sizeof f));
    if (len) (void)nf->send(f, std::max<size_t>(len, 60));
}

// Datagrams whose neighbour resolved while netfront was full, oldest
// first. False when netfront is still full.
bool service::impl::flush_arp_ready(zsock& s) noexcept {
    size_t i = 0;
    for (; i < s.arp_ready.size(); i++) {
        const auto& r = s.arp_ready[i];
        s.inflight[r.buf] = 0;
        s.inflight_n--;
        if (!submit(s, s.sent[r.buf], r.mac)) {
            s.inflight[r.buf] = zsock::tx_arp;
            s.inflight_n++;
            break;
        }
    }
    s.arp_ready.erase(s.arp_ready.begin(), s.arp_ready.begin() + std::ptrdiff_t(i));
    return s.arp_ready.empty();
}

void service::impl::drain_tx(zsock& s) noexcept {
    if (!s.open || s.closing) return;
    if (!flush_arp_ready(s)) return;
    if (s.held == zsock::hold::retry) {
        s.held = zsock::hold::none;
        if (!send_one(s, s.held_desc)) return;
    }
    uint32_t avail = s.tx.avail(s.tx_cons);
    if (avail && !s.port) (void)do_bind(s, 0, 0, true); // sendto on an unbound socket, as UDP does
    if (avail > s.entries) avail = 0; // a producer index we cannot believe: ignore until sane
    while (avail) {
        // Room for the completion must exist before we take the entry.
        if (s.cq.free_slots(s.cq_prod) <= s.cq_reserved) break;
        tx_desc d = s.tx.read(s.tx_cons);
        d.flags &= uint16_t(~tx_f_ordinary);
        int bad = d.buf >= s.tx_bufs + s.rx_bufs || d.off < hdr_len || d.len > max_payload ||
                          size_t{d.off} + d.len > buf_size || d.dst_ip == 0 || d.dst_port == 0 || !s.port
                      ? -EINVAL
                      : 0;
        if (!bad && s.inflight[d.buf]) bad = -EBUSY; // sent again before its completion
        if (!bad && d.buf >= s.tx_bufs) bad = take_rx_for_send(s, d);
        s.tx_cons++;
        avail--;
        s.cq_reserved++;
        if (bad) {
            n.tx_bad_desc++;
            s.st.tx_bad_desc++;
            complete(s, d, bad, false);
            continue;
        }
        if (!send_one(s, d)) break; // held
    }
    s.tx.release(s.tx_cons);
}

void service::impl::reap_tx() noexcept {
    link::tx_done buf[64];
    for (;;) {
        uint32_t k = nf->tx_reap_granted(buf, 64);
        for (uint32_t i = 0; i < k; i++) {
            // A slot is reused only once nothing of it is in flight, so
            // the socket is there; the checks guard against our own bugs.
            uint32_t slot = uint32_t(buf[i].cookie >> 48), b = uint32_t(buf[i].cookie & 0xffffffffu);
            if (slot >= socks.size() || !socks[slot]) continue;
            zsock& s = *socks[slot];
            if ((s.gen & 0xffff) != ((buf[i].cookie >> 32) & 0xffff) || b >= s.inflight.size() || !s.inflight[b])
                continue;
            if (s.inflight[b] == zsock::tx_direct) {
                direct_done(s, b, buf[i].status);
                continue;
            }
            const tx_desc d = s.sent[b];
            s.inflight[d.buf] = 0;
            s.inflight_n--;
            complete(s, d, buf[i].status == NETIF_RSP_OKAY ? int32_t(d.len) : -EIO);
        }
        if (k < 64) break;
    }
}

// ARP answered (mac) or failed (nullptr) for waiters: the cookies name
// sockets and their buffers. A failed resolution completes the datagram
// with -EHOSTUNREACH, as Linux reports a neighbour that never answered
// (arp_error_report() -> ICMP_HOST_UNREACH, net/ipv4/arp.c).
void service::impl::arp_released(std::span<const uint64_t> cookies, const proto::mac_addr* mac) noexcept {
    for (uint64_t ck : cookies) {
        uint32_t slot = uint32_t(ck >> 48), b = uint32_t(ck & 0xffffffffu);
        if (slot >= socks.size() || !socks[slot]) continue;
        zsock& s = *socks[slot];
        if ((s.gen & 0xffff) != ((ck >> 32) & 0xffff) || b >= s.inflight.size() || s.inflight[b] != zsock::tx_arp)
            continue;
        s.inflight[b] = 0;
        s.inflight_n--;
        const tx_desc d = s.sent[b];
        if (!mac) {
            n.tx_unresolved++;
            complete(s, d, -EHOSTUNREACH);
        } else if (s.closing) {
            if (s.cq_reserved) s.cq_reserved--; // nobody to tell
        } else if (!s.arp_ready.empty() || !submit(s, d, *mac)) {
            // netfront full (or older ones wait): sent from drain_tx.
            s.inflight[b] = zsock::tx_arp;
            s.inflight_n++;
            s.arp_ready.push_back({b, *mac});
        }
    }
}

void service::impl::timers() noexcept {
    uint64_t t = uint64_t(mono_ms());
    proto::arp_cache::event ev;
    while (host->arp_expire(t, ev)) {
        if (ev.what == proto::arp_cache::event::kind::retry) send_arp_request(ev.ip);
        else arp_released(ev.waiters, nullptr);
    }
    for (auto& sp : socks) {
        if (!sp) continue;
        zsock& s = *sp;
        if (!s.open && !s.closing && t > s.accepted_ms + opt.setup_timeout_ms) {
            // Accepted, never set up: the slot goes back (an application
            // cannot hold slots with idle connections).
            n.setup_timeouts++;
            close_sock(s);
            continue;
        }
        if (s.ping && t > s.ping_deadline) {
            s.ping = false;
            (void)send_rc(s.ctl, -ETIMEDOUT);
        }
    }
}

void service::impl::send_echo(zsock& s, const proto::mac_addr& mac) noexcept {
    uint8_t f[14 + 20 + 8 + 56] = {};
    const size_t icmp_len = 8 + 56;
    proto::write_eth(std::span<uint8_t>(f, 14), mac, host->config().mac, proto::ethertype::ipv4);
    proto::ipv4_params ip;
    ip.src = host->config().ip;
    ip.dst = proto::ipv4_addr{ntohl(s.ping_ip)};
    ip.proto = proto::ip_proto::icmp;
    ip.payload_len = uint16_t(icmp_len);
    ip.id = s.ping_id;
    proto::write_ipv4(std::span<uint8_t>(f + 14, 20), ip);
    uint8_t* ic = f + 34;
    ic[0] = proto::icmp_type::echo_request;
    ic[1] = 0;
    ic[4] = uint8_t(s.ping_id >> 8), ic[5] = uint8_t(s.ping_id);
    ic[6] = uint8_t(s.ping_seq >> 8), ic[7] = uint8_t(s.ping_seq);
    for (size_t i = 8; i < icmp_len; i++) ic[i] = uint8_t(i);
    uint16_t cs = proto::internet_checksum(ic, icmp_len); // host order (checksum.hpp)
    ic[2] = uint8_t(cs >> 8), ic[3] = uint8_t(cs);
    s.ping_t0 = uint64_t(mono_us());
    if (nf->send(f, sizeof f) == 0) {
        s.ping_sent = true;
        n.pings_sent++;
    }
}

void service::impl::pings_resolve() noexcept {
    for (auto& sp : socks) {
        if (!sp || !sp->ping || sp->ping_sent) continue;
        // Off the subnet, the gateway's MAC (host::next_hop).
        auto r = host->arp().lookup(host->next_hop(proto::ipv4_addr{ntohl(sp->ping_ip)}), uint64_t(mono_ms()));
        if (r.st == proto::arp_cache::status::resolved) send_echo(*sp, r.mac);
    }
}

} // namespace zc::stackd
