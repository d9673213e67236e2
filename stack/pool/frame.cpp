// SPDX-License-Identifier: MIT
#include "pool/frame.hpp"

extern "C" {
#include <xen/io/netif.h>
}

namespace zc::pool {

// Checksum bits and GSO types are carried through netback unchanged.
static_assert(seg_flag::csum_blank == NETTXF_csum_blank);
static_assert(seg_flag::data_validated == NETTXF_data_validated);
static_assert(uint8_t(gso_type::tcpv4) == XEN_NETIF_GSO_TYPE_TCPV4);
static_assert(uint8_t(gso_type::tcpv6) == XEN_NETIF_GSO_TYPE_TCPV6);
// A foreign segment never crosses its granted page, so offset and len fit
// 16 bits; a local one never crosses its buffer (<= 64 KiB).
static_assert(hv::page_size <= 0xFFFF);

size_t frame_bytes(const frame& f) noexcept {
    size_t n = 0;
    for (const frame* s = &f; s; s = s->next) n += s->len;
    return n;
}

uint32_t frame_segments(const frame& f) noexcept {
    uint32_t n = 0;
    for (const frame* s = &f; s; s = s->next) ++n;
    return n;
}

} // namespace zc::pool
