// SPDX-License-Identifier: MIT
// Software segmentation of guests' TCP GSO frames before an uplink
// (docs/ARCHITECTURE.md, "Uplinks"): AF_XDP on Linux 6.1 has no TSO, so a
// GSO super-frame (up to 64 KiB, XEN_NETIF_GSO_TYPE_TCPV4/TCPV6) becomes
// MTU-sized frames here, as Linux's tcp_gso_segment would make them.
// Still one copy per byte: each segment's payload is grant-copied from the
// guest's TX pages straight into its UMEM frame; its headers come from the
// header copy netback made for switching (at most XEN_NETBACK_TX_COPY_LEN
// bytes, enough for Ethernet + IPv6 + TCP with options).
#include <algorithm>
#include <cstring>

#include "netback/common.hpp"
#include "netback/uplink.hpp"
#include "proto/checksum.hpp"

namespace zc::netback {

namespace {
uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void put16(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
void put32(uint8_t* p, uint32_t v) {
    put16(p, v >> 16);
    put16(p + 2, v & 0xffff);
}

// Offsets of the L3 and L4 headers and the full header length of a TCP
// frame of the given GSO type, from its first `len` bytes; false if they
// are not there.
bool tcp_headers(const uint8_t* h, uint32_t len, uint8_t gso, uint16_t& l3, uint16_t& l4, uint16_t& hlen) {
    uint32_t o = eth_hlen;
    if (len < o) return false;
    uint16_t type = be16(h + 12);
    if (type == 0x8100) {
        if (len < o + 4) return false;
        type = be16(h + 16);
        o += 4;
    }
    l3 = uint16_t(o);
    if (gso == XEN_NETIF_GSO_TYPE_TCPV4) {
        if (type != 0x0800 || len < o + 20 || h[o + 9] != 6) return false;
        const uint32_t ihl = uint32_t(h[o] & 0xf) * 4;
        if (ihl < 20) return false;
        o += ihl;
    } else if (gso == XEN_NETIF_GSO_TYPE_TCPV6) {
        if (type != 0x86dd || len < o + 40 || h[o + 6] != 6) return false; // no extension headers
        o += 40;
    } else {
        return false;
    }
    if (len < o + 20) return false;
    const uint32_t doff = uint32_t(h[o + 12] >> 4) * 4;
    if (doff < 20 || len < o + doff) return false;
    l4 = uint16_t(o);
    hlen = uint16_t(o + doff);
    return true;
}
} // namespace

void datapath::impl::uplink_out_gso(worker& w, const queue& q, const tx_packet& p, uplink& u) noexcept {
    uint16_t l3 = 0, l4 = 0, hlen = 0;
    const uint32_t mss = p.gso_size;
    if (!tcp_headers(p.hdr, p.hdr_len, p.gso_type, l3, l4, hlen) || mss == 0 || hlen + mss > u.max_len ||
        hlen + mss > u.max_frame() || p.len <= hlen) {
        bump(u.drop_gso);
        return;
    }
    const uint32_t payload = p.len - hlen;
    const uint32_t nseg = (payload + mss - 1) / mss;
    bump(u.gso_frames);
    // Slot k covers frame bytes [start[k], start[k] + seg[k].len).
    uint32_t start[max_tx_slots];
    uint32_t at = 0;
    for (uint32_t i = 0; i < p.nslots; ++i) {
        start[i] = at;
        at += p.seg[i].len;
    }
    uint32_t slot = 0;
    for (uint32_t k = 0; k < nseg; ++k) {
        pool::frame f;
        if (u.alloc(f) < 0) {
            bump(u.drop_no_buffer);
            continue;
        }
        uint8_t* dst = u.frames().data(f);
        std::memcpy(dst, p.hdr, hlen);
        uplink_tx& t = w.up_tx.emplace_back();
        t.up = &u;
        t.src = q.core.get();
        t.txflags = p.txflags;
        t.gso = p.gso_type;
        t.gso_last = k + 1 == nseg;
        t.l3 = l3;
        t.l4 = l4;
        t.gso_index = k;
        t.gso_mss = mss;
        t.seg_begin = uint32_t(w.up_segs.size());
        // Payload bytes [from, to) of the frame, slot by slot.
        uint32_t from = hlen + k * mss;
        const uint32_t to = std::min(p.len, from + mss);
        uint32_t off = hlen;
        while (from < to && slot < p.nslots) {
            const pool::frame& s = p.seg[slot];
            if (from >= start[slot] + s.len) {
                ++slot;
                continue;
            }
            const uint32_t in = from - start[slot];
            const uint32_t n = std::min(to - from, uint32_t(s.len) - in);
            hv::copy_segment c{};
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = uint16_t(s.offset + in);
            c.source.foreign.domid = s.domid;
            c.dest.virt = dst + off;
            c.len = uint16_t(n);
            c.flags = GNTCOPY_source_gref;
            w.up_segs.push_back(c);
            from += n;
            off += n;
        }
        f.len = uint16_t(off);
        t.f = f;
        t.seg_end = uint32_t(w.up_segs.size());
        bump(u.gso_segments);
        bump(q.core->ctr.grant_copy_segments, t.seg_end - t.seg_begin);
    }
}

void fix_gso_headers(uint8_t* h, const uplink_tx& t) noexcept {
    const uint32_t len = t.f.len;
    if (t.gso == XEN_NETIF_GSO_TYPE_TCPV4) {
        uint8_t* ip = h + t.l3;
        const uint32_t ihl = uint32_t(ip[0] & 0xf) * 4;
        put16(ip + 2, len - t.l3);
        put16(ip + 4, be16(ip + 4) + t.gso_index); // inet_gso_segment: id++ per segment
        put16(ip + 10, 0);
        put16(ip + 10, proto::internet_checksum(ip, ihl));
    } else {
        put16(h + t.l3 + 4, len - t.l3 - 40);
    }
    uint8_t* tcp = h + t.l4;
    put32(tcp + 4, be32(tcp + 4) + t.gso_index * t.gso_mss);
    uint8_t flags = tcp[13];
    if (!t.gso_last) flags &= uint8_t(~(0x01 | 0x08)); // FIN and PSH only on the last
    if (t.gso_index != 0) flags &= uint8_t(~0x80);     // CWR only on the first
    tcp[13] = flags;
}

} // namespace zc::netback
