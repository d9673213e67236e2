// SPDX-License-Identifier: MIT
// Runs the uplink fuzz target in ctest (and under ASan/UBSan with gcc,
// where libFuzzer is unavailable): first the kept corpus
// (tests/fuzz/corpus/uplink), then a seeded set of generated inputs: a
// well-formed mix of wire frames, RX buffers and guest frames to the wire
// (GSO and checksum-blank among them), the same mutated, and random bytes.
// The target traps on a broken invariant; this test also checks that the
// inputs reached delivery, flooding, every counted
// drop from the wire, software segmentation and verified checksums (the
// quota fallback is reported: reaching it depends on the workers' speed), so it
// cannot pass by stopping at the first check.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz_driver.hpp"
#include "fuzz_uplink.hpp"

using namespace zc::fuzz_driver;
using zc::netback::fuzz::up_stats;

namespace {

void put16(bytes& b, uint16_t v) {
    b.push_back(uint8_t(v));
    b.push_back(uint8_t(v >> 8));
}

// Operations as fuzz_uplink.cpp reads them (selector % 4).
void wire_frame(std::mt19937_64& rng, bytes& b) {
    b.push_back(0);
    b.push_back(uint8_t(rng() & 0x7f)); // kind: destination, Ethernet type, source
    const uint16_t len = uint16_t(rng() % 8 == 0 ? rng() % 20 : 60 + rng() % 1500);
    put16(b, len);
    for (uint16_t i = 0; i < len; ++i) b.push_back(uint8_t(rng()));
}
void rx_buffers(std::mt19937_64& rng, bytes& b) {
    b.push_back(1);
    b.push_back(uint8_t(rng()));
    b.push_back(uint8_t(rng() % 64));
}
void guest_frame(std::mt19937_64& rng, bytes& b) {
    b.push_back(2);
    b.push_back(uint8_t(rng() & 0x3f)); // kind: GSO type, checksum-blank, IPv6, UDP, TCP options
    put16(b, uint16_t(rng() % 4096));   // length
    put16(b, uint16_t(200 + rng() % 1400)); // MSS
}

bytes good_input(std::mt19937_64& rng) {
    bytes b;
    const unsigned n = 4 + unsigned(rng() % 16);
    for (unsigned i = 0; i < n; ++i) {
        switch (rng() % 5) {
        case 0:
        case 1: wire_frame(rng, b); break;
        case 2: rx_buffers(rng, b); break;
        case 3: guest_frame(rng, b); break;
        default:
            b.push_back(3);
            b.push_back(uint8_t(rng() % 4));
            break;
        }
    }
    return b;
}

TEST(uplink_fuzz, kept_corpus) {
    EXPECT_GT(run_corpus(ZC_FUZZ_UPLINK_CORPUS, LLVMFuzzerTestOneInput), 0u) << "the kept corpus is empty";
}

// One input: guest A (domain 2) posts RX buffers, then one frame of `len`
// bytes from the wire to guest A's MAC, IPv4 or 802.1Q-tagged (the Ethernet
// type fuzz_uplink.cpp writes for kind bits 3-4 = 0 or 2).
void one_frame_to_guest_a(uint16_t len, bool tagged) {
    bytes b{1, 0, 63, 0, uint8_t(tagged ? 2 << 3 : 0)};
    put16(b, len);
    b.insert(b.end(), len, 0x42); // source 42:42:42:42:42:42, unicast
    LLVMFuzzerTestOneInput(b.data(), b.size());
}

// With MTU 1500 (fuzz_uplink.cpp), an untagged frame from the wire may be
// 1514 bytes and a tagged one 1518; one byte more is dropped and counted.
TEST(uplink_fuzz, oversized_frame_from_wire_is_dropped_and_counted) {
    struct frame_case {
        uint16_t len;
        bool tagged, delivered;
    };
    for (const frame_case c : {frame_case{1514, false, true}, frame_case{1515, false, false},
                               frame_case{1518, true, true}, frame_case{1519, true, false}}) {
        SCOPED_TRACE(std::to_string(c.len) + (c.tagged ? " tagged" : " untagged"));
        const auto before = up_stats();
        one_frame_to_guest_a(c.len, c.tagged);
        const auto& s = up_stats();
        EXPECT_EQ(s.injected - before.injected, 1u);
        EXPECT_EQ(s.oversize - before.oversize, c.delivered ? 0u : 1u);
        EXPECT_EQ(s.to_vif - before.to_vif, c.delivered ? 1u : 0u);
        EXPECT_EQ(s.guest_rx - before.guest_rx, c.delivered ? 1u : 0u);
    }
}

TEST(uplink_fuzz, generated_inputs_keep_every_invariant) {
    std::mt19937_64 rng(20261202);
    const auto before = up_stats();
    const size_t n = generated_count(200);
    for (size_t i = 0; i < n; ++i) {
        bytes b;
        switch (i % 4) {
        case 0:
        case 1: b = good_input(rng); break;
        case 2: b = mutate(rng, good_input(rng)); break;
        default:
            b.resize(rng() % 600);
            for (auto& x : b) x = uint8_t(rng());
            break;
        }
        save(b, i);
        LLVMFuzzerTestOneInput(b.data(), b.size());
    }
    const auto& s = up_stats();
    EXPECT_EQ(s.inputs - before.inputs, n);
    EXPECT_GT(s.injected - before.injected, n) << "too few frames from the wire";
    EXPECT_GT(s.to_vif - before.to_vif, n / 4) << "too few frames from the wire reached a vif";
    EXPECT_GT(s.flood_copies - before.flood_copies, 0u) << "no broadcast was flooded to both guests";
    // Whether a destination's queue reaches its quota depends on how fast
    // its worker drains it (slower under sanitizers): reported, not required.
    std::printf("uplink_fuzz: %llu quota fallbacks\n",
                static_cast<unsigned long long>(s.quota_fallbacks - before.quota_fallbacks));
    EXPECT_GT(s.runts - before.runts, 0u) << "no runt was counted";
    EXPECT_GT(s.oversize - before.oversize, 0u) << "no oversized frame from the wire was counted";
    EXPECT_GT(s.no_dest - before.no_dest, 0u) << "no frame without a destination was counted";
    EXPECT_GT(s.guest_rx - before.guest_rx, 0u) << "the guests received nothing";
    EXPECT_GT(s.gso_segments - before.gso_segments, 0u) << "no GSO frame was segmented";
    EXPECT_GT(s.verified - before.verified, 0u) << "no checksum on the wire was verified";
    EXPECT_GT(s.tx_drops - before.tx_drops, 0u) << "no guest frame to the wire was dropped and counted";
}

} // namespace
