// SPDX-License-Identifier: MIT
#include "proto/udp.hpp"

#include "proto/checksum.hpp"

namespace zc::proto {

udp_error parse_udp(std::span<const uint8_t> l4, ipv4_addr src, ipv4_addr dst, rx_csum csum,
                    udp_view& out) noexcept {
    if (l4.size() < udp_hdr_len) return udp_error::too_short;
    const uint8_t* p = l4.data();
    const uint16_t ulen = load_be16(p + 4);
    if (ulen < udp_hdr_len || ulen > l4.size()) return udp_error::bad_len;
    out.src_port = load_be16(p);
    out.dst_port = load_be16(p + 2);
    out.len = ulen;
    out.csum = load_be16(p + 6);
    out.csum_checked = false;
    if (out.csum != 0 && csum == rx_csum::verify) {
        // Over the UDP length, not the IP payload: bytes past it are not covered.
        uint32_t s = csum_add(pseudo_header_sum(src, dst, ip_proto::udp, ulen), csum_partial(p, ulen));
        if (s != 0xffff) return udp_error::bad_csum;
        out.csum_checked = true;
    }
    return udp_error::none;
}

size_t write_udp(std::span<uint8_t> out, const udp_params& a, uint32_t payload_sum, tx_csum mode) noexcept {
    if (out.size() < udp_hdr_len || size_t(a.payload_len) + udp_hdr_len > 0xffff) return 0;
    uint8_t* p = out.data();
    const uint16_t ulen = uint16_t(udp_hdr_len + a.payload_len);
    store_be16(p, a.src_port);
    store_be16(p + 2, a.dst_port);
    store_be16(p + 4, ulen);
    uint16_t c = 0;
    switch (mode) {
    case tx_csum::full: {
        uint32_t s = pseudo_header_sum(a.src, a.dst, ip_proto::udp, ulen);
        s = csum_add(s, a.src_port);
        s = csum_add(s, a.dst_port);
        s = csum_add(s, ulen);
        s = csum_add(s, payload_sum);
        c = csum_finish(s);
        if (c == 0) c = 0xffff;  // RFC 768: a computed 0 is sent as all ones; 0 means "none"
        break;
    }
    case tx_csum::offload:
        // Linux's udp4_hwcsum: ~csum_tcpudp_magic(...), i.e. the folded
        // pseudo-header sum, which the checksum engine adds the data to.
        c = uint16_t(pseudo_header_sum(a.src, a.dst, ip_proto::udp, ulen));
        break;
    case tx_csum::none:
        break;
    }
    store_be16(p + 6, c);
    return udp_hdr_len;
}

} // namespace zc::proto
