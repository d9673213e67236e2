// SPDX-License-Identifier: MIT
#include "netback/offload.hpp"

extern "C" {
#include <xen/io/netif.h>
}

#include "proto/checksum.hpp"

namespace zc::netback {

namespace {
constexpr uint32_t eth_hlen = 14, vlan_hlen = 4;
constexpr uint8_t ipproto_tcp = 6, ipproto_udp = 17;
constexpr uint8_t ipproto_hopopts = 0, ipproto_routing = 43, ipproto_fragment = 44, ipproto_dstopts = 60;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
} // namespace

offload_verdict check_offload(const uint8_t* hdr, uint32_t hdr_len, uint32_t len, uint8_t txflags, uint8_t gso_type,
                              uint16_t gso_size, offload_info* out) noexcept {
    offload_info f;
    const bool gso = gso_type != XEN_NETIF_GSO_TYPE_NONE;
    f.needs_csum = gso || (txflags & NETTXF_csum_blank);
    if (hdr_len > len) hdr_len = len;
    if (hdr_len >= eth_hlen) {
        const uint16_t proto = be16(hdr + 12);
        f.ip_version = proto == 0x0800 ? 4 : proto == 0x86dd ? 6 : 0;
    }
    if (out) *out = f;
    if (!f.needs_csum) return offload_verdict::ok;

    // skb_checksum_setup: IPv4 or IPv6 only (the Ethernet type; a VLAN tag
    // makes it -EPROTO too).
    uint32_t l4 = 0;
    uint8_t proto = 0;
    if (f.ip_version == 4) {
        if (hdr_len < eth_hlen + 20) return offload_verdict::bad_metadata;
        const uint8_t* ip = hdr + eth_hlen;
        const uint32_t ihl = uint32_t(ip[0] & 0xf) * 4;
        if ((ip[0] >> 4) != 4 || ihl < 20) return offload_verdict::bad_metadata;
        // ip_is_fragment(): MF or a fragment offset.
        if (be16(ip + 6) & 0x3fff) return offload_verdict::bad_metadata;
        proto = ip[9];
        l4 = eth_hlen + ihl;
    } else if (f.ip_version == 6) {
        if (hdr_len < eth_hlen + 40) return offload_verdict::bad_metadata;
        const uint8_t* ip = hdr + eth_hlen;
        if ((ip[0] >> 4) != 6) return offload_verdict::bad_metadata;
        // skb_checksum_setup_ipv6: walk the extension headers; a fragment
        // header fails.
        proto = ip[6];
        l4 = eth_hlen + 40;
        for (int n = 0; n < 8; ++n) {
            if (proto == ipproto_fragment) return offload_verdict::bad_metadata;
            if (proto != ipproto_hopopts && proto != ipproto_routing && proto != ipproto_dstopts) break;
            if (l4 + 2 > hdr_len) return offload_verdict::bad_metadata;
            proto = hdr[l4];
            l4 += (uint32_t(hdr[l4 + 1]) + 1) * 8;
        }
    } else {
        return offload_verdict::bad_metadata;
    }
    // The checksum field (TCP: offset 16, UDP: offset 6) inside the frame.
    uint32_t csum_end = 0;
    if (proto == ipproto_tcp) csum_end = l4 + 18;
    else if (proto == ipproto_udp && !gso) csum_end = l4 + 8;
    else return offload_verdict::bad_metadata;
    if (csum_end > len) return offload_verdict::bad_metadata;
    if (gso) {
        // xenvif_set_skb_gso: the type matches the IP version; the TCP
        // header (data offset) is whole and leaves payload to segment.
        const bool v4 = gso_type == XEN_NETIF_GSO_TYPE_TCPV4;
        if ((v4 && f.ip_version != 4) || (!v4 && f.ip_version != 6) || gso_size == 0)
            return offload_verdict::bad_metadata;
        if (l4 + 13 > hdr_len) return offload_verdict::bad_metadata;
        const uint32_t doff = uint32_t(hdr[l4 + 12] >> 4) * 4;
        if (doff < 20 || l4 + doff >= len) return offload_verdict::bad_metadata;
    }
    return offload_verdict::ok;
}

offload_verdict check_destination(const offload_info& f, uint32_t len, uint8_t gso_type,
                                  const vif_params& dst) noexcept {
    const bool gso = gso_type != XEN_NETIF_GSO_TYPE_NONE;
    if (!gso && dst.mtu && len > dst.mtu + eth_hlen + vlan_hlen) return offload_verdict::over_mtu;
    if (f.needs_csum && ((f.ip_version == 4 && dst.feature_no_csum_offload) ||
                         (f.ip_version == 6 && !dst.feature_ipv6_csum_offload)))
        return gso ? offload_verdict::no_csum : offload_verdict::complete_csum;
    return offload_verdict::ok;
}

bool complete_checksum(const frame_piece* pc, uint32_t n) noexcept {
    if (n == 0) return false;
    uint32_t len = 0; // of the whole frame
    for (uint32_t i = 0; i < n; ++i) {
        if (i + 1 < n && pc[i].len % 2) return false; // the sums below need even piece boundaries
        len += pc[i].len;
    }
    uint8_t* const f = pc[0].data;
    const uint32_t hlen = pc[0].len; // the headers are read from here only
    uint32_t l3 = eth_hlen;
    if (hlen < l3) return false;
    uint16_t type = be16(f + 12);
    if (type == 0x8100) { // one 802.1Q tag
        if (hlen < l3 + vlan_hlen) return false;
        type = be16(f + 16);
        l3 += vlan_hlen;
    }
    uint32_t l4 = 0, l4_len = 0, sum = 0;
    uint8_t proto = 0;
    if (type == 0x0800) {
        if (hlen < l3 + 20) return false;
        const uint32_t ihl = uint32_t(f[l3] & 0xf) * 4;
        const uint32_t tot = be16(f + l3 + 2);
        if (ihl < 20 || tot < ihl || l3 + tot > len) return false;
        proto = f[l3 + 9];
        l4 = l3 + ihl;
        l4_len = tot - ihl;
        sum = proto::csum_partial(f + l3 + 12, 8); // source and destination addresses
    } else if (type == 0x86dd) {
        if (hlen < l3 + 40) return false;
        const uint32_t plen = be16(f + l3 + 4);
        proto = f[l3 + 6]; // no extension headers: a guest's TCP/UDP
        l4 = l3 + 40;
        l4_len = plen;
        if (l4 + l4_len > len) return false;
        sum = proto::csum_partial(f + l3 + 8, 32);
    } else {
        return false;
    }
    uint32_t field;
    if (proto == ipproto_tcp) field = 16;
    else if (proto == ipproto_udp) field = 6;
    else return false;
    if (l4_len < field + 2 || l4 + field + 2 > hlen) return false;
    // proto/checksum.hpp: sums of big-endian words, the checksum in host
    // order; each piece starts at an even offset of the frame (l4 is even:
    // 14 or 18 plus a multiple of 4), so the pieces' sums just add up.
    sum = proto::csum_add(sum, proto);
    sum = proto::csum_add(sum, l4_len);
    f[l4 + field] = f[l4 + field + 1] = 0;
    const uint32_t end = l4 + l4_len;
    for (uint32_t i = 0, off = 0; i < n && off < end; off += pc[i].len, ++i) {
        const uint32_t lo = off > l4 ? off : l4, hi = off + pc[i].len < end ? off + pc[i].len : end;
        if (lo < hi) sum = proto::csum_partial(pc[i].data + (lo - off), hi - lo, sum);
    }
    uint16_t c = proto::csum_finish(sum);
    if (proto == ipproto_udp && c == 0) c = 0xffff;
    f[l4 + field] = uint8_t(c >> 8);
    f[l4 + field + 1] = uint8_t(c);
    return true;
}

} // namespace zc::netback
