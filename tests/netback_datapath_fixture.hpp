// SPDX-License-Identifier: MIT
// The fixture of zc-netback's data-path tests, shared by the test files
// (netback_datapath_test.cpp, netback_bounce_test.cpp): guest domains (in
// this process) grant their ring and buffer pages to dom0 and write netif
// requests by hand (raw_frontend), so that a test can be as hostile as it
// likes; dom0 runs the datapath (NetbackDatapath).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "emu_host.hpp"
#include "hv/emu/grant.hpp"
#include "netback/datapath.hpp"
#include "ring/netif_ring.hpp"

namespace zc::test::netback_dp {

using zc::mac_addr;
constexpr uint32_t ring_size = 256;
static_assert(ring::tx_front_ring::size == ring_size && ring::rx_front_ring::size == ring_size);
constexpr uint32_t tx_pages = 256; // a full TX ring of 64 KiB frames in flight
constexpr uint32_t rx_pages = 256;

inline mac_addr mac_of(uint8_t n) { return {0x02, 0x00, 0x00, 0x00, 0x00, n}; }
const mac_addr bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

inline std::vector<uint8_t> make_frame(const mac_addr& dst, const mac_addr& src, uint32_t len, uint32_t seed) {
    std::vector<uint8_t> f(len);
    dst.store(f.data());
    src.store(f.data() + 6);
    if (len >= 14) {
        f[12] = 0x08;
        f[13] = 0x00;
    }
    uint32_t x = seed * 2654435761u + 1;
    for (uint32_t i = 14; i < len; ++i) {
        x = x * 1103515245u + 12345u;
        f[i] = uint8_t(x >> 16);
    }
    return f;
}

// An IPv4 or IPv6 header and a TCP header over the frame's first bytes, so
// that checksum-blank and GSO frames pass the checksum_setup checks
// (netback/offload.hpp); the rest stays the seeded payload.
inline void stamp_tcp_headers(std::vector<uint8_t>& f, bool v6) {
    const size_t l4 = v6 ? 14 + 40 : 14 + 20;
    ASSERT_GE(f.size(), l4 + 20);
    if (v6) {
        f[12] = 0x86, f[13] = 0xdd;
        f[14] = 0x60, f[15] = f[16] = f[17] = 0;
        const size_t plen = std::min<size_t>(f.size() - 54, 0xffff);
        f[18] = uint8_t(plen >> 8), f[19] = uint8_t(plen);
        f[20] = 6; // TCP
        f[21] = 64;
    } else {
        f[12] = 0x08, f[13] = 0x00;
        f[14] = 0x45, f[15] = 0;
        const size_t tot = std::min<size_t>(f.size() - 14, 0xffff);
        f[16] = uint8_t(tot >> 8), f[17] = uint8_t(tot);
        f[20] = f[21] = 0; // not a fragment
        f[22] = 64, f[23] = 6;
    }
    f[l4 + 12] = 0x50; // data offset: 20 bytes
}

struct rx_packet {
    std::vector<uint8_t> data;
    uint16_t flags0 = 0;
    uint32_t data_slots = 0;
    bool has_gso = false;
    netif_extra_info gso{};
    int16_t error = 0; // first negative status seen
};

// A netif frontend written by hand: correct by default, hostile on request.
class raw_frontend {
public:
    hv::domid_t dom = 0;
    mac_addr mac{};
    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<hv::evtchn> ev;
    hv::shared_pages rings, txbuf, rxbuf;
    ring::tx_front_ring tx; // the frontend's view of the rings (stack/ring)
    ring::rx_front_ring rx;
    hv::evtchn_port_t port_tx = 0, port_rx = 0;
    uint32_t next_page = 0;
    // RX reassembly state across calls.
    rx_packet cur;
    bool in_pkt = false, want_extra = false, more = false;

