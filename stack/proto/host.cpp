// SPDX-License-Identifier: MIT
#include "proto/host.hpp"

#include <cstring>

#include "common/log.hpp"
#include "proto/arp.hpp"
#include "proto/checksum.hpp"
#include "proto/icmp.hpp"

namespace zc::proto {

namespace {
// A peer can trigger this at line rate: one limiter for the whole process.
log::ratelimit g_conflict_log{5, 1};

constexpr size_t ip_off = eth_hdr_len;              // VLAN-tagged frames never get past receive
constexpr size_t l4_off = ip_off + ipv4_min_hdr_len; // in frames we build
} // namespace

const char* drop_reason_name(drop_reason r) noexcept {
    switch (r) {
    case drop_reason::none: return "none";
    case drop_reason::bad_eth: return "bad_eth";
    case drop_reason::vlan_tagged: return "vlan_tagged";
    case drop_reason::not_for_us_mac: return "not_for_us_mac";
    case drop_reason::unknown_ethertype: return "unknown_ethertype";
    case drop_reason::bad_ip_hdr: return "bad_ip_hdr";
    case drop_reason::bad_ip_csum: return "bad_ip_csum";
    case drop_reason::ip_fragments: return "ip_fragments";
    case drop_reason::ip_bad_src: return "ip_bad_src";
    case drop_reason::not_for_us: return "not_for_us";
    case drop_reason::unknown_ip_proto: return "unknown_ip_proto";
    case drop_reason::bad_udp: return "bad_udp";
    case drop_reason::bad_udp_csum: return "bad_udp_csum";
    case drop_reason::bad_icmp: return "bad_icmp";
    case drop_reason::bad_icmp_csum: return "bad_icmp_csum";
    case drop_reason::icmp_ignored: return "icmp_ignored";
    case drop_reason::arp_bad: return "arp_bad";
    case drop_reason::arp_conflict: return "arp_conflict";
    case drop_reason::arp_ignored: return "arp_ignored";
    case drop_reason::reply_no_space: return "reply_no_space";
    }
    return "?";
}

std::span<const host_counter_info> host_counter_table() noexcept {
#define ZC_C(f, o) {#f, &host_counters::f, o}
    static const host_counter_info t[] = {
        ZC_C(rx_frames, false),
        ZC_C(udp_delivered, true), ZC_C(icmp_echo_replied, true), ZC_C(arp_request_replied, true),
        ZC_C(arp_learned, true), ZC_C(bad_eth, true), ZC_C(vlan_tagged, true), ZC_C(not_for_us_mac, true),
        ZC_C(unknown_ethertype, true), ZC_C(bad_ip_hdr, true), ZC_C(bad_ip_csum, true),
        ZC_C(ip_fragments, true), ZC_C(ip_bad_src, true), ZC_C(not_for_us, true),
        ZC_C(unknown_ip_proto, true), ZC_C(bad_udp, true), ZC_C(bad_udp_csum, true), ZC_C(bad_icmp, true),
        ZC_C(bad_icmp_csum, true), ZC_C(icmp_ignored, true), ZC_C(arp_bad, true), ZC_C(arp_conflict, true),
        ZC_C(arp_ignored, true), ZC_C(reply_no_space, true),
        ZC_C(ip_options, false), ZC_C(udp_no_csum, false), ZC_C(l4_csum_trusted, false),
        ZC_C(arp_table_full, false), ZC_C(tx_udp, false), ZC_C(tx_arp_requests, false),
        ZC_C(icmp_echo_reply_seen, false), ZC_C(tx_echo_requests, false),
    };
#undef ZC_C
    // A field added to host_counters but not here fails this.
    static_assert(sizeof t / sizeof t[0] == sizeof(host_counters) / sizeof(uint64_t));
    return t;
}

bool set_eth_dst(std::span<uint8_t> frame, const mac_addr& dst) noexcept {
    if (frame.size() < 6) return false;
    dst.store(frame.data());
    return true;
}

result<host> host::create(const host_config& c) {
    const bool bad_mac = c.mac.is_zero() || c.mac.is_multicast();
    const bool bad_ip = c.ip.is_zero() || c.ip.is_multicast() || c.ip.is_limited_broadcast();
    // A netmask is contiguous ones: its complement plus one is a power of two.
    const uint32_t host_bits = ~c.netmask.v;
    const bool bad_mask = (host_bits & (host_bits + 1)) != 0 || c.netmask.v == 0;
    const bool bad_gw = !c.gateway.is_zero() && (c.gateway.v & c.netmask.v) != (c.ip.v & c.netmask.v);
    if (bad_mac || bad_ip || bad_mask || bad_gw || c.mtu < 68) return err(-EINVAL);
    auto a = arp_cache::create(c.arp);
    if (!a) return err(a.error());
    return host(c, std::move(*a));
}

host::host(const host_config& c, arp_cache&& a) noexcept
    // /31 (RFC 3021) and /32 have no subnet broadcast: both addresses are hosts.
    : _c(c), _arp(std::move(a)), _bcast{~c.netmask.v <= 1 ? 0xffffffffu : c.ip.v | ~c.netmask.v} {}

rx_verdict host::dropped(drop_reason r) noexcept {
    switch (r) {
    case drop_reason::none: break;
    case drop_reason::bad_eth: _n.bad_eth++; break;
    case drop_reason::vlan_tagged: _n.vlan_tagged++; break;
    case drop_reason::not_for_us_mac: _n.not_for_us_mac++; break;
    case drop_reason::unknown_ethertype: _n.unknown_ethertype++; break;
    case drop_reason::bad_ip_hdr: _n.bad_ip_hdr++; break;
    case drop_reason::bad_ip_csum: _n.bad_ip_csum++; break;
    case drop_reason::ip_fragments: _n.ip_fragments++; break;
    case drop_reason::ip_bad_src: _n.ip_bad_src++; break;
    case drop_reason::not_for_us: _n.not_for_us++; break;
    case drop_reason::unknown_ip_proto: _n.unknown_ip_proto++; break;
    case drop_reason::bad_udp: _n.bad_udp++; break;
    case drop_reason::bad_udp_csum: _n.bad_udp_csum++; break;
    case drop_reason::bad_icmp: _n.bad_icmp++; break;
    case drop_reason::bad_icmp_csum: _n.bad_icmp_csum++; break;
    case drop_reason::icmp_ignored: _n.icmp_ignored++; break;
    case drop_reason::arp_bad: _n.arp_bad++; break;
    case drop_reason::arp_conflict: _n.arp_conflict++; break;
    case drop_reason::arp_ignored: _n.arp_ignored++; break;
    case drop_reason::reply_no_space: _n.reply_no_space++; break;
    }
    rx_verdict v;
    v.action = rx_action::drop;
    v.reason = r;
    return v;
}

rx_verdict host::receive(std::span<const uint8_t> frame, rx_csum csum, std::span<uint8_t> reply_buf,
                         uint64_t now_ms) noexcept {
    return dispatch(frame.data(), frame.size(), csum, reply_buf.data(), reply_buf.size(), now_ms);
}

rx_verdict host::receive_inplace(std::span<uint8_t> frame, rx_csum csum, uint64_t now_ms) noexcept {
    // Every reply is built from values already parsed out of the request
    // (and the ICMP body with memmove), so output may alias input.
    return dispatch(frame.data(), frame.size(), csum, frame.data(), frame.size(), now_ms);
}

rx_verdict host::dispatch(const uint8_t* in, size_t len, rx_csum csum, uint8_t* out, size_t out_cap,
                          uint64_t now_ms) noexcept {
    _n.rx_frames++;
    eth_view eth;
    if (parse_eth({in, len}, eth) != eth_error::none) return dropped(drop_reason::bad_eth);
    if (eth.dst != _c.mac && !eth.dst.is_broadcast()) return dropped(drop_reason::not_for_us_mac);
    if (eth.has_vlan) return dropped(drop_reason::vlan_tagged);
    const std::span<const uint8_t> l3{in + eth.hdr_len, len - eth.hdr_len};

    if (eth.type == ethertype::arp) {
        arp_view a;
        if (parse_arp(l3, a) != arp_error::none || a.spa.is_multicast() || a.spa.is_limited_broadcast())
            return dropped(drop_reason::arp_bad);
        if (a.spa == _c.ip) {
            if (a.sha == _c.mac) return dropped(drop_reason::arp_ignored);  // our own, looped back
            if (g_conflict_log.allow()) {
                char m[18];
                format_mac(a.sha, m);
                ZC_LOG(warn, "proto", "ARP: %s claims our IPv4 address", m);
            }
            return dropped(drop_reason::arp_conflict);
        }
        const bool for_us = a.tpa == _c.ip;
        rx_verdict v;
        v.action = rx_action::consumed;
        bool learned = false;
        // RFC 5227 probes (sender 0.0.0.0) are answered but teach nothing.
        if (!a.spa.is_zero()) {
            // RFC 826: merge an existing entry always, add one only when the
            // packet is for us (Linux arp_accept=0 behaves the same).
            auto u = _arp.update(a.spa, a.sha, now_ms, for_us);
            if (u.table_full) _n.arp_table_full++;
            learned = u.known || u.created;
            v.released = u.released;
            v.released_mac = a.sha;
        }
        if (a.op == arp_op::request && for_us) {
            if (out_cap < arp_frame_len) {
                rx_verdict d = dropped(drop_reason::reply_no_space);
                d.released = v.released;
                d.released_mac = v.released_mac;
                return d;
            }
            write_eth({out, out_cap}, a.sha, _c.mac, ethertype::arp);
            write_arp({out + eth_hdr_len, out_cap - eth_hdr_len}, arp_op::reply, _c.mac, _c.ip, a.sha, a.spa);
            _n.arp_request_replied++;
            v.action = rx_action::reply;
            v.reply_len = arp_frame_len;
            return v;
        }
        if (!learned) {
            rx_verdict d = dropped(drop_reason::arp_ignored);
            return d;
        }
        _n.arp_learned++;
        return v;
    }

    if (eth.type != ethertype::ipv4) return dropped(drop_reason::unknown_ethertype);

    ipv4_view ip;
    switch (parse_ipv4(l3, ip)) {
    case ipv4_error::none: break;
    case ipv4_error::bad_csum: return dropped(drop_reason::bad_ip_csum);
    case ipv4_error::fragment: return dropped(drop_reason::ip_fragments);
    default: return dropped(drop_reason::bad_ip_hdr);
    }
    // Martian sources (Linux ip_route_input_slow): never answer them.
    if (ip.src.is_multicast() || ip.src.is_limited_broadcast() || ip.src.is_loopback() || ip.src == _c.ip ||
        ip.src == _bcast)
        return dropped(drop_reason::ip_bad_src);
    const bool bcast = ip.dst.is_limited_broadcast() || ip.dst == _bcast;
    if (ip.dst != _c.ip && !bcast) return dropped(drop_reason::not_for_us);
    if (ip.hdr_len > ipv4_min_hdr_len) _n.ip_options++;
    const std::span<const uint8_t> l4 = l3.subspan(ip.hdr_len, ip.payload_len());
    if (csum != rx_csum::verify && (ip.proto == ip_proto::udp || ip.proto == ip_proto::icmp))
        _n.l4_csum_trusted++;

    if (ip.proto == ip_proto::udp) {
        udp_view u;
        switch (parse_udp(l4, ip.src, ip.dst, csum, u)) {
        case udp_error::none: break;
        case udp_error::bad_csum: return dropped(drop_reason::bad_udp_csum);
        default: return dropped(drop_reason::bad_udp);
        }
        if (u.csum == 0) _n.udp_no_csum++;
        _n.udp_delivered++;
        rx_verdict v;
        v.action = rx_action::udp;
        v.udp.src_mac = eth.src;
        v.udp.src_ip = ip.src;
        v.udp.dst_ip = ip.dst;
        v.udp.src_port = u.src_port;
        v.udp.dst_port = u.dst_port;
        v.udp.payload_off = uint32_t(eth.hdr_len + ip.hdr_len + udp_hdr_len);
        v.udp.payload_len = u.payload_len();
        v.udp.broadcast = bcast;
        return v;
    }

    if (ip.proto == ip_proto::icmp) {
        icmp_echo_view e;
        switch (parse_icmp_echo(l4, csum, e)) {
        case icmp_error::none: break;
        case icmp_error::too_short: return dropped(drop_reason::bad_icmp);
        case icmp_error::bad_csum: return dropped(drop_reason::bad_icmp_csum);
        case icmp_error::not_echo_request: return dropped(drop_reason::icmp_ignored);
        }
        if (e.type == icmp_type::echo_reply) {
            // Not ours to act on, but the caller may be waiting for it.
            rx_verdict v = dropped(drop_reason::icmp_ignored);
            if (!bcast) {
                _n.icmp_echo_reply_seen++;
                v.echo.valid = true;
                v.echo.src = ip.src;
                v.echo.id = e.id;
                v.echo.seq = e.seq;
                v.echo.data_off = uint32_t(eth.hdr_len + ip.hdr_len + icmp_echo_hdr_len);
                v.echo.data_len = uint32_t(l4.size() - icmp_echo_hdr_len);
            }
            return v;
        }
        // A broadcast ping is a smurf amplifier (RFC 1122 3.2.2.6 lets us
        // ignore it); a source of 0.0.0.0 has nobody to answer to.
        if ((bcast && !_c.reply_broadcast_ping) || ip.src.is_zero()) return dropped(drop_reason::icmp_ignored);
        const size_t msg_len = l4.size();
        const size_t reply_len = l4_off + msg_len;
        if (out_cap < reply_len) return dropped(drop_reason::reply_no_space);
        // The body first (memmove: in place it slides down over IP options),
        // then the headers, which only use values parsed above.
        if (out + l4_off != l4.data()) std::memmove(out + l4_off, l4.data(), msg_len);
        icmp_echo_reply_inplace({out + l4_off, msg_len}, e);
        write_eth({out, out_cap}, eth.src, _c.mac, ethertype::ipv4);
        ipv4_params p;
        p.src = _c.ip;
        p.dst = ip.src;
        p.proto = ip_proto::icmp;
        p.tos = ip.tos;
        p.df = false;
        p.id = _ip_id++;
        p.payload_len = uint16_t(msg_len);
        write_ipv4({out + ip_off, out_cap - ip_off}, p);
        _n.icmp_echo_replied++;
        rx_verdict v;
        v.action = rx_action::reply;
        v.reply_len = uint32_t(reply_len);
        return v;
    }

    return dropped(drop_reason::unknown_ip_proto);
}

ipv4_addr host::next_hop(ipv4_addr dst) const noexcept {
    if (dst.is_limited_broadcast() || (dst.v & _c.netmask.v) == (_c.ip.v & _c.netmask.v)) return dst;
    return _c.gateway;
}

host::resolution host::resolve(ipv4_addr dst, uint64_t now_ms, const uint64_t* cookie) noexcept {
    resolution r;
    if (dst.is_limited_broadcast() || dst == _bcast) {
        r.st = arp_cache::status::resolved;
        r.mac = mac_addr::broadcast();
        return r;
    }
    if (dst.is_multicast()) {
        // RFC 1112 6.4: 01-00-5E plus the low 23 bits of the group.
        r.st = arp_cache::status::resolved;
        r.mac = {{0x01, 0x00, 0x5e, uint8_t((dst.v >> 16) & 0x7f), uint8_t(dst.v >> 8), uint8_t(dst.v)}};
        return r;
    }
    if (dst == _c.ip) return r;  // unknown: proto has no loopback
    const ipv4_addr hop = next_hop(dst);
    if (hop.is_zero()) return r;  // unknown: no route
    auto l = _arp.resolve(hop, now_ms, cookie);
    if (l.st == arp_cache::status::table_full) _n.arp_table_full++;
    r.st = l.st;
    r.mac = l.mac;
    r.send_request = l.send_request;
    r.target = hop;
    return r;
}

size_t host::build_arp_request(ipv4_addr target, std::span<uint8_t> out) noexcept {
    if (out.size() < arp_frame_len) return 0;
    write_eth(out, mac_addr::broadcast(), _c.mac, ethertype::arp);
    write_arp(out.subspan(eth_hdr_len), arp_op::request, _c.mac, _c.ip, mac_addr{}, target);
    _n.tx_arp_requests++;
    return arp_frame_len;
}

size_t host::build_arp_announce(std::span<uint8_t> out) noexcept {
    if (out.size() < arp_frame_len) return 0;
    write_eth(out, mac_addr::broadcast(), _c.mac, ethertype::arp);
    write_arp(out.subspan(eth_hdr_len), arp_op::request, _c.mac, _c.ip, mac_addr{}, _c.ip);
    _n.tx_arp_requests++;
    return arp_frame_len;
}

size_t host::build_echo_request(std::span<uint8_t> out, const mac_addr& dst_mac, ipv4_addr dst, uint16_t id,
                                uint16_t seq, std::span<const uint8_t> data) noexcept {
    const size_t msg_len = icmp_echo_hdr_len + data.size();
    if (ipv4_min_hdr_len + msg_len > _c.mtu || out.size() < l4_off + msg_len) return 0;
    write_icmp_echo_request(out.subspan(l4_off), id, seq, data);
    write_eth(out, dst_mac, _c.mac, ethertype::ipv4);
    ipv4_params p;
    p.src = _c.ip;
    p.dst = dst;
    p.proto = ip_proto::icmp;
    p.df = false;
    p.id = _ip_id++;
    p.payload_len = uint16_t(msg_len);
    write_ipv4(out.subspan(ip_off), p);
    _n.tx_echo_requests++;
    return l4_off + msg_len;
}

int host::udp_headers(std::span<uint8_t> hdr, size_t payload_len, uint32_t payload_sum, const udp_flow& f,
                      tx_csum mode, tx_headers& out) noexcept {
    if (hdr.size() < udp_headroom) return -ENOSPC;
    if (payload_len > size_t(_c.mtu) - ipv4_min_hdr_len - udp_hdr_len) return -EMSGSIZE;
    uint8_t* p = hdr.data();
    write_eth(hdr, f.dst_mac, _c.mac, ethertype::ipv4);
    ipv4_params ip;
    ip.src = _c.ip;
    ip.dst = f.dst_ip;
    ip.proto = ip_proto::udp;
    ip.ttl = f.ttl;
    ip.tos = f.tos;
    ip.id = _ip_id++;
    ip.payload_len = uint16_t(udp_hdr_len + payload_len);
    write_ipv4({p + ip_off, ipv4_min_hdr_len}, ip);
    udp_params u;
    u.src = _c.ip;
    u.dst = f.dst_ip;
    u.src_port = f.src_port;
    u.dst_port = f.dst_port;
    u.payload_len = uint16_t(payload_len);
    write_udp({p + l4_off, udp_hdr_len}, u, payload_sum, mode);
    out.frame_off = 0;
    out.frame_len = uint32_t(udp_headroom + payload_len);
    out.csum_blank = mode == tx_csum::offload;
    out.csum_start = out.csum_blank ? uint16_t(l4_off) : 0;
    out.csum_offset = out.csum_blank ? uint16_t(udp_csum_offset) : 0;
    _n.tx_udp++;
    return 0;
}

int host::udp_in_headroom(std::span<uint8_t> buf, size_t payload_off, size_t payload_len, const udp_flow& f,
                          tx_csum mode, tx_headers& out) noexcept {
    if (payload_off < udp_headroom || payload_off > buf.size() || payload_len > buf.size() - payload_off)
        return -ENOSPC;
    if (payload_len > size_t(_c.mtu) - ipv4_min_hdr_len - udp_hdr_len) return -EMSGSIZE;
    const uint32_t sum = mode == tx_csum::full ? csum_partial(buf.data() + payload_off, payload_len) : 0;
    int rc = udp_headers(buf.subspan(payload_off - udp_headroom, udp_headroom), payload_len, sum, f, mode, out);
    if (rc < 0) return rc;
    out.frame_off = uint32_t(payload_off - udp_headroom);
    return 0;
}

} // namespace zc::proto
