// SPDX-License-Identifier: MIT
#include "common/mac.hpp"

#include <cstdio>

namespace zc {
namespace {
int hexval(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
} // namespace

bool parse_mac(std::string_view s, mac_addr& out, unsigned syntax) noexcept {
    const size_t min_digits = (syntax & mac_allow_short) ? 1 : 2;
    mac_addr m;
    size_t i = 0;
    for (size_t k = 0; k < 6; k++) {
        unsigned v = 0;
        size_t digits = 0;
        for (int d; i < s.size() && digits < 3 && (d = hexval(s[i])) >= 0; i++, digits++) v = v * 16 + unsigned(d);
        if (digits < min_digits || digits > 2) return false;
        if (k < 5) {
            if (i >= s.size()) return false;
            const char sep = s[i++];
            if (sep != ':' && !(sep == '-' && (syntax & mac_allow_dash))) return false;
        }
        m.b[k] = uint8_t(v);
    }
    if (i != s.size()) return false;
    out = m;
    return true;
}

void format_mac(const mac_addr& m, char (&out)[18]) noexcept {
    std::snprintf(out, sizeof out, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3], m.b[4],
                  m.b[5]);
}

std::string to_string(const mac_addr& m) {
    char s[18];
    format_mac(m, s);
    return s;
}

} // namespace zc