    bool init(test::emu_host& host, hv::domid_t d, const mac_addr& m, bool split) {
        dom = d;
        mac = m;
        port = host.domain(d);
        if (!port) return false;
        auto s = port->open_gntshr();
        auto e = port->open_evtchn();
        if (!s || !e) return false;
        shr = std::move(*s);
        ev = std::move(*e);
        auto r = shr->share(0, 2, true);
        auto t = shr->share(0, tx_pages, true);
        auto x = shr->share(0, rx_pages, true);
        if (!r || !t || !x) return false;
        rings = std::move(*r);
        txbuf = std::move(*t);
        rxbuf = std::move(*x);
        tx.init(rings.addr); // SHARED_RING_INIT + FRONT_RING_INIT
        rx.init(static_cast<uint8_t*>(rings.addr) + hv::page_size);
        auto p = ev->bind_unbound(0);
        if (!p) return false;
        port_tx = port_rx = *p;
        if (split) {
            auto q = ev->bind_unbound(0);
            if (!q) return false;
            port_rx = *q;
        }
        return true;
    }

    netback::vif_params params(uint32_t devid = 0, bool configured_mac = true) const {
        netback::vif_params v;
        v.frontend = dom;
        v.devid = devid;
        if (configured_mac) v.mac = mac;
        netback::queue_params q;
        q.tx_ring_ref = rings.refs[0];
        q.rx_ring_ref = rings.refs[1];
        q.tx_evtchn = port_tx;
        q.rx_evtchn = port_rx;
        v.queues.push_back(q);
        v.feature_sg = v.feature_gso_tcpv4 = v.feature_gso_tcpv6 = true;
        v.feature_ipv6_csum_offload = true; // as Linux netfront writes it
        return v;
    }

    uint8_t* tx_page(uint32_t i) { return static_cast<uint8_t*>(txbuf.addr) + size_t(i) * hv::page_size; }
    uint8_t* rx_page(uint32_t i) { return static_cast<uint8_t*>(rxbuf.addr) + size_t(i) * hv::page_size; }

    // ---- TX -----------------------------------------------------------------
    void put_tx(const netif_tx_request& r) { tx.write_request(tx.req_prod_pvt++, r); }
    void put_extra(const netif_extra_info& e) { tx.write_request(tx.req_prod_pvt++, e); }
    // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
    void push_tx() {
        if (tx.push_requests_and_check_notify()) ev->notify(port_tx);
    }
    // Force a notification (a hostile frontend does not care about req_event).
    void kick_tx() { ev->notify(port_tx); }

    // Write `f` over slots of the given sizes (sum must be f.size()), the
    // first at `first_off`. Returns the ids used (one per slot).
    std::vector<uint16_t> send(const std::vector<uint8_t>& f, std::vector<uint16_t> sizes = {},
                               uint16_t first_off = 0, uint8_t gso_type = 0, uint16_t gso_size = 0,
                               uint16_t flags = 0) {
        if (sizes.empty()) sizes = default_layout(uint32_t(f.size()), first_off);
        std::vector<uint16_t> ids;
        uint32_t done = 0;
        for (size_t i = 0; i < sizes.size(); ++i) {
            const uint32_t pg = next_page++ % tx_pages;
            const uint16_t off = i == 0 ? first_off : 0;
            std::memcpy(tx_page(pg) + off, f.data() + done, sizes[i]);
            netif_tx_request r{};
            r.gref = txbuf.refs[pg];
            r.offset = off;
            r.id = uint16_t(tx.req_prod_pvt & (ring_size - 1));
            r.size = i == 0 ? uint16_t(f.size()) : sizes[i];
            r.flags = uint16_t((i + 1 < sizes.size() ? NETTXF_more_data : 0) | (i == 0 ? flags : 0));
            if (i == 0 && gso_type) r.flags |= NETTXF_extra_info;
            ids.push_back(r.id);
            put_tx(r);
            if (i == 0 && gso_type) {
                netif_extra_info e{};
                e.type = XEN_NETIF_EXTRA_TYPE_GSO;
                e.u.gso.size = gso_size;
                e.u.gso.type = gso_type;
                put_extra(e);
            }
            done += sizes[i];
        }
        push_tx();
        return ids;
    }
    static std::vector<uint16_t> default_layout(uint32_t len, uint16_t first_off) {
        std::vector<uint16_t> s;
        uint32_t left = len;
        uint32_t first = std::min<uint32_t>(left, uint32_t(hv::page_size) - first_off);
        s.push_back(uint16_t(first));
        left -= first;
        while (left) {
            uint32_t k = std::min<uint32_t>(left, hv::page_size);
            s.push_back(uint16_t(k));
            left -= k;
        }
        return s;
    }

