// SPDX-License-Identifier: MIT
// An IPv4 host on one Ethernet link: the receive dispatcher and the transmit
// helpers that tie proto/ together for one (MAC, IP) identity, e.g. one
// guest's stack service.
//
// Receive: host::receive() classifies one frame and says what to do with it:
//   ARP request for our IP     -> an ARP reply to send (sender learned too)
//   ARP reply / other ARP      -> ARP cache updated (waiting packets released)
//   ICMP echo request for us   -> an echo reply to send
//   UDP for us                 -> a udp_delivery: addresses, ports, and where
//                                 the payload sits *in the received frame*
//                                 (zero copy: nothing is moved)
//   anything else              -> dropped, with a reason
// Every frame lands in exactly one outcome counter (host_counters); the
// parse path neither allocates nor throws, and reads only the given bytes.
//
// Transmit: the payload stays where the application wrote it. The headers
// (Ethernet + IPv4 + UDP, udp_headroom bytes) are written either into the
// headroom right in front of the payload (one contiguous frame) or into a
// separate header buffer (a two-segment scatter-gather frame, e.g. two netif
// slots or an iovec). Both take the same udp_flow.
//
// Not thread-safe: one host per thread (per guest); counters are plain
// integers, read them from the same thread (or copy them under your lock).
//
// Use, in a guest's stack service (buffers are the caller's; proto never
// keeps a pointer to a frame after the call returns):
//
//   auto h = zc::proto::host::create(cfg);          // once; allocates the ARP table
//   // receive: frame from netfront, flags from its rx_info
//   auto v = h->receive_inplace(frame, rx_csum_from_netrxf(info.flags), now_ms);
//   if (v.action == rx_action::reply) send(frame.first(v.reply_len));   // ARP/echo reply, same buffer
//   if (v.action == rx_action::udp)   deliver(v.udp.dst_port, frame.subspan(v.udp.payload_off, v.udp.payload_len));
//   for (uint64_t cookie : v.released) { set_eth_dst(frame_of(cookie), v.released_mac); send(cookie); }
//   // transmit: payload already at buf[128 ..), the pool's headroom
//   auto r = h->resolve(dst_ip, now_ms, &cookie);    // if r.send_request: build_arp_request(r.target, ...)
//   // r.st: resolved -> go on; pending -> cookie queued, comes back in v.released
//   // (or failed in arp_expire); queue_full / table_full / unknown -> drop it
//   udp_flow f{r.mac, dst_ip, src_port, dst_port};
//   tx_headers t;
//   h->udp_in_headroom(buf, 128, len, f, tx_csum::offload, t);   // frame = buf[t.frame_off, +t.frame_len)
//   // timers, every few hundred ms: retries and failed resolutions
//   for (arp_cache::event ev; h->arp_expire(now_ms, ev);) ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.hpp"
#include "proto/arp.hpp"
#include "proto/arp_cache.hpp"
#include "proto/ether.hpp"
#include "proto/ipv4.hpp"
#include "proto/offload.hpp"
#include "proto/udp.hpp"

