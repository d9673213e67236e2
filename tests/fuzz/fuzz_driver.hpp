// SPDX-License-Identifier: MIT
// What the deterministic fuzz drivers share (fuzz_netback_driver.cpp,
// fuzz_uplink_driver.cpp): running a kept corpus through the target,
// mutating generated inputs, how many to generate, and saving them as a
// seed corpus for the libFuzzer binary.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace zc::fuzz_driver {

using bytes = std::vector<uint8_t>;

// Every file of `dir` through `target`; how many there were.
inline size_t run_corpus(const char* dir, int (*target)(const uint8_t*, size_t)) {
    DIR* d = ::opendir(dir);
    EXPECT_NE(d, nullptr) << dir;
    if (!d) return 0;
    size_t n = 0;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(std::string(dir) + "/" + e->d_name, std::ios::binary);
        bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        target(b.data(), b.size());
        ++n;
    }
    ::closedir(d);
    return n;
}

// A few byte flips, random bytes, saturations or a cut.
inline bytes mutate(std::mt19937_64& rng, bytes b) {
    const unsigned n = 1 + unsigned(rng() % 6);
    for (unsigned i = 0; i < n && !b.empty(); ++i) {
        const size_t at = rng() % b.size();
        switch (rng() % 4) {
        case 0: b[at] ^= uint8_t(1u << (rng() % 8)); break;
        case 1: b[at] = uint8_t(rng()); break;
        case 2: b[at] = (rng() & 1) ? 0xff : 0; break;
        default: b.resize(at); break;
        }
    }
    return b;
}

// ZCNET_FUZZ_INPUTS=N, else `dflt`.
inline size_t generated_count(size_t dflt) {
    if (const char* e = std::getenv("ZCNET_FUZZ_INPUTS")) return std::strtoull(e, nullptr, 10);
    return dflt;
}

// ZCNET_FUZZ_SEED_DIR=DIR also writes the generated inputs there (a seed
// corpus for the libFuzzer binary).
inline void save(const bytes& b, size_t i) {
    static const char* dir = std::getenv("ZCNET_FUZZ_SEED_DIR");
    if (!dir) return;
    std::string p = std::string(dir) + "/gen-" + std::to_string(i);
    if (FILE* f = std::fopen(p.c_str(), "wb")) {
        std::fwrite(b.data(), 1, b.size(), f);
        std::fclose(f);
    }
}

} // namespace zc::fuzz_driver
