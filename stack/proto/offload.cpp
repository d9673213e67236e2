// SPDX-License-Identifier: MIT
#include "proto/offload.hpp"

#include <xen/io/netif.h>

namespace zc::proto {

// The trap this file exists for: the same two meanings, swapped bits.
static_assert(NETRXF_data_validated == 1u << 0 && NETRXF_csum_blank == 1u << 1);
static_assert(NETTXF_csum_blank == 1u << 0 && NETTXF_data_validated == 1u << 1);

rx_csum rx_csum_from_netrxf(uint16_t f) noexcept {
    // csum_blank first: Linux netfront sets both bits for CHECKSUM_PARTIAL.
    if (f & NETRXF_csum_blank) return rx_csum::partial;
    if (f & NETRXF_data_validated) return rx_csum::validated;
    return rx_csum::verify;
}

rx_csum rx_csum_from_nettxf(uint16_t f) noexcept {
    if (f & NETTXF_csum_blank) return rx_csum::partial;
    if (f & NETTXF_data_validated) return rx_csum::validated;
    return rx_csum::verify;
}

} // namespace zc::proto
