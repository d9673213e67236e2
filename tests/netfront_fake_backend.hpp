// SPDX-License-Identifier: MIT
// A minimal fake netback in dom0 of the emulated host, and the Netfront
// fixture that connects our netfront to it: the toolstack's directories as
// libxl writes them, the xenstore handshake, the backend ends of the rings.
// Shared by netfront_test.cpp and netfront_direct_hostile_test.cpp.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
}

#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "ring/netif_ring.hpp"

namespace zc::test::netfront_fake {

using namespace zc;

constexpr hv::domid_t fe_dom = 5;
constexpr uint32_t devid = 0;
constexpr int wait_ms = 10000;
const link::mac_addr test_mac{0x00, 0x16, 0x3e, 0x00, 0x05, 0x00};

inline std::string fe_dir(hv::domid_t fe = fe_dom, uint32_t dev = devid) {
    return "/local/domain/" + std::to_string(fe) + "/device/vif/" + std::to_string(dev);
}
inline std::string be_dir(hv::domid_t fe = fe_dom, uint32_t dev = devid) {
    return "/local/domain/0/backend/vif/" + std::to_string(fe) + "/" + std::to_string(dev);
}

// What libxl does for a vif (libxl__device_generic_add, libxl_nic.c): the
// frontend directory owned by the guest and readable by the backend, the
// backend directory owned by the backend and readable by the guest, both
// Initialising.
inline void toolstack_add_vif(hv::xs& xs, hv::domid_t fe, uint32_t dev) {
    std::string f = fe_dir(fe, dev), b = be_dir(fe, dev);
    ASSERT_EQ(xs.mkdir(f), 0);
    ASSERT_EQ(xs.set_perms(f, {"n" + std::to_string(fe), "r0"}), 0);
    ASSERT_EQ(xs.write(f + "/backend", b), 0);
    ASSERT_EQ(xs.write(f + "/backend-id", "0"), 0);
    ASSERT_EQ(xs.write(f + "/handle", std::to_string(dev)), 0);
    ASSERT_EQ(xs.write(f + "/mac", "00:16:3e:00:05:00"), 0);
    ASSERT_EQ(xs.write(f + "/state", "1"), 0);
    ASSERT_EQ(xs.mkdir(b), 0);
    ASSERT_EQ(xs.set_perms(b, {"n0", "r" + std::to_string(fe)}), 0);
    ASSERT_EQ(xs.write(b + "/frontend", f), 0);
    ASSERT_EQ(xs.write(b + "/frontend-id", std::to_string(fe)), 0);
    ASSERT_EQ(xs.write(b + "/online", "1"), 0);
    ASSERT_EQ(xs.write(b + "/handle", std::to_string(dev)), 0);
    ASSERT_EQ(xs.write(b + "/mac", "00:16:3e:00:05:00"), 0);
    ASSERT_EQ(xs.write(b + "/type", "vif"), 0);
    ASSERT_EQ(xs.write(b + "/state", "1"), 0);
}

// Every key below `dir`, relative, with its value.
inline void list_keys(hv::xs& xs, const std::string& dir, const std::string& rel, std::map<std::string, std::string>& out) {
    auto d = xs.directory(dir);
    if (!d) return;
    for (const auto& k : *d) {
        std::string p = dir + "/" + k, r = rel.empty() ? k : rel + "/" + k;
        auto sub = xs.directory(p);
        if (sub && !sub->empty()) {
            list_keys(xs, p, r, out);
        } else {
            auto v = xs.read(p);
            out[r] = v ? *v : "?";
        }
    }
}

inline std::vector<uint8_t> pattern(size_t len, uint32_t seed) {
    std::vector<uint8_t> v(len);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) {
        x = x * 1103515245u + 12345u;
        b = uint8_t(x >> 16);
    }
    return v;
}

struct offer {
    bool rx_copy = true;
    bool sg = true;
    bool gso4 = true;
    bool gso6 = true;
    bool split = false;
    int max_queues = 0; // 0: no multi-queue-max-queues key
    bool zc_direct = false; // feature-zc-direct (ring/zc_direct.hpp)
};

// A minimal netback in dom0 of this process.
class fake_backend {
public:
    struct queue {
        hv::mapping txm, rxm;
        ring::tx_back_ring tx;
        ring::rx_back_ring rx;
        hv::evtchn_port_t tx_port = 0, rx_port = 0; // local ports
        hv::gref_t tx_ref = 0, rx_ref = 0;
        // The shared pages, for tests that read or forge the raw indices.
        netif_tx_sring* tx_sring() const { return static_cast<netif_tx_sring*>(txm.addr); }
        netif_rx_sring* rx_sring() const { return static_cast<netif_rx_sring*>(rxm.addr); }
    };
    struct tx_packet {
        std::vector<netif_tx_request_t> slots;
        bool has_extra = false;
        netif_extra_info_t extra{};
        std::vector<uint8_t> data;
        bool copy_ok = true;
    };

