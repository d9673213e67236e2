// SPDX-License-Identifier: MIT
// A frontend's side of one vif over the emulated hypervisor, for the fuzz
// targets that drive zc-netback in-process (fuzz_netback, fuzz_uplink).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include <poll.h>

extern "C" {
#include <xen/io/netif.h>
}

#include "hv/emu/host.hpp"
#include "hv/xs.hpp"
#include "netback/backend.hpp"
#include "ring/netif_ring.hpp"

namespace zc::netback::fuzz {

// Fails the run (both drivers report the trap with the input).
#define FUZZ_CHECK(cond)                                                                                     \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            std::fprintf(stderr, "fuzz: invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            __builtin_trap();                                                                                  \
        }                                                                                                      \
    } while (0)

// An input read front to back (zeros past the end).
struct reader {
    const uint8_t* p;
    size_t n;
    bool empty() const { return n == 0; }
    uint8_t u8() {
        if (!n) return 0;
        --n;
        return *p++;
    }
    uint16_t u16() { return uint16_t(u8() | u8() << 8); }
    uint32_t u32() { return uint32_t(u16()) | uint32_t(u16()) << 16; }
};

// A frontend's side of one vif: ring pages, buffers, an event channel.
struct frontend {
    std::unique_ptr<hv::port> port;
    std::unique_ptr<hv::xs> xs;
    std::unique_ptr<hv::gntshr> shr;
    std::unique_ptr<hv::evtchn> ev;
    hv::shared_pages rings, txbuf, rxbuf;
    ring::tx_front_ring tx;
    ring::rx_front_ring rx;
    hv::evtchn_port_t evp = 0, evp2 = 0;

    bool open(hv::emu::host& h, hv::domid_t d, uint32_t ntx, uint32_t nrx) {
        std::string why;
        auto p = h.domain(d, 0, &why);
        if (!p) return false;
        port = std::move(*p);
        auto x = hv::xs::open(port->xenstore_path());
        auto s = port->open_gntshr();
        auto e = port->open_evtchn();
        if (!x || !s || !e) return false;
        xs = std::move(*x);
        shr = std::move(*s);
        ev = std::move(*e);
        auto r = shr->share(0, 2, true);
        auto t = shr->share(0, ntx, true);
        auto b = shr->share(0, nrx, true);
        if (!r || !t || !b) return false;
        rings = std::move(*r);
        txbuf = std::move(*t);
        rxbuf = std::move(*b);
        return true;
    }
    uint8_t* page(hv::shared_pages& s, uint32_t i) { return static_cast<uint8_t*>(s.addr) + size_t(i) * hv::page_size; }
    void init_rings() {
        std::memset(rings.addr, 0, 2 * hv::page_size);
        tx = ring::tx_front_ring();
        rx = ring::rx_front_ring();
        tx.init(page(rings, 0)); // SHARED_RING_INIT
        rx.init(page(rings, 1));
    }
    void post_rx(uint32_t n) {
        for (uint32_t i = 0; i < n && rx.free_requests(); ++i) {
            netif_rx_request r{};
            r.id = uint16_t(rx.req_prod_pvt % ring::rx_front_ring::size);
            r.gref = rxbuf.refs[r.id % rxbuf.count];
            rx.write_request(rx.req_prod_pvt++, r);
        }
        if (rx.push_requests_and_check_notify()) ev->notify(evp);
    }
    void consume() {
        tx.rsp_cons = tx.rsp_prod();
        rx.rsp_cons = rx.rsp_prod();
    }
};

// Run `be`'s control plane until `cond` holds or `ms` pass.
template <class F>
bool run_until(backend& be, F cond, int ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
        be.process();
        if (cond()) return true;
        if (std::chrono::steady_clock::now() >= end) return false;
        pollfd p{be.fd(), POLLIN, 0};
        ::poll(&p, 1, 1);
    }
}

} // namespace zc::netback::fuzz
