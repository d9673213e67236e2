// SPDX-License-Identifier: MIT
// The netfront extensions zc-stackd relies on, against zc-netback:
// tx_submit_granted/tx_reap_granted (TX straight from a page the caller
// granted) and recv_view (RX without the copy); and hv's gntshr::export_fd.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/stat.h>

#include "netback_host.hpp"
#include "emu_host.hpp"
#include "hv/xs.hpp"
#include "link/netfront.hpp"
#include "netback/backend.hpp"
#include "netback/toolstack.hpp"

using namespace zc;

namespace {

struct rig {
    test::emu_host host;
    std::unique_ptr<hv::port> dom0;
    std::unique_ptr<hv::xs> xs0;
    test::served_backend be;
    std::vector<std::unique_ptr<hv::port>> ports;

    ~rig() { be.stop(); } // before the guests' ports go
    rig() {
        dom0 = host.domain(0);
        auto x = hv::xs::open(dom0->xenstore_path());
        xs0 = std::move(*x);
        if (!be.start(*dom0)) return;
    }
    std::unique_ptr<link::netfront> guest(hv::domid_t d) {
        ports.push_back(host.domain(d));
        netback::vif_spec s;
        s.frontend = d;
        std::string why;
        EXPECT_EQ(netback::vif_create(*xs0, s, &why), 0) << why;
        auto nf = link::netfront::connect(*ports.back(), {}, &why);
        EXPECT_TRUE(nf) << why;
        return nf ? std::move(*nf) : nullptr;
    }
};

struct seen {
    std::vector<uint8_t> frame;
    int calls = 0;
};

void on_view(const uint8_t* f, size_t len, void* arg) noexcept {
    auto* s = static_cast<seen*>(arg);
    s->frame.assign(f, f + len);
    s->calls++;
}

} // namespace

TEST(NetfrontGranted, TxFromCallerGrantedPageAndRxInPlace) {
    rig r;
    ASSERT_TRUE(r.be);
    auto a = r.guest(1);
    auto b = r.guest(2);
    ASSERT_TRUE(a && b);
    auto shr = r.ports[0]->open_gntshr();
    ASSERT_TRUE(shr);
    auto pg = (*shr)->share(a->backend_id(), 2, false);
    ASSERT_TRUE(pg);
    uint8_t* p = static_cast<uint8_t*>(pg->addr) + 4096 + 1000; // second page, offset 1000
    std::vector<uint8_t> f(600);
    for (size_t i = 0; i < f.size(); i++) f[i] = uint8_t(i * 7 + 3);
    std::memcpy(f.data(), b->mac().data(), 6);
    std::memcpy(f.data() + 6, a->mac().data(), 6);
    f[12] = 0x88, f[13] = 0xb5;
    std::memcpy(p, f.data(), f.size());

    // Errors first: nothing is posted.
    EXPECT_EQ(a->tx_submit_granted(pg->refs[1], 1000, 10, 1), -EINVAL);     // shorter than Ethernet
    EXPECT_EQ(a->tx_submit_granted(pg->refs[1], 4000, 600, 1), -EMSGSIZE);  // crosses the page
    link::tx_offload gso{};
    gso.gso_size = 1000;
    gso.gso_type = 1;
    EXPECT_EQ(a->tx_submit_granted(pg->refs[1], 1000, 600, 1, 0, &gso), -EINVAL);
    EXPECT_EQ(a->tx_submit_granted(pg->refs[1], 1000, 600, 1, 7), -EINVAL); // no such queue

    ASSERT_EQ(a->tx_submit_granted(pg->refs[1], 1000, f.size(), 0xc00c1e), 0);
    seen s;
    for (int i = 0; i < 500 && s.calls == 0; i++) {
        auto rr = b->recv_view(on_view, &s);
        if (!rr) b->wait(10);
        else EXPECT_EQ(*rr, f.size());
    }
    ASSERT_EQ(s.calls, 1);
    EXPECT_TRUE(s.frame == f);
    link::tx_done done[4];
    uint32_t n = 0;
    for (int i = 0; i < 500 && n == 0; i++) {
        n = a->tx_reap_granted(done, 4);
        if (!n) a->wait(10);
    }
    ASSERT_EQ(n, 1u);
    EXPECT_EQ(done[0].cookie, 0xc00c1eu);
    EXPECT_EQ(done[0].status, 0);
    EXPECT_EQ(a->tx_reap_granted(done, 4), 0u);
    EXPECT_EQ(b->recv_view(nullptr, nullptr).error(), -EINVAL);
    auto va = r.be->dp().vifs();
    uint64_t fb = 0;
    for (auto& v : va) fb += v.stats.fallback_copies;
    EXPECT_EQ(fb, 0u) << "one grant copy, caller's page to the destination";
    EXPECT_EQ((*shr)->unshare(*pg), 0);
}

