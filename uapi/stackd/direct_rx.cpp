// SPDX-License-Identifier: MIT
// zc-stackd, receiving on the direct path (docs/ARCHITECTURE.md, "Direct
// path (guest to guest)"): a descriptor from netfront (the headers, and the
// payload's sender domain, grant, offset and length) is checked by the
// proto host like any frame, its payload copied from our persistent
// read-only mapping of the sender's page (direct.hpp) into the receiving
// socket's buffer (the one copy, on our CPU; zc-netback copied none), and
// its cookie given back so that the sender's send completes.
//
// The payload stays writable by the sender: it is read once, by that copy,
// and nothing is decided on it before. With the UDP checksum left to
// offload (NETRXF_csum_blank, what our senders ask for) the host reads the
// headers only; otherwise the payload is copied behind the headers first
// and the whole frame checked (two copies, as for any frame to verify).
#include <cstring>

#include <arpa/inet.h>

#include "proto/offload.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

namespace {

// The headers of a UDP datagram over IPv4 that end where the payload
// starts: what our senders put in a direct frame, and the only kind this
// path takes (anything else would need the payload in the frame).
bool udp_headers_only(const uint8_t* f, size_t len) noexcept {
    if (len < 14 + 20 + 8 || f[12] != 0x08 || f[13] != 0x00 || (f[14] >> 4) != 4) return false;
    return 14 + size_t{f[14] & 15u} * 4 + 8 == len && f[14 + 9] == 17;
}

} // namespace

void service::impl::rx_direct(const uint8_t* f, size_t len, const link::rx_info& info) noexcept {
    const link::direct_desc& dd = info.desc;
    n.rx_direct++;
    dir_releases.push_back(dd.cookie); // whatever becomes of it: the sender's send completes
    int16_t st = 0;
    const uint8_t* page = dmaps && udp_headers_only(f, len) ? dmaps->get(dd.domid, dd.gref, now, &st) : nullptr;
    if (!page) {
        n.rx_direct_bad++;
        if (st) ZC_LOG(debug, tag, "direct: grant %u of d%u not mapped: %d", dd.gref, unsigned(dd.domid), st);
        return;
    }
    n.direct_maps = dmaps->maps();
    const uint8_t* pay = page + dd.offset;
    std::memcpy(dir_frame, f, len);
    const proto::rx_csum cs = proto::rx_csum_from_netrxf(info.flags);
    if (cs == proto::rx_csum::verify) {
        // The checksum is ours to verify: the whole frame, in our memory.
        std::memcpy(dir_frame + len, pay, dd.len);
        rx_frame(dir_frame, len + dd.len, info.flags);
        return;
    }
    // Trusted checksum: the host reads the headers (dir_frame[0, len)) and
    // the lengths only; the payload goes once, from the mapping.
    n.rx_frames++;
    auto v = host->receive(std::span<const uint8_t>(dir_frame, len + dd.len), cs,
                           std::span<uint8_t>(reply, sizeof reply), now);
    if (v.action != proto::rx_action::udp || v.udp.payload_off != len) {
        n.rx_direct_bad++;
        return;
    }
    const proto::udp_delivery& u = v.udp;
    deliver_payload(pay, uint32_t(u.payload_len), htonl(u.src_ip.v), htons(u.src_port), htonl(u.dst_ip.v),
                    htons(u.dst_port));
}

// The cookies of this iteration's descriptors, onto the release ring in
// one batch (one notification); what does not fit waits for the next.
void service::impl::direct_release_flush() noexcept {
    if (dir_releases.empty()) return;
    auto r = nf->release_direct(dir_releases.data(), dir_releases.size());
    if (!r) {
        if (r.error() != -EAGAIN) dir_releases.clear(); // no direct path any more: nothing to give back to
        return;
    }
    dir_releases.erase(dir_releases.begin(), dir_releases.begin() + std::ptrdiff_t(*r));
}

} // namespace zc::stackd
