// SPDX-License-Identifier: MIT
// Guest source checks and the xenstore keys they come from (source_check.hpp).
#include "netback/source_check.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

namespace zc::netback {

namespace {
uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
bool allowed(const std::vector<uint32_t>& ips, const uint8_t* a) {
    uint32_t v;
    std::memcpy(&v, a, 4);
    return std::find(ips.begin(), ips.end(), v) != ips.end();
}
} // namespace

source_verdict check_source(const mac_addr& mac, const std::vector<uint32_t>& ipv4, const uint8_t* h,
                            uint32_t len) noexcept {
    if (len < 14) return source_verdict::bad_mac; // tx_check refuses these before
    const bool mac_set = std::any_of(mac.b.begin(), mac.b.end(), [](uint8_t b) { return b != 0; });
    if (mac_set && std::memcmp(h + 6, mac.b.data(), 6) != 0) return source_verdict::bad_mac;
    if (ipv4.empty()) return source_verdict::ok;
    uint32_t l3 = 14;
    uint16_t type = be16(h + 12);
    if (type == 0x8100) {
        if (len < 18) return source_verdict::bad_ip;
        type = be16(h + 16);
        l3 = 18;
    }
    if (type == 0x0800) {
        if (len < l3 + 20) return source_verdict::bad_ip;
        const uint8_t* src = h + l3 + 12;
        if (allowed(ipv4, src)) return source_verdict::ok;
        // DHCP discover/request from 0.0.0.0 to port 67.
        const uint32_t ihl = uint32_t(h[l3] & 0xf) * 4;
        const bool zero = !src[0] && !src[1] && !src[2] && !src[3];
        if (zero && h[l3 + 9] == 17 && ihl >= 20 && len >= l3 + ihl + 4 && be16(h + l3 + ihl + 2) == 67)
            return source_verdict::ok;
        return source_verdict::bad_ip;
    }
    if (type == 0x0806) {
        // ARP for IPv4 over Ethernet: the sender protocol address at 14.
        if (len < l3 + 28) return source_verdict::bad_ip;
        const uint8_t* spa = h + l3 + 14;
        if (allowed(ipv4, spa)) return source_verdict::ok;
        if (!spa[0] && !spa[1] && !spa[2] && !spa[3]) return source_verdict::ok; // RFC 5227 probe
        return source_verdict::bad_ip;
    }
    // IPv6 and other protocols: the `ip` key lists IPv4 addresses only.
    return source_verdict::ok;
}

bool parse_ipv4_list(std::string_view s, std::vector<uint32_t>& out) noexcept {
    out.clear();
    size_t i = 0;
    while (i < s.size()) {
        if (s[i] == ' ' || s[i] == ',') {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < s.size() && s[j] != ' ' && s[j] != ',') ++j;
        const std::string one(s.substr(i, j - i));
        in_addr a{};
        if (one.size() > 15 || ::inet_pton(AF_INET, one.c_str(), &a) != 1) return false;
        out.push_back(a.s_addr);
        i = j;
    }
    return !out.empty();
}

bool parse_rate(std::string_view s, uint64_t& bytes, uint64_t& usec) noexcept {
    const size_t comma = s.find(',');
    if (comma == std::string_view::npos) return false;
    uint64_t b = 0, u = 0;
    const auto r1 = std::from_chars(s.data(), s.data() + comma, b);
    const auto r2 = std::from_chars(s.data() + comma + 1, s.data() + s.size(), u);
    if (r1.ec != std::errc{} || r1.ptr != s.data() + comma || r2.ec != std::errc{} || r2.ptr != s.data() + s.size())
        return false;
    if (comma == 0 || comma + 1 == s.size()) return false;
    bytes = b;
    usec = u;
    return true;
}

} // namespace zc::netback