namespace zc::proto {

// Ethernet + IPv4 (no options) + UDP: the headroom a zero-copy UDP payload
// needs in front of it.
inline constexpr size_t udp_headroom = eth_hdr_len + ipv4_min_hdr_len + udp_hdr_len;  // 42
// An ARP frame without padding.
inline constexpr size_t arp_frame_len = eth_hdr_len + arp_len;  // 42

struct host_config {
    mac_addr mac;
    ipv4_addr ip;
    ipv4_addr netmask = ipv4_addr::of(255, 255, 255, 0);
    ipv4_addr gateway;            // 0.0.0.0: no gateway, off-link destinations fail
    uint16_t mtu = 1500;          // IP datagram limit (netif's default MTU)
    bool reply_broadcast_ping = false;  // Linux icmp_echo_ignore_broadcasts=1 by default
    arp_cache::options arp;
};

// Outcome counters (each received frame increments rx_frames and exactly one
// of the outcome fields below it), then informational counters.
struct host_counters {
    uint64_t rx_frames = 0;
    // -- outcomes: delivered or answered
    uint64_t udp_delivered = 0;
    uint64_t icmp_echo_replied = 0;
    uint64_t arp_request_replied = 0;   // an ARP request for our IP, answered
    uint64_t arp_learned = 0;           // another ARP packet that updated or created an entry
    // -- outcomes: drops, by reason
    uint64_t bad_eth = 0;               // shorter than an Ethernet header / cut VLAN tag
    uint64_t vlan_tagged = 0;           // 802.1Q tagged: we are an untagged endpoint
    uint64_t not_for_us_mac = 0;        // unicast to another MAC, or multicast
    uint64_t unknown_ethertype = 0;     // IPv6, LLC, QinQ, ...
    uint64_t bad_ip_hdr = 0;            // too short, version, IHL, total length
    uint64_t bad_ip_csum = 0;
    uint64_t ip_fragments = 0;          // MF or offset != 0: refused, never reassembled
    uint64_t ip_bad_src = 0;            // source multicast, broadcast, loopback or our own address
    uint64_t not_for_us = 0;            // destination IP neither ours nor a broadcast
    uint64_t unknown_ip_proto = 0;      // TCP and anything but UDP/ICMP
    uint64_t bad_udp = 0;               // too short, bad length
    uint64_t bad_udp_csum = 0;
    uint64_t bad_icmp = 0;              // too short
    uint64_t bad_icmp_csum = 0;
    uint64_t icmp_ignored = 0;          // not an echo request, a broadcast ping, or from 0.0.0.0
    uint64_t arp_bad = 0;               // malformed / not Ethernet-IPv4 / multicast sender
    uint64_t arp_conflict = 0;          // someone else claims our IP (logged, rate limited)
    uint64_t arp_ignored = 0;           // valid, not for us, nothing to learn
    uint64_t reply_no_space = 0;        // a reply was due but the reply buffer was too small
    // -- informational
    uint64_t ip_options = 0;            // accepted datagrams that carried options (skipped)
    uint64_t udp_no_csum = 0;           // delivered with checksum 0 (none)
    uint64_t l4_csum_trusted = 0;       // L4 checksum skipped per rx_csum
    uint64_t arp_table_full = 0;        // an address could not be learned or resolved
    uint64_t tx_udp = 0;                // UDP header sets built
    uint64_t tx_arp_requests = 0;       // ARP requests built
    uint64_t icmp_echo_reply_seen = 0;  // echo replies for us (counted in icmp_ignored too), see rx_verdict::echo
    uint64_t tx_echo_requests = 0;      // echo requests built
};

// Every counter by name, for stats output; `outcome` marks the fields that
// add up to rx_frames.
struct host_counter_info {
    const char* name;
    uint64_t host_counters::*field;
    bool outcome;
};
std::span<const host_counter_info> host_counter_table() noexcept;

// Why receive() dropped a frame: one value per drop counter above.
enum class drop_reason : uint8_t {
    none = 0,
    bad_eth, vlan_tagged, not_for_us_mac, unknown_ethertype,
    bad_ip_hdr, bad_ip_csum, ip_fragments, ip_bad_src, not_for_us, unknown_ip_proto,
    bad_udp, bad_udp_csum, bad_icmp, bad_icmp_csum, icmp_ignored,
    arp_bad, arp_conflict, arp_ignored, reply_no_space,
};
const char* drop_reason_name(drop_reason r) noexcept;

// A UDP datagram for us. Offsets are from the start of the received frame.
struct udp_delivery {
    mac_addr src_mac;
    ipv4_addr src_ip, dst_ip;
    uint16_t src_port = 0, dst_port = 0;
    uint32_t payload_off = 0;  // frame[payload_off .. payload_off + payload_len)
    uint32_t payload_len = 0;
    bool broadcast = false;    // sent to 255.255.255.255 or our subnet's broadcast
};

// An ICMP echo reply addressed to us (the answer to a ping the caller sent
// with build_echo_request). Offsets are from the start of the frame.
struct echo_reply_info {
    bool valid = false;
    ipv4_addr src;             // who answered
    uint16_t id = 0, seq = 0;
    uint32_t data_off = 0;     // frame[data_off .. data_off + data_len): the echoed data
    uint32_t data_len = 0;
};

enum class rx_action : uint8_t {
    drop,     // see `reason`
    reply,    // send the reply_len bytes of the reply (see receive / receive_inplace)
    udp,      // see `udp`
    consumed, // handled inside (ARP learned / ignored-but-fine), nothing to send
};

struct rx_verdict {
    rx_action action = rx_action::drop;
    drop_reason reason = drop_reason::none;
    uint32_t reply_len = 0;
    udp_delivery udp;
    // ARP only (with reply or consumed): an address resolved and these
    // packets waited for it (arp_cache cookies): fill in `released_mac` as
    // their destination (set_eth_dst) and send them. Valid until the next
    // non-const call on the host.
    std::span<const uint64_t> released;
    mac_addr released_mac;
    // drop / icmp_ignored of an echo reply for us, checksum good (or trusted):
    // echo.valid is set. proto keeps no ping state; match id/seq yourself.
    echo_reply_info echo;
};

// Where the headers of an outgoing frame are, and what offload to ask for.
struct tx_headers {
    uint32_t frame_off = 0;    // udp_in_headroom: the frame starts at buf[frame_off]
    uint32_t frame_len = 0;    // headers + payload
    // tx_csum::offload: netfront tx_offload::csum_blank = true; the checksum
    // is over frame[csum_start ..) and goes at csum_start + csum_offset
    // (Linux skb csum_start/csum_offset).
    bool csum_blank = false;
    uint16_t csum_start = 0;
    uint16_t csum_offset = 0;
};

// Where a UDP datagram goes. src_* default to the host's own identity.
struct udp_flow {
    mac_addr dst_mac;          // from resolve()
    ipv4_addr dst_ip;
    uint16_t src_port = 0, dst_port = 0;
    uint8_t ttl = ipv4_default_ttl;
    uint8_t tos = 0;
};

class host {
public:
    // -EINVAL: zero/multicast/broadcast MAC, zero/multicast/broadcast IP,
    // gateway outside the subnet, MTU < 68 (RFC 791 minimum); errors of
    // arp_cache::create.
    static result<host> create(const host_config& c);

