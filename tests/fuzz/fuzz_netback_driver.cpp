// SPDX-License-Identifier: MIT
// Runs the zc-netback fuzz target in ctest (and under ASan/UBSan with gcc,
// where libFuzzer is unavailable): first the kept corpus
// (tests/fuzz/corpus/netback), then a seeded set of generated inputs: a
// well-behaved frontend's life (correct keys, Connected, RX buffers, frames
// to the peer), the same mutated (byte flips, other operations, cut short),
// and random bytes. The target traps on a broken invariant; this test also
// checks that the inputs reached connected vifs, refused connects, disabled
// vifs, delivered frames and counted drops, so it cannot pass by stopping at
// the first check.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include <xen/io/netif.h>
}

#include "fuzz_driver.hpp"
#include "fuzz_netback.hpp"

using namespace zc::fuzz_driver;
using zc::netback::fuzz::stats;

namespace {

void put16(bytes& b, uint16_t v) {
    b.push_back(uint8_t(v));
    b.push_back(uint8_t(v >> 8));
}

// A frontend that does everything right: keys, Connected, RX buffers, and
// `frames` frames to the peer (IPv4 or IPv6 TCP, checksum done or blank).
bytes good_life(std::mt19937_64& rng, uint32_t frames) {
    bytes b;
    b.push_back(0);    // key flags: every key correct, one event channel, rx-copy
    b.push_back(0x17); // sg, gso-tcpv4, gso-tcpv6, ipv6-csum-offload
    b.push_back(0);    // one queue
    b.push_back(0);    // no raw string
    b.push_back(0);    // straight to Connected
    b.push_back(5);    // op_rx_requests
    b.push_back(16);
    for (uint8_t i = 0; i < 16; ++i) {
        b.push_back(i);
        put16(b, i);
    }
    for (uint32_t f = 0; f < frames; ++f) {
        const uint8_t pg = uint8_t(f % 8);
        b.push_back(2); // op_frame
        b.push_back(pg);
        put16(b, 0);
        b.push_back(uint8_t(rng() % 16 & ~3u)); // to the peer
        const uint8_t extra = uint8_t(rng());
        b.push_back(extra);
        for (unsigned i = 0; i < extra; ++i) b.push_back(uint8_t(rng()));
        b.push_back(0); // op_tx_request
        b.push_back(uint8_t(pg * 4));
        put16(b, 0);                                   // offset
        put16(b, (rng() & 1) ? NETTXF_csum_blank : 0); // flags
        put16(b, uint16_t(f));                         // id
        put16(b, uint16_t(74 + extra));                // size
        b.push_back(3);                                // op_push
        b.push_back(1);
    }
    b.push_back(7); // op_settle
    b.push_back(10);
    return b;
}

TEST(netback_fuzz, kept_corpus) {
    EXPECT_GT(run_corpus(ZC_FUZZ_NETBACK_CORPUS, LLVMFuzzerTestOneInput), 0u) << "the kept corpus is empty";
}

TEST(netback_fuzz, generated_inputs_keep_every_invariant) {
    std::mt19937_64 rng(20261202);
    const auto before = stats();
    const size_t n = generated_count(120);
    for (size_t i = 0; i < n; ++i) {
        bytes b;
        switch (i % 4) {
        case 0: b = good_life(rng, 1 + uint32_t(rng() % 6)); break;
        case 1:
        case 2: b = mutate(rng, good_life(rng, 1 + uint32_t(rng() % 4))); break;
        default:
            b.resize(rng() % 400);
            for (auto& x : b) x = uint8_t(rng());
            break;
        }
        save(b, i);
        LLVMFuzzerTestOneInput(b.data(), b.size());
    }
    const auto& s = stats();
    EXPECT_EQ(s.inputs - before.inputs, n);
    EXPECT_GT(s.connected - before.connected, n / 8) << "too few inputs got a connected vif";
    EXPECT_GT(s.connect_refused - before.connect_refused, 0u) << "no bad keys were refused";
    EXPECT_GT(s.delivered - before.delivered, n / 8) << "too few frames reached the peer";
    EXPECT_GT(s.disabled - before.disabled, 0u) << "no protocol violation disabled a vif";
    EXPECT_GT(s.tx_drops - before.tx_drops, 0u) << "no counted drop";
    EXPECT_GT(s.received - before.received, 0u) << "the peer's frames never reached the fuzzed frontend";
}

} // namespace
