// SPDX-License-Identifier: MIT
// An Ethernet MAC address: the one type every part uses (stack/proto's
// parsers, the netfront's xenstore "mac" key, zc-netback's switch and
// toolstack).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace zc {

struct mac_addr {
    std::array<uint8_t, 6> b{};

    static constexpr mac_addr broadcast() noexcept { return {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}; }
    static mac_addr load(const uint8_t* p) noexcept {
        mac_addr m;
        std::memcpy(m.b.data(), p, 6);
        return m;
    }
    void store(uint8_t* p) const noexcept { std::memcpy(p, b.data(), 6); }

    // Group bit (I/G, bit 0 of the first octet): multicast, including broadcast.
    constexpr bool is_multicast() const noexcept { return b[0] & 1; }
    constexpr bool is_broadcast() const noexcept { return *this == broadcast(); }
    constexpr bool is_zero() const noexcept { return *this == mac_addr{}; }
    constexpr bool operator==(const mac_addr&) const noexcept = default;
    const uint8_t* data() const noexcept { return b.data(); }
    uint8_t* data() noexcept { return b.data(); }
    constexpr uint8_t operator[](size_t i) const noexcept { return b[i]; }
    constexpr uint8_t& operator[](size_t i) noexcept { return b[i]; }
};

// Text forms parse_mac accepts beyond the strict "02:00:5e:10:00:ff" (six
// pairs of hex digits, either case, ':' between, nothing after), which is
// what libxl writes into xenstore.
enum mac_syntax : unsigned {
    mac_allow_dash = 1,  // '-' as separator too (command lines)
    mac_allow_short = 2, // one or two digits an octet: "0:16:3e:a:b:f"
                         // (Linux xen-netfront's xen_net_read_mac reads
                         // each octet with simple_strtoul)
};
// For configuration (xenstore's "mac" key, command lines), never packets.
// False leaves `out` untouched.
bool parse_mac(std::string_view s, mac_addr& out, unsigned syntax) noexcept;
// Lower-case colon form, NUL-terminated.
void format_mac(const mac_addr& m, char (&out)[18]) noexcept;
std::string to_string(const mac_addr& m);

} // namespace zc