    // Wait on our event channel (bounded), then unmask what fired.
    void wait_event(int ms) {
        if (!test::readable(ev->fd(), ms)) return;
        for (;;) {
            auto p = ev->pending();
            if (!p) break;
            ev->unmask(*p);
        }
    }

    // Collect `n` TX responses (ignoring NULL ones for extras).
    bool wait_tx(size_t n, std::vector<netif_tx_response>& out, int timeout_ms = 5000) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            const RING_IDX prod = tx.rsp_prod();
            while (tx.rsp_cons != prod) {
                const auto r = tx.read_response<netif_tx_response>(tx.rsp_cons++);
                if (r.status != NETIF_RSP_NULL) out.push_back(r);
            }
            if (out.size() >= n) return true;
            // RING_FINAL_CHECK_FOR_RESPONSES, then sleep on the channel.
            if (tx.final_check_for_responses()) continue;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  end - std::chrono::steady_clock::now()).count();
            if (left <= 0) return false;
            wait_event(int(std::min<int64_t>(left, 50)));
        }
    }
    size_t tx_pending_responses() { return tx.rsp_prod() - tx.rsp_cons; }

    // ---- RX -----------------------------------------------------------------
    void post_rx(uint32_t n) {
        for (uint32_t i = 0; i < n; ++i) {
            netif_rx_request r{};
            r.id = uint16_t(rx.req_prod_pvt & (ring_size - 1));
            r.gref = rxbuf.refs[r.id % rx_pages];
            rx.write_request(rx.req_prod_pvt++, r);
        }
        if (rx.push_requests_and_check_notify()) ev->notify(port_rx);
    }

    // Reassemble packets from RX responses (as xennet_get_responses does).
    bool wait_rx(size_t n, std::vector<rx_packet>& out, int timeout_ms = 5000, bool repost = true) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            const RING_IDX prod = rx.rsp_prod();
            uint32_t consumed = 0;
            while (rx.rsp_cons != prod) {
                const RING_IDX idx = rx.rsp_cons++;
                ++consumed;
                if (!in_pkt) {
                    cur = rx_packet{};
                    in_pkt = true;
                }
                if (want_extra) {
                    const auto e = rx.read_response<netif_extra_info>(idx);
                    if (e.type == XEN_NETIF_EXTRA_TYPE_GSO) {
                        cur.has_gso = true;
                        cur.gso = e;
                    }
                    want_extra = e.flags & XEN_NETIF_EXTRA_FLAG_MORE;
                } else {
                    const auto r = rx.read_response<netif_rx_response>(idx);
                    if (cur.data_slots == 0) {
                        cur.flags0 = r.flags;
                        want_extra = r.flags & NETRXF_extra_info;
                    }
                    ++cur.data_slots;
                    if (r.status < 0) {
                        if (!cur.error) cur.error = r.status;
                    } else {
                        const uint8_t* p = rx_page(r.id % rx_pages) + r.offset;
                        cur.data.insert(cur.data.end(), p, p + r.status);
                    }
                    more = r.flags & NETRXF_more_data;
                }
                if (!want_extra && !more) {
                    out.push_back(std::move(cur));
                    in_pkt = false;
                }
            }
            if (repost && consumed) post_rx(consumed);
            if (out.size() >= n) return true;
            if (rx.final_check_for_responses()) continue;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  end - std::chrono::steady_clock::now()).count();
            if (left <= 0) return false;
            wait_event(int(std::min<int64_t>(left, 50)));
        }
    }
};

class NetbackDatapath : public ::testing::Test {
public:
    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<netback::datapath> dp;
    std::mutex lock;
    std::condition_variable cv;
    std::vector<std::pair<hv::domid_t, std::string>> fatals;
    // Frontends outlive the datapath (dom0 maps their rings until it is gone).
    std::vector<std::unique_ptr<raw_frontend>> guests;

    void SetUp() override {
        ASSERT_TRUE(host.ok());
        dom0 = host.domain(0);
        ASSERT_TRUE(dom0);
    }
    void TearDown() override {
        hv::emu::test_hooks::set_copy_hook(nullptr, nullptr);
        dp.reset();
        guests.clear();
    }
    // The frontend's domain dies (its process would exit).
    void kill(raw_frontend*& g) {
        for (auto& p : guests)
            if (p.get() == g) p.reset();
        g = nullptr;
    }