    explicit fake_backend(test::emu_host& host) {
        port = host.domain(0);
        if (!port) return;
        auto x = hv::xs::open(port->xenstore_path());
        if (x) xs = std::move(*x);
        auto g = port->open_gnttab();
        if (g) gt = std::move(*g);
        auto e = port->open_evtchn();
        if (e) ev = std::move(*e);
    }
    ~fake_backend() { unmap_all(); }

    bool ok() const { return port && xs && gt && ev; }

    void write_features(const offer& o) {
        std::string b = be_dir();
        xs->write(b + "/feature-rx-copy", o.rx_copy ? "1" : "0");
        xs->write(b + "/feature-rx-flip", "0");
        xs->write(b + "/feature-sg", o.sg ? "1" : "0");
        xs->write(b + "/feature-gso-tcpv4", o.gso4 ? "1" : "0");
        xs->write(b + "/feature-gso-tcpv6", o.gso6 ? "1" : "0");
        xs->write(b + "/feature-ipv6-csum-offload", "1");
        xs->write(b + "/feature-split-event-channels", o.split ? "1" : "0");
        if (o.zc_direct) xs->write(b + "/feature-zc-direct", "1");
        if (o.max_queues) xs->write(b + "/multi-queue-max-queues", std::to_string(o.max_queues));
    }

    int fe_state() {
        auto v = xs->read(fe_dir() + "/state");
        return v ? std::atoi(v->c_str()) : 0;
    }

    // Wait until the frontend's state satisfies pred (watch-driven).
    template <class P>
    bool wait_fe(P pred, int ms = wait_ms) {
        if (!_watching) {
            if (xs->watch(fe_dir() + "/state", "fe") != 0) return false;
            _watching = true;
        }
        for (;;) {
            while (xs->read_watch()) {}
            if (pred(fe_state())) return true;
            if (!test::readable(xs->fileno(), ms)) return false;
        }
    }

    // netback_probe + frontend_changed(Connected) + connect: offer, wait
    // for the frontend, map its rings, bind its channels, go Connected.
    // Returns 0 or a code saying which step failed.
    int handshake(const offer& o, bool go_connected = true) {
        write_features(o);
        xs->write(be_dir() + "/state", "2"); // InitWait
        if (!wait_fe([](int s) { return s == XenbusStateConnected || s == XenbusStateClosing; })) return 1;
        if (fe_state() != XenbusStateConnected) return 2;
        list_keys(*xs, fe_dir(), "", keys);
        auto num = keys.count("multi-queue-num-queues") ? std::atoi(keys["multi-queue-num-queues"].c_str()) : 1;
        auto key = [&](const std::string& k) { return uint32_t(std::strtoul(keys[k].c_str(), nullptr, 10)); };
        for (int i = 0; i < num; i++) {
            std::string pre = num > 1 ? "queue-" + std::to_string(i) + "/" : "";
            queue q;
            q.tx_ref = key(pre + "tx-ring-ref");
            q.rx_ref = key(pre + "rx-ring-ref");
            hv::domid_t fe = fe_dom;
            auto tm = gt->map(1, &fe, &q.tx_ref, true);
            auto rm = gt->map(1, &fe, &q.rx_ref, true);
            if (!tm || !rm) return 3;
            q.txm = *tm;
            q.rxm = *rm;
            if (!q.tx.attach(q.txm.addr) || !q.rx.attach(q.rxm.addr)) return 6;
            if (keys.count(pre + "event-channel")) {
                auto p = ev->bind_interdomain(fe_dom, key(pre + "event-channel"));
                if (!p) return 4;
                q.tx_port = q.rx_port = *p;
            } else {
                auto t = ev->bind_interdomain(fe_dom, key(pre + "event-channel-tx"));
                auto r = ev->bind_interdomain(fe_dom, key(pre + "event-channel-rx"));
                if (!t || !r) return 5;
                q.tx_port = *t;
                q.rx_port = *r;
            }
            qs.push_back(q);
        }
        if (go_connected) xs->write(be_dir() + "/state", "4");
        return 0;
    }

