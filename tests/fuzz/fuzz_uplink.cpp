// SPDX-License-Identifier: MIT
// The uplink fuzz target (fuzz_uplink.hpp says what an input is and which
// invariants it checks).
#include "fuzz_uplink.hpp"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/xenbus.h>
}

#include "common/log.hpp"
#include "fuzz_frontend.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "proto/checksum.hpp"

namespace zc::netback::fuzz {

up_totals& up_stats() noexcept {
    static up_totals t;
    return t;
}

namespace {

using clock_type = std::chrono::steady_clock;

constexpr hv::domid_t dom_a = 2, dom_b = 3;
constexpr uint32_t tx_pages = 2, rx_pages = 64;
constexpr uint32_t mtu = 1500, max_wire = mtu + 14 + 4;
constexpr uint32_t umem_frames = 256;
// Guest frames to the wire go to 02:00:00:00:77:<marks>: bit 0, the guest
// asked for a checksum (checksum-blank or GSO), so it must verify on the
// wire; bit 1, a GSO frame: netback wrote the IPv4 header of each segment.
constexpr uint8_t wire_oui4 = 0x77, mark_csum = 1, mark_gso = 2;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }

// The L4 checksum of a frame to the wire verifies (and, `ip_too`, the IPv4
// header's); the headers are parsed as netback's complete_checksum does.
bool checksums_verify(const uint8_t* f, uint32_t len, bool ip_too) {
    uint32_t l3 = 14;
    if (len < l3) return false;
    uint16_t type = be16(f + 12);
    if (type == 0x8100) {
        if (len < l3 + 4) return false;
        type = be16(f + 16);
        l3 += 4;
    }
    uint32_t l4 = 0, l4_len = 0, sum = 0;
    uint8_t proto = 0;
    if (type == 0x0800) {
        if (len < l3 + 20) return false;
        const uint32_t ihl = uint32_t(f[l3] & 0xf) * 4;
        const uint32_t tot = be16(f + l3 + 2);
        if (ihl < 20 || tot < ihl || l3 + tot > len) return false;
        if (ip_too && !proto::csum_verify(f + l3, ihl)) return false;
        proto = f[l3 + 9];
        l4 = l3 + ihl;
        l4_len = tot - ihl;
        sum = proto::csum_partial(f + l3 + 12, 8);
    } else if (type == 0x86dd) {
        if (len < l3 + 40) return false;
        proto = f[l3 + 6];
        l4 = l3 + 40;
        l4_len = be16(f + l3 + 4);
        if (l4 + l4_len > len) return false;
        sum = proto::csum_partial(f + l3 + 8, 32);
    } else {
        return false;
    }
    if (proto != 6 && proto != 17) return false;
    sum = proto::csum_add(sum, proto);
    sum = proto::csum_add(sum, l4_len);
    return proto::csum_finish(proto::csum_partial(f + l4, l4_len, sum)) == 0;
}

struct world {
    std::unique_ptr<hv::emu::host> host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    std::unique_ptr<backend> be;
    frontend ga, gb;
    std::atomic<uint64_t> wire{0}, verified{0};
    size_t up = 0;

    template <class F>
    bool until(F cond, int ms) {
        return run_until(*be, cond, ms);
    }
    int state_of(hv::domid_t fe) {
        for (auto& d : be->devices())
            if (d.frontend == fe) return d.backend_state;
        return XenbusStateUnknown;
    }
    bool vif_of(hv::domid_t fe, vif_info& out) {
        for (auto& v : be->dp().vifs())
            if (v.frontend == fe) {
                out = v;
                return true;
            }
        return false;
    }
    uplink_stats up_counters() { return be->dp().uplinks().at(up).stats; }

