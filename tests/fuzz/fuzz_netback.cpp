// SPDX-License-Identifier: MIT
// The zc-netback fuzz target (fuzz_netback.hpp says what an input is and
// which invariants it checks).
#include "fuzz_netback.hpp"
#include "fuzz_frontend.hpp"

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

#include "common/log.hpp"
#include "hv/emu/host.hpp"
#include "hv/xs.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"
#include "ring/netif_ring.hpp"
#include "ring/zc_direct.hpp"

namespace zc::netback::fuzz {

totals& stats() noexcept {
    static totals t;
    return t;
}

namespace {

using clock_type = std::chrono::steady_clock;

constexpr hv::domid_t dom_fuzz = 1, dom_peer = 2;
constexpr uint32_t tx_pages = 8, rx_pages = 8, peer_pages = 16;
constexpr size_t canary_len = 16;

struct world {
    std::unique_ptr<hv::emu::host> host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    std::unique_ptr<backend> be;
    frontend fz, peer;
    std::mt19937_64 rng{std::random_device{}()};
    uint8_t canary[canary_len] = {};

    // Run the control plane until `cond` holds or `ms` pass.
    template <class F>
    bool until(F cond, int ms) {
        return run_until(*be, cond, ms);
    }
    // Run the control plane until it has handled everything domain 1's
    // last xenstore write caused. A read on domain 1's own connection is the
    // barrier: the emulated xenstored flushes a write's watch events with
    // its reply, before it serves the next request (xenstored.cpp,
    // handle_input), so once the read returns the backend's events are in
    // its socket; and what the backend writes in turn is flushed to it
    // before the replies to its writes. No idle wait is needed (this
    // waited for 1 ms of quiet before, a third of the time per input).
    void pump() {
        (void)fz.xs->read(frontend_dir(dom_fuzz, 0) + "/state");
        for (int i = 0; i < 1000; ++i) {
            pollfd p{be->fd(), POLLIN, 0};
            const int ready = ::poll(&p, 1, 0);
            if (be->process() == 0 && ready == 0) return;
        }
    }
    const device_info* dev(hv::domid_t fe) {
        static std::vector<device_info> cache;
        cache = be->devices();
        for (auto& d : cache)
            if (d.frontend == fe) return &d;
        return nullptr;
    }
    bool vif_of(hv::domid_t fe, vif_info& out) {
        for (auto& v : be->dp().vifs())
            if (v.frontend == fe) {
                out = v;
                return true;
            }
        return false;
    }

    void keys_of(frontend& f, hv::domid_t d, const std::string& dir_suffix = "") {
        const std::string dir = frontend_dir(d, 0) + dir_suffix;
        f.xs->write(dir + "/tx-ring-ref", std::to_string(f.rings.refs[0]));
        f.xs->write(dir + "/rx-ring-ref", std::to_string(f.rings.refs[1]));
        f.xs->write(dir + "/event-channel", std::to_string(f.evp));
    }

    bool setup() {
        // Lines about a hostile frontend are expected by the thousand.
        if (!std::getenv("ZCNET_LOG")) log::set_threshold(log::level::error);
        std::string why;
        auto h = hv::emu::host::create("fuzz-netback", &why);
        if (!h) return false;
        host = std::move(*h);
        auto d0 = host->domain(0, 0, &why);
        if (!d0) return false;
        dom0 = std::move(*d0);
        auto x = hv::xs::open(dom0->xenstore_path());
        if (!x) return false;
        xs0 = std::move(*x);
        backend_options o;
        o.max_queues = 2;
        o.dp.workers = 1;
        o.dp.drain_timeout_ms = 20; // frames waiting for RX buffers go quickly
        o.dp.hold_ms = 1;
        o.dp.stall_timeout_ms = 50;
        auto b = backend::create(*dom0, o, &why);
        if (!b) return false;
        be = std::move(*b);
        if (!fz.open(*host, dom_fuzz, tx_pages, rx_pages) || !peer.open(*host, dom_peer, 2, peer_pages)) return false;
        // The honest peer: connected once, for the whole run.
        vif_spec s;
        s.frontend = dom_peer;
        if (vif_create(*xs0, s, &why) < 0) return false;
        if (!until([&] { auto* d = dev(dom_peer); return d && d->backend_state == XenbusStateInitWait; }, 5000))
            return false;
        peer.init_rings();
        auto p = peer.ev->bind_unbound(0);
        if (!p) return false;
        peer.evp = *p;
        keys_of(peer, dom_peer);
        const std::string dir = frontend_dir(dom_peer, 0);
        peer.xs->write(dir + "/request-rx-copy", "1");
        peer.xs->write(dir + "/feature-sg", "1");
        peer.xs->write(dir + "/feature-gso-tcpv4", "1");
        peer.xs->write(dir + "/feature-gso-tcpv6", "1");
        peer.xs->write(dir + "/feature-ipv6-csum-offload", "1");
        peer.xs->write(dir + "/state", "4");
        if (!until([&] { auto* d = dev(dom_peer); return d && d->backend_state == XenbusStateConnected; }, 5000))
            return false;
        peer.post_rx(ring::rx_front_ring::size);
        return true;
    }

