// SPDX-License-Identifier: MIT
// The emulated host the grant-copy micro-benchmarks share (bench_hv,
// bench_netback): dom0 as the copier, a source guest granting `pages` pages
// read-only (filled with 0x5a) and a destination guest granting `pages`
// writable pages, all in this process (hv/emu/host.hpp).
#pragma once

#include <cstring>
#include <memory>
#include <string>

#include "hv/emu/host.hpp"
#include "hv/hv.hpp"

namespace zc::bench {

struct copy_host {
    std::unique_ptr<hv::emu::host> emu;
    std::unique_ptr<hv::port> dom0, src, dst;
    std::unique_ptr<hv::gntshr> src_sh, dst_sh;
    std::unique_ptr<hv::gnttab> gt;
    hv::shared_pages src_pages, dst_pages;
    std::string error; // why ok() is false

    copy_host(hv::domid_t src_dom, hv::domid_t dst_dom, uint32_t pages) {
        auto h = hv::emu::host::create("bench", &error);
        if (!h) return;
        emu = std::move(*h);
        auto open = [this](hv::domid_t d) -> std::unique_ptr<hv::port> {
            auto p = emu->domain(d, 0, &error);
            return p ? std::move(*p) : nullptr;
        };
        dom0 = open(0);
        src = open(src_dom);
        dst = open(dst_dom);
        if (!dom0 || !src || !dst) return;
        auto s1 = src->open_gntshr();
        auto s2 = dst->open_gntshr();
        auto g = dom0->open_gnttab();
        if (!s1 || !s2 || !g) {
            error = "gntshr/gnttab open";
            return;
        }
        src_sh = std::move(*s1);
        dst_sh = std::move(*s2);
        gt = std::move(*g);
        auto p1 = src_sh->share(0, pages, false);
        auto p2 = dst_sh->share(0, pages, true);
        if (!p1 || !p2) {
            error = "share";
            return;
        }
        src_pages = std::move(*p1);
        dst_pages = std::move(*p2);
        std::memset(src_pages.addr, 0x5a, size_t(pages) * hv::page_size);
    }
    bool ok() const { return gt && src_pages.addr && dst_pages.addr; }
    ~copy_host() {
        gt.reset();
        if (src_sh && src_pages.addr) src_sh->unshare(src_pages);
        if (dst_sh && dst_pages.addr) dst_sh->unshare(dst_pages);
        src_sh.reset();
        dst_sh.reset();
        dom0.reset();
        src.reset();
        dst.reset();
        emu.reset();
    }
};

} // namespace zc::bench