    // Classifies one received frame (no FCS). `csum` is the link's word on
    // the L4 checksum (offload.hpp: rx_csum_from_netrxf). A reply (ARP reply,
    // echo reply) is written to reply_buf[0 .. reply_len); reply_buf must not
    // overlap `frame`; an echo reply needs as many bytes as the request.
    // UDP offsets refer to `frame`.
    rx_verdict receive(std::span<const uint8_t> frame, rx_csum csum, std::span<uint8_t> reply_buf,
                       uint64_t now_ms) noexcept;

    // The same, but a reply is built in place over the received frame:
    // frame[0 .. reply_len) is the reply (zero copy: send the same buffer
    // back). The frame is modified only when the verdict is `reply`.
    rx_verdict receive_inplace(std::span<uint8_t> frame, rx_csum csum, uint64_t now_ms) noexcept;

    // -- transmit

    // The on-link address to ARP for to reach `dst`: dst itself when on the
    // subnet, else the gateway; 0.0.0.0 when off-link without a gateway.
    ipv4_addr next_hop(ipv4_addr dst) const noexcept;

    // The destination MAC for `dst`: broadcast and multicast (RFC 1112
    // mapping) directly; otherwise the ARP cache entry of next_hop(dst),
    // starting resolution and queueing `cookie` (if non-null) on a miss.
    // When send_request is set, build_arp_request(result target) and send it.
    struct resolution {
        // unknown: unreachable (off-link without a gateway, or our own
        // address: proto has no loopback)
        arp_cache::status st = arp_cache::status::unknown;
        mac_addr mac;
        bool send_request = false;
        ipv4_addr target;  // the address to ARP for
    };
    resolution resolve(ipv4_addr dst, uint64_t now_ms, const uint64_t* cookie) noexcept;