    // A fresh canary in every page domain 2 granted, but the one it sends
    // its own frame from (TX page 0).
    void paint_peer() {
        for (auto& c : canary) c = uint8_t(rng());
        for (auto* s : {&peer.txbuf, &peer.rxbuf})
            for (uint32_t i = s == &peer.txbuf ? 1 : 0; i < s->count; ++i)
                for (size_t o = 0; o < hv::page_size; o += canary_len)
                    std::memcpy(peer.page(*s, i) + o, canary, canary_len);
    }
    // Domain 2 sends domain 1 one frame (from TX page 0): the bytes domain 1
    // may legitimately see of it.
    void peer_sends() {
        uint8_t* p = peer.page(peer.txbuf, 0);
        default_mac(dom_fuzz, 0).store(p);
        default_mac(dom_peer, 0).store(p + 6);
        p[12] = 0x88, p[13] = 0xb5;
        for (size_t i = 14; i < 300; ++i) p[i] = uint8_t(i);
        netif_tx_request q{};
        q.gref = peer.txbuf.refs[0];
        q.size = 300;
        q.id = uint16_t(peer.tx.req_prod_pvt);
        peer.tx.write_request(peer.tx.req_prod_pvt++, q);
        if (peer.tx.push_requests_and_check_notify()) peer.ev->notify(peer.evp);
    }
    bool has_canary(const uint8_t* p, size_t n) {
        for (size_t o = 0; o + canary_len <= n; ++o)
            if (p[o] == canary[0] && std::memcmp(p + o, canary, canary_len) == 0) return true;
        return false;
    }
    void check_isolation() {
        for (auto* s : {&fz.rings, &fz.txbuf, &fz.rxbuf})
            FUZZ_CHECK(!has_canary(static_cast<const uint8_t*>(s->addr), s->count * hv::page_size));
        for (uint32_t i = 1; i < peer.txbuf.count; ++i)
            for (size_t o = 0; o < hv::page_size; o += canary_len)
                FUZZ_CHECK(std::memcmp(peer.page(peer.txbuf, i) + o, canary, canary_len) == 0);
    }