    // An honest guest with a connected vif offering checksum and GSO offloads.
    bool connect(frontend& f, hv::domid_t d) {
        std::string why;
        if (!f.open(*host, d, tx_pages, rx_pages)) return false;
        vif_spec s;
        s.frontend = d;
        if (vif_create(*xs0, s, &why) < 0) return false;
        if (!until([&] { return state_of(d) == XenbusStateInitWait; }, 5000)) return false;
        f.init_rings();
        auto p = f.ev->bind_unbound(0);
        if (!p) return false;
        f.evp = *p;
        const std::string dir = frontend_dir(d, 0);
        f.xs->write(dir + "/tx-ring-ref", std::to_string(f.rings.refs[0]));
        f.xs->write(dir + "/rx-ring-ref", std::to_string(f.rings.refs[1]));
        f.xs->write(dir + "/event-channel", std::to_string(f.evp));
        for (const char* k : {"request-rx-copy", "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6",
                              "feature-ipv6-csum-offload"})
            f.xs->write(dir + "/" + k, "1");
        f.xs->write(dir + "/state", "4");
        return until([&] { return state_of(d) == XenbusStateConnected; }, 5000);
    }

    bool setup() {
        if (!std::getenv("ZCNET_LOG")) log::set_threshold(log::level::error);
        std::string why;
        auto h = hv::emu::host::create("fuzz-uplink", &why);
        if (!h) return false;
        host = std::move(*h);
        auto d0 = host->domain(0, 0, &why);
        if (!d0) return false;
        dom0 = std::move(*d0);
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return false;
        xs0 = std::move(*x);
        backend_options o;
        o.dp.workers = 1;
        o.dp.drain_timeout_ms = 20; // frames waiting for RX buffers go quickly
        o.dp.hold_ms = 1;
        o.dp.stall_timeout_ms = 50;
        auto b = backend::create(*dom0, o, &why);
        if (!b) return false;
        be = std::move(*b);
        uplink_options uo;
        uo.ifname = "fuzz0";
        uo.frames = umem_frames;
        uo.dest_quota = 4; // small: frames for a slow guest reach the fallback
        const int idx = be->dp().add_uplink_inproc(uo, mtu, [this](const uint8_t* f, uint32_t len) { on_wire(f, len); },
                                                   &why);
        if (idx < 0) return false;
        up = size_t(idx);
        return connect(ga, dom_a) && connect(gb, dom_b);
    }

    // The sink of the uplink (a worker thread).
    void on_wire(const uint8_t* f, uint32_t len) {
        wire++;
        FUZZ_CHECK(len <= max_wire);
        if (len >= 6 && f[4] == wire_oui4 && (f[5] & mark_csum)) {
            FUZZ_CHECK(checksums_verify(f, len, f[5] & mark_gso));
            verified++;
        }
    }