    void unmap_all() {
        for (auto& q : qs) {
            if (q.txm.addr) gt->unmap(q.txm);
            if (q.rxm.addr) gt->unmap(q.rxm);
            q.txm = {};
            q.rxm = {};
            if (q.tx_port) ev->unbind(q.tx_port);
            if (q.rx_port && q.rx_port != q.tx_port) ev->unbind(q.rx_port);
            q.tx_port = q.rx_port = 0;
        }
    }

    // Linux netback's side of a frontend-initiated close: on Closing,
    // disconnect (unmap) and go Closing; on Closed, go Closed.
    bool serve_close(bool unmap) {
        if (!wait_fe([](int s) { return s == XenbusStateClosing || s == XenbusStateClosed; })) return false;
        if (unmap) unmap_all();
        xs->write(be_dir() + "/state", "5");
        if (!wait_fe([](int s) { return s == XenbusStateClosed; })) return false;
        xs->write(be_dir() + "/state", "6");
        return true;
    }

    // --- TX: take what the frontend sent -----------------------------------

    RING_IDX tx_req_prod(queue& q) { return q.tx.req_prod(); }
    RING_IDX rx_req_prod(queue& q) { return q.rx.req_prod(); }

    bool take_tx(queue& q, tx_packet& p) {
        p = tx_packet{};
        if (q.tx.req_cons == tx_req_prod(q)) return false;
        p.slots.push_back(q.tx.read_request<netif_tx_request_t>(q.tx.req_cons++));
        if (p.slots[0].flags & NETTXF_extra_info) {
            p.has_extra = true;
            p.extra = q.tx.read_request<netif_extra_info_t>(q.tx.req_cons++);
        }
        while ((p.slots.back().flags & NETTXF_more_data) && p.slots.size() < 64)
            p.slots.push_back(q.tx.read_request<netif_tx_request_t>(q.tx.req_cons++));
        size_t total = p.slots[0].size, rest = 0;
        for (size_t i = 1; i < p.slots.size(); i++) rest += p.slots[i].size;
        if (rest > total) {
            p.copy_ok = false;
            return true;
        }
        p.data.resize(total);
        size_t off = 0;
        for (size_t i = 0; i < p.slots.size(); i++) {
            size_t n = i == 0 ? total - rest : p.slots[i].size;
            hv::copy_segment seg{};
            seg.source.foreign.ref = p.slots[i].gref;
            seg.source.foreign.domid = fe_dom;
            seg.source.foreign.offset = p.slots[i].offset;
            seg.dest.virt = p.data.data() + off;
            seg.len = uint16_t(n);
            seg.flags = GNTCOPY_source_gref;
            if (gt->copy(&seg, 1) != 0 || seg.status != GNTST_okay) p.copy_ok = false;
            off += n;
        }
        return true;
    }

    void put_tx_rsp(queue& q, uint16_t id, int16_t status) {
        netif_tx_response_t r{id, status};
        q.tx.write_response(q.tx.rsp_prod_pvt++, r);
    }

    void answer_tx(queue& q, const tx_packet& p, int16_t status = NETIF_RSP_OKAY) {
        for (size_t i = 0; i < p.slots.size(); i++) {
            put_tx_rsp(q, p.slots[i].id, status);
            if (i == 0 && p.has_extra) put_tx_rsp(q, 0, NETIF_RSP_NULL);
        }
        push_tx(q);
    }

    void push_tx(queue& q) {
        if (q.tx.push_responses_and_check_notify()) ev->notify(q.tx_port);
    }

    // --- RX: deliver to the frontend -----------------------------------------

    netif_rx_request_t take_rx_req(queue& q) {
        return q.rx.read_request<netif_rx_request_t>(q.rx.req_cons++);
    }
    uint32_t rx_reqs_available(queue& q) { return rx_req_prod(q) - q.rx.req_cons; }

    bool copy_to_rx(const netif_rx_request_t& req, uint16_t offset, const uint8_t* src, size_t n) {
        hv::copy_segment seg{};
        seg.source.virt = const_cast<uint8_t*>(src);
        seg.dest.foreign.ref = req.gref;
        seg.dest.foreign.domid = fe_dom;
        seg.dest.foreign.offset = offset;
        seg.len = uint16_t(n);
        seg.flags = GNTCOPY_dest_gref;
        return gt->copy(&seg, 1) == 0 && seg.status == GNTST_okay;
    }