TEST(HvEmuExport, SharedPagesAreVisibleThroughTheExportedFd) {
    test::emu_host host;
    auto d1 = host.domain(1);
    auto d2 = host.domain(2);
    ASSERT_TRUE(d1 && d2);
    auto shr = d1->open_gntshr();
    ASSERT_TRUE(shr);
    auto pg = (*shr)->share_exportable(2, 3, true);
    ASSERT_TRUE(pg);
    auto ex = (*shr)->export_fd(*pg);
    ASSERT_TRUE(ex);
    EXPECT_EQ(ex->offset, 0u);
    struct stat st{};
    ASSERT_EQ(::fstat(ex->fd, &st), 0);
    EXPECT_EQ(st.st_size, off_t(3 * 4096)); // the share's pages and nothing else
    void* m = ::mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ex->fd, off_t(ex->offset));
    ASSERT_NE(m, MAP_FAILED);
    static_cast<uint8_t*>(pg->addr)[5000] = 0x5a;
    EXPECT_EQ(static_cast<uint8_t*>(m)[5000], 0x5a);
    static_cast<uint8_t*>(m)[100] = 0xa5;
    EXPECT_EQ(static_cast<uint8_t*>(pg->addr)[100], 0xa5);
    ::munmap(m, 3 * 4096);
    ::close(ex->fd);
    hv::shared_pages fake = *pg;
    fake.addr = static_cast<uint8_t*>(pg->addr) + 4096;
    EXPECT_EQ((*shr)->export_fd(fake).error(), -EINVAL);
    EXPECT_EQ((*shr)->unshare(*pg), 0);
    hv::shared_pages gone;
    EXPECT_EQ((*shr)->export_fd(gone).error(), -EINVAL);
}

TEST(NetfrontGranted, HeaderFromOurPagePayloadFromCallersGrant) {
    rig r;
    ASSERT_TRUE(r.be);
    auto a = r.guest(1);
    auto b = r.guest(2);
    ASSERT_TRUE(a && b);
    auto shr = r.ports[0]->open_gntshr();
    auto pg = (*shr)->share(a->backend_id(), 1, false);
    ASSERT_TRUE(pg);
    uint8_t hdr[42];
    for (size_t i = 0; i < sizeof hdr; i++) hdr[i] = uint8_t(0x40 + i);
    std::memcpy(hdr, b->mac().data(), 6);
    std::memcpy(hdr + 6, a->mac().data(), 6);
    hdr[12] = 0x88, hdr[13] = 0xb5;
    uint8_t* pay = static_cast<uint8_t*>(pg->addr) + 2048 + 64;
    for (int i = 0; i < 300; i++) pay[i] = uint8_t(i * 3);
    EXPECT_EQ(a->tx_submit_granted_sg(nullptr, 42, pg->refs[0], 2112, 300, 1), -EINVAL);
    EXPECT_EQ(a->tx_submit_granted_sg(hdr, 10, pg->refs[0], 2112, 300, 1), -EINVAL);
    EXPECT_EQ(a->tx_submit_granted_sg(hdr, 42, pg->refs[0], 2112, 0, 1), -EINVAL);
    EXPECT_EQ(a->tx_submit_granted_sg(hdr, 42, pg->refs[0], 4000, 300, 1), -EMSGSIZE);
    ASSERT_EQ(a->tx_submit_granted_sg(hdr, 42, pg->refs[0], 2112, 300, 77), 0);
    std::memset(hdr, 0, sizeof hdr); // ours again at once: netfront copied it
    seen s;
    for (int i = 0; i < 500 && s.calls == 0; i++)
        if (!b->recv_view(on_view, &s)) b->wait(10);
    ASSERT_EQ(s.calls, 1);
    ASSERT_EQ(s.frame.size(), 342u);
    EXPECT_EQ(s.frame[14], 0x40 + 14);
    EXPECT_EQ(std::memcmp(s.frame.data() + 42, pay, 300), 0);
    link::tx_done done[4];
    uint32_t n = 0;
    for (int i = 0; i < 500 && n == 0; i++)
        if (!(n = a->tx_reap_granted(done, 4))) a->wait(10);
    ASSERT_EQ(n, 1u);
    EXPECT_EQ(done[0].cookie, 77u);
    EXPECT_EQ(done[0].status, 0);
    for (int i = 0; i < 20; i++) a->wait(5); // the header slot's response too
    EXPECT_EQ(a->stats().tx_completed, a->stats().tx_slots);
    EXPECT_EQ((*shr)->unshare(*pg), 0);
}