    // Let the data path work; the guests take what they received and, when
    // `post`, give RX buffers back.
    void settle(int ms, bool post) {
        const auto end = clock_type::now() + std::chrono::milliseconds(ms);
        do {
            be->process();
            for (frontend* g : {&ga, &gb}) {
                const uint32_t n = g->rx.rsp_prod() - g->rx.rsp_cons;
                up_stats().guest_rx += n;
                rx_seen += n;
                g->consume();
                if (post) g->post_rx(ring::rx_front_ring::size);
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        } while (clock_type::now() < end);
    }

    // RX responses the guests have taken.
    uint64_t rx_seen = 0;

    void from_wire(reader& r);
    void guest_sends(reader& r);
    void run(reader& r);
};

// A frame from the wire: the reader chooses where it goes, its Ethernet
// type and length; the rest of its bytes come from the input.
void world::from_wire(reader& r) {
    static uint8_t buf[4200];
    const uint8_t kind = r.u8();
    const uint32_t len = r.u16() % sizeof buf;
    for (uint32_t i = 0; i < len; ++i) buf[i] = r.u8();
    if (len >= 14 && !(kind & 0x80)) {
        switch (kind & 3) {
        case 0: default_mac(dom_a, 0).store(buf); break;
        case 1: default_mac(dom_b, 0).store(buf); break;
        case 2: mac_addr::broadcast().store(buf); break;
        default: break; // as the input says
        }
        if (kind & 4) default_mac(dom_a, 0).store(buf + 6); // a guest's own MAC from the wire
        if ((kind & 0x43) == 0x43) { // to its own source: known behind the uplink, no destination
            buf[6] &= 0xfe;
            std::memcpy(buf, buf + 6, 6);
        }
        const uint16_t types[] = {0x0800, 0x86dd, 0x8100, be16(buf + 12)};
        buf[12] = uint8_t(types[(kind >> 3) & 3] >> 8);
        buf[13] = uint8_t(types[(kind >> 3) & 3]);
    }
    const auto before = up_counters();
    const int rc = be->dp().inject_from_wire(up, buf, len);
    FUZZ_CHECK(rc == 0 || rc == -ENOBUFS || (rc == -EMSGSIZE && len > 4096));
    if (rc != 0) return;
    up_stats().injected++;
    const auto s = up_counters();
    FUZZ_CHECK(s.from_wire_frames == before.from_wire_frames + 1);
    // Delivered or counted in exactly one drop reason.
    FUZZ_CHECK(s.from_wire_frames ==
               s.drop_runt + s.drop_rx_oversize + s.drop_no_dest + s.to_vif_frames + s.drop_vif_full - s.flood_copies);
    // Only a frame larger than the MTU allows is dropped as oversized.
    const bool tagged = len >= 14 && buf[12] == 0x81 && buf[13] == 0x00;
    FUZZ_CHECK((s.drop_rx_oversize != before.drop_rx_oversize) == (len >= 14 && len > mtu + 14 + (tagged ? 4 : 0)));
}

// Guest A sends a frame bound for the wire (an unknown MAC: flooded to the
// uplink and guest B): plain, checksum-blank or GSO, from one TX slot.
void world::guest_sends(reader& r) {
    const uint8_t kind = r.u8();
    const uint8_t gso = (kind & 3) == 1 ? XEN_NETIF_GSO_TYPE_TCPV4 : (kind & 3) == 2 ? XEN_NETIF_GSO_TYPE_TCPV6 : 0;
    const bool blank = gso || (kind & 4);
    const bool v6 = gso ? gso == XEN_NETIF_GSO_TYPE_TCPV6 : (kind & 8);
    const bool udp = !gso && (kind & 16);
    const uint32_t len = 14 + 60 + r.u16() % (4096 - 74 + 1);
    const uint16_t mss = uint16_t(r.u16() % 1600);
    uint8_t* p = ga.page(ga.txbuf, 0);
    for (uint32_t i = 0; i < len; ++i) p[i] = uint8_t(i * 7 + kind);
    const uint8_t dst[6] = {0x02, 0, 0, 0, wire_oui4, uint8_t((blank ? mark_csum : 0) | (gso ? mark_gso : 0))};
    std::memcpy(p, dst, 6);
    default_mac(dom_a, 0).store(p + 6);
    p[12] = v6 ? 0x86 : 0x08;
    p[13] = v6 ? 0xdd : 0x00;
    uint8_t* ip = p + 14;
    uint32_t l4;
    if (v6) {
        ip[0] = 0x60;
        ip[4] = uint8_t((len - 54) >> 8), ip[5] = uint8_t(len - 54);
        ip[6] = udp ? 17 : 6;
        l4 = 54;
    } else {
        std::memset(ip, 0, 20);
        ip[0] = 0x45;
        ip[2] = uint8_t((len - 14) >> 8), ip[3] = uint8_t(len - 14);
        ip[8] = 64;
        ip[9] = udp ? 17 : 6;
        l4 = 34;
    }
    if (!udp) p[l4 + 12] = 0x50 | (kind & 0x20 ? 0xa0 : 0); // data offset 5 words, or 15 (options)
    // Damaged headers: up to three bytes anywhere in the first 80.
    const uint32_t damage = (kind >> 6) & 3;
    for (uint32_t i = 0; i < damage; ++i) {
        const uint32_t at = 12 + r.u8() % 68;
        p[at] = r.u8();
    }
    netif_tx_request q{};
    q.gref = ga.txbuf.refs[0];
    q.size = uint16_t(len);
    q.id = uint16_t(ga.tx.req_prod_pvt);
    if (blank) q.flags |= NETTXF_csum_blank | NETTXF_data_validated;
    if (gso) q.flags |= NETTXF_extra_info;
    ga.tx.write_request(ga.tx.req_prod_pvt++, q);
    if (gso) {
        netif_extra_info e{};
        e.type = XEN_NETIF_EXTRA_TYPE_GSO;
        e.u.gso.size = mss ? mss : 1;
        e.u.gso.type = gso;
        ga.tx.write_request(ga.tx.req_prod_pvt++, e);
    }
    if (ga.tx.push_requests_and_check_notify()) ga.ev->notify(ga.evp);
    // One TX page: wait for the answer before it is written again.
    const auto end = clock_type::now() + std::chrono::milliseconds(1000);
    while (ga.tx.rsp_prod() != ga.tx.req_prod_pvt && clock_type::now() < end) settle(0, false);
    ga.tx.rsp_cons = ga.tx.rsp_prod();
}

void world::run(reader& r) {
    const auto before = up_counters();
    for (int ops = 0; ops < 64 && !r.empty(); ++ops) {
        switch (r.u8() % 4) {
        case 0: from_wire(r); break;
        case 1: { // some RX buffers from one guest
            frontend& g = (r.u8() & 1) ? gb : ga;
            g.post_rx(r.u8() % 64);
            break;
        }
        case 2: guest_sends(r); break;
        default: settle(r.u8() % 8, false); break;
        }
    }
    // The guests post buffers again: every UMEM frame and bounce buffer
    // comes back (delivered, or dropped after the drain timeout). A worker
    // frees a frame after its copy and publishes the response just after,
    // so the guests keep taking responses until a pass brings none.
    const auto end = clock_type::now() + std::chrono::milliseconds(5000);
    do settle(1, true);
    while ((be->dp().uplink_frames_in_use(up) != 0 || be->dp().bounce_in_use() != 0) && clock_type::now() < end);
    for (uint64_t seen = ~0ull; seen != rx_seen && clock_type::now() < end;) {
        seen = rx_seen;
        settle(1, true);
    }
    FUZZ_CHECK(be->dp().uplink_frames_in_use(up) == 0);
    FUZZ_CHECK(be->dp().bounce_in_use() == 0);
    for (hv::domid_t d : {dom_a, dom_b}) {
        vif_info v;
        FUZZ_CHECK(vif_of(d, v) && !v.disabled);
        FUZZ_CHECK(state_of(d) == XenbusStateConnected);
    }
    const auto s = up_counters();
    auto& t = up_stats();
    t.to_vif += s.to_vif_frames - before.to_vif_frames;
    t.runts += s.drop_runt - before.drop_runt;
    t.no_dest += s.drop_no_dest - before.drop_no_dest;
    t.oversize += s.drop_rx_oversize - before.drop_rx_oversize;
    t.vif_full += s.drop_vif_full - before.drop_vif_full;
    t.quota_fallbacks += s.quota_fallbacks - before.quota_fallbacks;
    t.flood_copies += s.flood_copies - before.flood_copies;
    t.gso_segments += s.gso_segments - before.gso_segments;
    t.tx_drops += (s.drop_oversize + s.drop_gso + s.drop_bad_csum + s.drop_no_buffer + s.drop_tx_ring_full +
                   s.drop_copy_error) -
                  (before.drop_oversize + before.drop_gso + before.drop_bad_csum + before.drop_no_buffer +
                   before.drop_tx_ring_full + before.drop_copy_error);
    t.wire_frames = wire.load();
    t.verified = verified.load();
}

world* the_world() {
    static world* w = [] {
        auto* n = new world();
        if (!n->setup()) {
            std::fprintf(stderr, "fuzz_uplink: cannot set up the emulated host\n");
            std::abort();
        }
        return n;
    }();
    return w;
}

} // namespace
} // namespace zc::netback::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace zc::netback::fuzz;
    reader r{data, size};
    the_world()->run(r);
    up_stats().inputs++;
    return 0;
}