    // Writes a broadcast ARP request for `target` into out[0 .. 42).
    // Returns 42, or 0 when `out` is too short.
    size_t build_arp_request(ipv4_addr target, std::span<uint8_t> out) noexcept;

    // Writes a gratuitous ARP announcement of our own address (RFC 5227
    // section 2.3: a request with sender and target both our IP) into
    // out[0 .. 42): send it when the link comes up so that peers and the
    // switch learn the MAC. Returns 42, or 0 when `out` is too short.
    size_t build_arp_announce(std::span<uint8_t> out) noexcept;

    // Writes an echo request to `dst` (via `dst_mac`, from resolve()) with
    // identifier `id`, sequence `seq` and `data` into `out`. Returns the
    // frame length (42 + data.size()), or 0 when `out` is too short or the
    // datagram would exceed the MTU.
    size_t build_echo_request(std::span<uint8_t> out, const mac_addr& dst_mac, ipv4_addr dst, uint16_t id,
                              uint16_t seq, std::span<const uint8_t> data) noexcept;

    // ARP timer work (retries and failures), as arp_cache::expire. For a
    // retry, build_arp_request(ev.ip, ...) and send it; for a failure, drop
    // ev.waiters.
    bool arp_expire(uint64_t now_ms, arp_cache::event& ev) noexcept { return _arp.expire(now_ms, ev); }

    // Zero copy, contiguous: the payload is already at buf[payload_off ..
    // payload_off + payload_len); writes the 42 header bytes into
    // buf[payload_off - 42 .. payload_off). On success out.frame_off =
    // payload_off - 42. -ENOSPC: payload_off < 42 or the payload is beyond
    // `buf`; -EMSGSIZE: payload_len > mtu - 28 (zcnet never fragments).
    // The checksum per `mode` (offload.hpp); for tx_csum::full the payload
    // is read once to sum it.
    int udp_in_headroom(std::span<uint8_t> buf, size_t payload_off, size_t payload_len, const udp_flow& f,
                        tx_csum mode, tx_headers& out) noexcept;

    // Zero copy, scatter-gather: writes the 42 header bytes into hdr[0 .. 42)
    // for a payload that lives elsewhere (the frame is hdr + payload).
    // payload_sum is needed for tx_csum::full only: csum_partial over the
    // payload (combine segments with csum_block_add). -ENOSPC: hdr too short;
    // -EMSGSIZE as above.
    int udp_headers(std::span<uint8_t> hdr, size_t payload_len, uint32_t payload_sum, const udp_flow& f,
                    tx_csum mode, tx_headers& out) noexcept;

    const host_config& config() const noexcept { return _c; }
    const host_counters& counters() const noexcept { return _n; }
    arp_cache& arp() noexcept { return _arp; }

private:
    host(const host_config& c, arp_cache&& a) noexcept;
    rx_verdict dispatch(const uint8_t* in, size_t len, rx_csum csum, uint8_t* out, size_t out_cap,
                        uint64_t now_ms) noexcept;
    rx_verdict dropped(drop_reason r) noexcept;

    host_config _c;
    arp_cache _arp;
    host_counters _n;
    ipv4_addr _bcast;   // subnet broadcast
    uint16_t _ip_id = 0;
};

// Overwrites the destination MAC of an Ethernet frame (for packets that
// waited for ARP). False when the frame is shorter than 6 bytes.
bool set_eth_dst(std::span<uint8_t> frame, const mac_addr& dst) noexcept;

} // namespace zc::proto
