// SPDX-License-Identifier: MIT
// zc-vmbench's report: the table's rows as they complete, live progress,
// the summaries after the table (ratios to the baselines of the same run,
// medians over --repeat passes) and the JSON/CSV/PNG outputs.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "hosts.hpp"

namespace zc::vmbench {

// Live progress on a terminal: one line on stderr, rewritten before each
// measurement and erased before the row it announces is printed. Nothing when
// stderr is not a terminal (logs get the rows, each printed as it completes).
struct progress {
    bool tty = ::isatty(2) == 1;
    uint32_t done = 0, total = 0;
    void step(const std::string& what, double seconds) {
        ++done;
        if (!tty) return;
        std::fprintf(stderr, "\r\033[K[%u/%u] %s (%.1f s)...", done, total, what.c_str(), seconds);
        std::fflush(stderr);
    }
    void clear() {
        if (!tty) return;
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    }
};

// One pass over every mode: its rows, and the baselines of this pass.
struct pass {
    std::vector<row> rows;
    std::map<size_t, row> mc, kern;
    std::vector<rr_row> rr;
};

// One row of the table, with its ratios to the memcpy and kernel baselines
// of the same frame size (either may be null).
void print_row(const row& r, const row* mc, const row* kern);
void print_rr(const rr_row& r);
// After the table: the zc rows next to every baseline of the same run, the
// ratios the README and the closing notes quote.
void print_summary(const std::vector<row>& rows, std::map<size_t, row>& mc, std::map<size_t, row>& kern);

double median(std::vector<double> v);
// --repeat: every row (and baseline) as the median over the passes.
pass median_pass(const std::vector<pass>& passes);
// --repeat: the zc rows with their spread, and each ratio taken within a
// pass (the baselines ran minutes apart otherwise), then its median and
// min-max over the passes.
void print_repeat_summary(const std::vector<pass>& passes);

// The rows of `agg` to o.json and o.csv, and the plot to o.png (gnuplot).
void write_outputs(const run_opts& o, pass& agg);

} // namespace zc::vmbench
