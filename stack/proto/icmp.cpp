// SPDX-License-Identifier: MIT
#include "proto/icmp.hpp"

#include <cstring>

#include "proto/bytes.hpp"
#include "proto/checksum.hpp"

namespace zc::proto {

icmp_error parse_icmp_echo(std::span<const uint8_t> l4, rx_csum csum, icmp_echo_view& out) noexcept {
    if (l4.size() < icmp_echo_hdr_len) return icmp_error::too_short;
    const uint8_t* p = l4.data();
    out.csum_checked = false;
    if (csum == rx_csum::verify) {
        if (!csum_verify(p, l4.size())) return icmp_error::bad_csum;
        out.csum_checked = true;
    }
    if ((p[0] != icmp_type::echo_request && p[0] != icmp_type::echo_reply) || p[1] != 0)
        return icmp_error::not_echo_request;
    out.type = p[0];
    out.csum = load_be16(p + 2);
    out.id = load_be16(p + 4);
    out.seq = load_be16(p + 6);
    return icmp_error::none;
}

icmp_error parse_icmp_echo_request(std::span<const uint8_t> l4, rx_csum csum, icmp_echo_view& out) noexcept {
    icmp_error e = parse_icmp_echo(l4, csum, out);
    if (e == icmp_error::none && out.type != icmp_type::echo_request) return icmp_error::not_echo_request;
    return e;
}

size_t write_icmp_echo_request(std::span<uint8_t> out, uint16_t id, uint16_t seq,
                               std::span<const uint8_t> data) noexcept {
    if (out.size() < icmp_echo_hdr_len || data.size() > out.size() - icmp_echo_hdr_len) return 0;
    uint8_t* p = out.data();
    p[0] = icmp_type::echo_request;
    p[1] = 0;
    store_be16(p + 2, 0);
    store_be16(p + 4, id);
    store_be16(p + 6, seq);
    if (!data.empty()) std::memmove(p + icmp_echo_hdr_len, data.data(), data.size());
    const size_t len = icmp_echo_hdr_len + data.size();
    store_be16(p + 2, internet_checksum(p, len));
    return len;
}

namespace {
// The first 16-bit word is type|code: 8<<8 in a request, 0 in a reply.
void finish_reply(uint8_t* p, size_t len, const icmp_echo_view& req) noexcept {
    p[0] = icmp_type::echo_reply;
    p[1] = 0;
    if (req.csum_checked) {
        store_be16(p + 2, csum_replace16(req.csum, uint16_t(icmp_type::echo_request << 8), 0));
    } else {
        store_be16(p + 2, 0);
        store_be16(p + 2, internet_checksum(p, len));
    }
}
} // namespace

void icmp_echo_reply_inplace(std::span<uint8_t> msg, const icmp_echo_view& req) noexcept {
    if (msg.size() < icmp_echo_hdr_len) return;
    finish_reply(msg.data(), msg.size(), req);
}

size_t write_icmp_echo_reply(std::span<uint8_t> out, std::span<const uint8_t> req_msg,
                             const icmp_echo_view& req) noexcept {
    if (req_msg.size() < icmp_echo_hdr_len || out.size() < req_msg.size()) return 0;
    std::memcpy(out.data(), req_msg.data(), req_msg.size());
    finish_reply(out.data(), req_msg.size(), req);
    return req_msg.size();
}

} // namespace zc::proto