    // Let the data path work: until every TX request domain 1 pushed is
    // answered, its vif is disabled or gone, or a bound passes.
    void settle(int ms = 20) {
        const auto end = clock_type::now() + std::chrono::milliseconds(ms);
        for (;;) {
            be->process();
            fz.consume();
            peer.consume();
            peer.post_rx(ring::rx_front_ring::size);
            vif_info v;
            const bool live = vif_of(dom_fuzz, v) && !v.disabled;
            const RING_IDX prod = __atomic_load_n(&fz.tx.sring()->req_prod, __ATOMIC_ACQUIRE);
            if (!live || fz.tx.rsp_prod() == prod || clock_type::now() >= end) return;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }

    void run(reader& r);
    void write_keys(reader& r);
    void drive_rings(reader& r);
    void teardown();
};

void world::write_keys(reader& r) {
    const std::string dir = frontend_dir(dom_fuzz, 0);
    auto& xs = *fz.xs;
    const uint8_t kf = r.u8(), feat = r.u8(), nq = r.u8() % 4;
    auto num_or_raw = [&](bool good, uint32_t v) { return good ? std::to_string(v) : std::to_string(r.u32()); };
    const std::string qdir = nq >= 2 ? "/queue-0" : "";
    if (nq) xs.write(dir + "/multi-queue-num-queues", std::to_string(nq));
    xs.write(dir + qdir + "/tx-ring-ref", num_or_raw(!(kf & 1), fz.rings.refs[0]));
    xs.write(dir + qdir + "/rx-ring-ref", num_or_raw(!(kf & 2), fz.rings.refs[1]));
    switch ((kf >> 2) & 3) {
    case 0: xs.write(dir + qdir + "/event-channel", std::to_string(fz.evp)); break;
    case 1:
        xs.write(dir + qdir + "/event-channel-tx", std::to_string(fz.evp));
        xs.write(dir + qdir + "/event-channel-rx", std::to_string(fz.evp2));
        break;
    case 2: xs.write(dir + qdir + "/event-channel", std::to_string(r.u32())); break;
    default: break;
    }
    if (nq >= 2) {
        // A second queue with the same rings: the backend must refuse or
        // cope, never map one page twice into two queues' state unchecked.
        xs.write(dir + "/queue-1/tx-ring-ref", num_or_raw(!(kf & 16), fz.rings.refs[0]));
        xs.write(dir + "/queue-1/rx-ring-ref", num_or_raw(!(kf & 16), fz.rings.refs[1]));
        xs.write(dir + "/queue-1/event-channel", std::to_string(fz.evp));
    }
    if (!(kf & 32)) xs.write(dir + "/request-rx-copy", "1");
    const char* flags[] = {"feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-no-csum-offload",
                           "feature-ipv6-csum-offload", "feature-rx-notify"};
    for (unsigned i = 0; i < 6; ++i)
        if (feat & (1u << i)) xs.write(dir + "/" + flags[i], "1");
    // The direct path (ring/zc_direct.hpp): its release ring in the last TX
    // page (a hostile frontend may share it with frames), or a raw ref.
    if (feat & 64) {
        xs.write(dir + "/" + ring::zc_direct::key_feature, "1");
        xs.write(dir + "/" + ring::zc_direct::key_release_ring,
                 num_or_raw(!(feat & 128), fz.txbuf.refs[tx_pages - 1]));
    }
    // One raw string into a key the backend reads.
    const uint8_t sel = r.u8();
    if (sel & 0x80) {
        const char* keys[] = {"multi-queue-num-queues", "tx-ring-ref", "rx-ring-ref", "event-channel",
                              "request-rx-copy", "feature-sg", "queue-0/tx-ring-ref", "event-channel-tx"};
        const size_t len = r.u8() % 48;
        std::string v;
        for (size_t i = 0; i < len; ++i) v.push_back(char(r.u8()));
        xs.write(dir + "/" + keys[sel & 7], v);
    }
}

void world::drive_rings(reader& r) {
    const mac_addr peer_mac = default_mac(dom_peer, 0), own = default_mac(dom_fuzz, 0);
    for (int ops = 0; ops < 96 && !r.empty(); ++ops) {
        switch (r.u8() % 8) {
        case 0: { // op_tx_request: any fields, a gref of ours most of the time
            netif_tx_request q{};
            const uint8_t g = r.u8();
            q.gref = g < 240 ? fz.txbuf.refs[g % tx_pages] : r.u32();
            q.offset = r.u16();
            if (!(g & 1)) q.offset &= 0xfff;
            q.flags = r.u16();
            q.id = r.u16();
            q.size = r.u16();
            if (!(g & 2)) q.size &= 0x1fff;
            fz.tx.write_request(fz.tx.req_prod_pvt++, q);
            stats().tx_requests++;
            break;
        }
        case 1: { // op_tx_extra
            netif_extra_info e{};
            const uint8_t t = r.u8();
            // Upstream's types and invalid ones, or the direct path's.
            e.type = t < 224 ? t % 6 : uint8_t(ring::zc_direct::extra_tx_payload + (t & 3));
            e.flags = r.u8();
            e.u.gso.size = r.u16();
            e.u.gso.type = r.u8() % 4;
            e.u.gso.pad = r.u8();
            e.u.gso.features = r.u16();
            fz.tx.write_request(fz.tx.req_prod_pvt++, e);
            break;
        }
        case 2: { // op_frame: a frame header at a page offset, then bytes
            const uint32_t pg = r.u8() % tx_pages;
            const uint32_t off = r.u16() & 0xfff;
            uint8_t* p = fz.page(fz.txbuf, pg);
            const uint8_t kind = r.u8();
            uint8_t hdr[14 + 40 + 20] = {};
            const mac_addr dst = (kind & 3) == 0 ? peer_mac : (kind & 3) == 1 ? mac_addr::broadcast() : own;
            dst.store(hdr);
            own.store(hdr + 6);
            hdr[12] = (kind & 4) ? 0x86 : 0x08;
            hdr[13] = (kind & 4) ? 0xdd : 0x00;
            hdr[14] = (kind & 4) ? 0x60 : 0x45;
            hdr[(kind & 4) ? 20 : 23] = (kind & 8) ? 17 : 6;
            hdr[(kind & 4) ? 14 + 40 + 12 : 14 + 20 + 12] = 0x50;
            const size_t n = std::min<size_t>(sizeof hdr, hv::page_size - off);
            std::memcpy(p + off, hdr, n);
            const size_t extra = std::min<size_t>(r.u8(), hv::page_size - off - n);
            for (size_t i = 0; i < extra; ++i) p[off + n + i] = r.u8();
            break;
        }
        case 3: // op_push
            if (fz.tx.push_requests_and_check_notify() || (r.u8() & 1)) fz.ev->notify(fz.evp);
            break;
        case 4: { // op_push_raw: any producer index
            const RING_IDX prod = fz.tx.rsp_cons + r.u16() - 0x100;
            __atomic_store_n(&fz.tx.sring()->req_prod, prod, __ATOMIC_RELEASE);
            fz.ev->notify(fz.evp);
            break;
        }
        case 5: { // op_rx_requests
            const uint32_t n = r.u8() % 32;
            for (uint32_t i = 0; i < n; ++i) {
                netif_rx_request q{};
                const uint8_t g = r.u8();
                q.gref = g < 240 ? fz.rxbuf.refs[g % rx_pages] : r.u32();
                q.id = r.u16();
                fz.rx.write_request(fz.rx.req_prod_pvt++, q);
            }
            if (fz.rx.push_requests_and_check_notify()) fz.ev->notify(fz.evp2 ? fz.evp2 : fz.evp);
            break;
        }
        case 6: { // op_rx_raw: any RX producer index, any rsp_event
            __atomic_store_n(&fz.rx.sring()->req_prod, fz.rx.req_prod_pvt + r.u16() - 0x100, __ATOMIC_RELEASE);
            fz.rx.sring()->rsp_event = r.u32();
            fz.ev->notify(fz.evp2 ? fz.evp2 : fz.evp);
            break;
        }
        default: // op_settle
            settle(r.u8() % 16);
            break;
        }
    }
    fz.ev->notify(fz.evp);
    settle();
}

void world::teardown() {
    vif_info v;
    if (vif_of(dom_fuzz, v)) {
        if (v.disabled) stats().disabled++;
        stats().received += v.stats.rx_packets;
        stats().tx_drops += v.stats.drop_malformed + v.stats.drop_copy_error + v.stats.drop_unsupported +
                            v.stats.drop_bad_offload + v.stats.drop_no_csum + v.stats.drop_mtu + v.stats.drop_no_dest;
    }
    fz.xs->write(frontend_dir(dom_fuzz, 0) + "/state", "6");
    until([&] { auto* d = dev(dom_fuzz); return !d || d->backend_state == XenbusStateClosed; }, 200);
    vif_destroy(*xs0, 0, dom_fuzz, 0);
    // The toolstack removed the vif: the backend lets it go within a bound.
    FUZZ_CHECK(until([&] { return !dev(dom_fuzz) && !vif_of(dom_fuzz, v); }, 5000));
    for (auto p : {fz.evp, fz.evp2})
        if (p) fz.ev->unbind(p);
    fz.evp = fz.evp2 = 0;
}

void world::run(reader& r) {
    vif_info before{};
    vif_of(dom_peer, before);
    paint_peer();
    std::memset(fz.rxbuf.addr, 0, fz.rxbuf.count * hv::page_size);
    fz.init_rings();
    auto p1 = fz.ev->bind_unbound(0), p2 = fz.ev->bind_unbound(0);
    FUZZ_CHECK(p1 && p2);
    fz.evp = *p1;
    fz.evp2 = *p2;
    vif_spec s;
    s.frontend = dom_fuzz;
    std::string why;
    FUZZ_CHECK(vif_create(*xs0, s, &why) == 0);
    until([&] { auto* d = dev(dom_fuzz); return d && d->backend_state == XenbusStateInitWait; }, 1000);
    write_keys(r);
    const uint32_t nstates = r.u8() % 5;
    for (uint32_t i = 0; i < nstates + 1; ++i) {
        const uint8_t st = i == nstates ? 4 : r.u8();
        const std::string v = st < 200 ? std::to_string(st % 10) : std::to_string(r.u32());
        fz.xs->write(frontend_dir(dom_fuzz, 0) + "/state", v);
        pump();
    }
    until([&] { auto* d = dev(dom_fuzz); return !d || d->backend_state == XenbusStateConnected ||
                                                  d->backend_state == XenbusStateClosing; }, 100);
    const device_info* d = dev(dom_fuzz);
    if (d && d->backend_state == XenbusStateConnected) {
        stats().connected++;
        peer_sends();
        drive_rings(r);
    } else if (d && d->backend_state == XenbusStateClosing) {
        stats().connect_refused++;
    }
    teardown();
    settle(5);
    check_isolation();
    // The honest peer is untouched by all of it.
    vif_info after{};
    FUZZ_CHECK(vif_of(dom_peer, after));
    FUZZ_CHECK(!after.disabled);
    const device_info* pd = dev(dom_peer);
    FUZZ_CHECK(pd && pd->backend_state == XenbusStateConnected);
    stats().delivered += after.stats.rx_packets - before.stats.rx_packets;
}

world* the_world() {
    static world* w = [] {
        auto* n = new world();
        if (!n->setup()) {
            std::fprintf(stderr, "fuzz_netback: cannot set up the emulated host\n");
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
    stats().inputs++;
    return 0;
}