    void put_rx_rsp(queue& q, uint16_t id, uint16_t offset, uint16_t flags, int16_t status) {
        netif_rx_response_t r{id, offset, flags, status};
        q.rx.write_response(q.rx.rsp_prod_pvt++, r);
    }
    void put_rx_extra(queue& q, const netif_extra_info_t& ex) { q.rx.write_response(q.rx.rsp_prod_pvt++, ex); }
    void push_rx(queue& q) {
        if (q.rx.push_responses_and_check_notify()) ev->notify(q.rx_port);
    }

    // Deliver a frame as Linux netback's xenvif_rx_skb does for a copying
    // frontend: one slot per page, the GSO extra in the slot after the
    // first, each response in its request's slot.
    bool deliver(queue& q, const uint8_t* data, size_t len, uint16_t gso_size = 0, uint8_t gso_type = 0,
                 uint16_t csum = 0) {
        uint32_t n = uint32_t(std::max<size_t>(1, (len + hv::page_size - 1) / hv::page_size));
        if (rx_reqs_available(q) < n + (gso_size ? 1 : 0)) return false;
        size_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
            size_t chunk = std::min<size_t>(len - off, hv::page_size);
            auto req = take_rx_req(q);
            if (!copy_to_rx(req, 0, data + off, chunk)) return false;
            uint16_t flags = uint16_t((i + 1 < n ? NETRXF_more_data : 0) |
                                      (i == 0 ? csum | (gso_size ? NETRXF_extra_info : 0) : 0));
            put_rx_rsp(q, req.id, 0, flags, int16_t(chunk));
            if (i == 0 && gso_size) {
                auto ereq = take_rx_req(q);
                netif_extra_info_t ex{};
                ex.type = XEN_NETIF_EXTRA_TYPE_GSO;
                ex.u.gso.size = gso_size;
                ex.u.gso.type = gso_type;
                (void)ereq;
                put_rx_extra(q, ex);
            }
            off += chunk;
        }
        push_rx(q);
        return true;
    }

    // Take every TX packet of every queue, answer it and loop it back into
    // the same queue's RX ring. Returns the number of frames looped.
    int loopback() {
        int n = 0;
        for (auto& q : qs) {
            for (;;) {
                tx_packet p;
                while (take_tx(q, p)) {
                    answer_tx(q, p);
                    uint16_t gs = p.has_extra ? p.extra.u.gso.size : 0;
                    uint8_t gt_ = p.has_extra ? p.extra.u.gso.type : 0;
                    uint16_t csum = (p.slots[0].flags & NETTXF_csum_blank) ? (NETRXF_csum_blank | NETRXF_data_validated)
                                    : (p.slots[0].flags & NETTXF_data_validated) ? NETRXF_data_validated : 0;
                    if (p.copy_ok && deliver(q, p.data.data(), p.data.size(), gs, gt_, csum)) n++;
                }
                // Going idle: ask for a kick on the next request.
                if (!q.tx.final_check_for_requests()) break;
            }
        }
        return n;
    }

    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::xs> xs;
    std::unique_ptr<hv::gnttab> gt;
    std::unique_ptr<hv::evtchn> ev;
    std::vector<queue> qs;
    std::map<std::string, std::string> keys; // the frontend's directory at Connected

private:
    bool _watching = false;
};

class Netfront : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(host.ok());
        be = std::make_unique<fake_backend>(host);
        ASSERT_TRUE(be->ok());
        guest = host.domain(fe_dom);
        ASSERT_TRUE(guest);
        toolstack_add_vif(*be->xs, fe_dom, devid);
    }
    void TearDown() override {
        // Close cleanly (the fake backend follows) whatever state the test
        // left the netfront in.
        if (nf && !be->qs.empty()) {
            std::thread t([&] { be->serve_close(true); });
            nf->disconnect();
            t.join();
        }
        nf.reset();
        be.reset();
    }

    // Connect with the fake backend's handshake in a thread.
    int connect(const offer& o, link::netfront_options opt = {}, std::string* why_out = nullptr) {
        int be_rc = -1;
        std::thread t([&] { be_rc = be->handshake(o); });
        std::string why;
        auto r = link::netfront::connect(*guest, opt, &why);
        t.join();
        if (why_out) *why_out = why;
        if (!r) return r.error();
        nf = std::move(*r);
        EXPECT_EQ(be_rc, 0);
        return 0;
    }

    fake_backend::queue& bq(uint32_t i = 0) { return be->qs.at(i); }

    test::emu_host host;
    std::unique_ptr<fake_backend> be;
    std::unique_ptr<hv::port> guest;
    std::unique_ptr<link::netfront> nf;
};

} // namespace zc::test::netfront_fake