    void start(netback::datapath_options o = {}) {
        std::string why;
        auto r = netback::datapath::create(
            *dom0, o,
            [this](hv::domid_t d, uint32_t, const std::string& reason) {
                std::lock_guard g(lock);
                fatals.emplace_back(d, reason);
                cv.notify_all();
            },
            &why);
        ASSERT_TRUE(r) << why;
        dp = std::move(*r);
    }

    raw_frontend* guest(hv::domid_t d, bool split = false, bool configured_mac = true, uint32_t post = rx_pages,
                        const std::function<void(netback::vif_params&)>& tweak = {}) {
        auto g = std::make_unique<raw_frontend>();
        if (!g->init(host, d, mac_of(uint8_t(d)), split)) {
            ADD_FAILURE() << "guest " << d;
            return nullptr;
        }
        std::string why;
        netback::vif_params vp = g->params(0, configured_mac);
        if (tweak) tweak(vp);
        int rc = dp->add_vif(vp, &why);
        if (rc != 0) {
            ADD_FAILURE() << "add_vif d" << d << ": " << rc << " " << why;
            return nullptr;
        }
        if (post) g->post_rx(post);
        guests.push_back(std::move(g));
        return guests.back().get();
    }

    netback::vif_info info(hv::domid_t d) {
        for (auto& v : dp->vifs())
            if (v.frontend == d) return v;
        ADD_FAILURE() << "no vif for d" << d;
        return {};
    }

    // Wait for the datapath to disable `d`; returns its reason.
    std::string wait_fatal(hv::domid_t d, int ms = 5000) {
        std::unique_lock g(lock);
        std::string reason;
        cv.wait_for(g, std::chrono::milliseconds(ms), [&] {
            for (auto& f : fatals)
                if (f.first == d) {
                    reason = f.second;
                    return true;
                }
            return false;
        });
        return reason;
    }

    // Bounded wait for a condition on the counters (sleeps, never spins).
    template <class F>
    bool eventually(F f, int ms = 5000) {
        for (int waited = 0; waited < ms; waited += 5) {
            if (f()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return f();
    }

    // `from` sends one frame to `to`; `to` must receive it intact.
    void expect_delivery(raw_frontend& from, raw_frontend& to, uint32_t len = 200, uint32_t seed = 7) {
        auto f = make_frame(to.mac, from.mac, len, seed);
        auto ids = from.send(f);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(from.wait_tx(ids.size(), tr));
        for (auto& r : tr) EXPECT_EQ(r.status, NETIF_RSP_OKAY);
        std::vector<rx_packet> rx;
        ASSERT_TRUE(to.wait_rx(1, rx)) << "d" << from.dom << " -> d" << to.dom;
        EXPECT_EQ(rx[0].data, f);
    }

    // A hostile vif `bad` is disabled with a reason containing `what`, and
    // the other two still talk to each other.
    void expect_fatal(raw_frontend& bad, raw_frontend& b, raw_frontend& c, const char* what) {
        const std::string reason = wait_fatal(bad.dom);
        EXPECT_NE(reason.find(what), std::string::npos) << "reason: '" << reason << "'";
        auto i = info(bad.dom);
        EXPECT_TRUE(i.disabled);
        EXPECT_EQ(i.disabled_reason, reason);
        expect_delivery(b, c);
        expect_delivery(c, b);
        // Frames for the disabled vif go nowhere (counted), others carry on.
        auto f = make_frame(bad.mac, b.mac, 100, 1);
        auto ids = b.send(f);
        std::vector<netif_tx_response> tr;
        ASSERT_TRUE(b.wait_tx(ids.size(), tr));
        EXPECT_TRUE(eventually([&] { return info(bad.dom).stats.drop_disabled >= 1; }));
        EXPECT_EQ(info(bad.dom).stats.rx_packets, 0u);
    }

    void expect_balanced() {
        auto c = dp->hv_counters();
        EXPECT_EQ(c.maps, c.unmaps);
        EXPECT_EQ(dp->bounce_in_use(), 0u);
    }
};

} // namespace zc::test::netback_dp
