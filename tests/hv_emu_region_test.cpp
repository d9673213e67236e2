// SPDX-License-Identifier: MIT
// Memory regions of the emulated hypervisor (stack/hv/emu/layout.hpp):
// exportable shares in memfds of their own, exactly their pages, that
// zc-netback (dom0) grant-copies and maps like any other guest page; freed
// regions are unreachable, reused slots are fresh memory.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <vector>

#include "common/fdpass.hpp"
#include "emu_host.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/emu_port.hpp"
#include "hv/emu/layout.hpp"
#include "hv/emu/proto.hpp"

using namespace zc;
using hv::domid_t;
using hv::gref_t;
using hv::page_size;

namespace {

hv::copy_segment from_gref(domid_t d, gref_t ref, void* to, uint16_t len) {
    hv::copy_segment s{};
    s.source.foreign = {ref, 0, d};
    s.dest.virt = to;
    s.len = len;
    s.flags = GNTCOPY_source_gref;
    return s;
}

class EmuRegion : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(host.ok());
        dom0 = host.domain(0);
        guest = host.domain(1);
        ASSERT_TRUE(dom0 && guest);
        auto t = dom0->open_gnttab();
        auto s = guest->open_gntshr();
        ASSERT_TRUE(t && s);
        tab = std::move(*t);
        shr = std::move(*s);
    }
    // dom0 reads `len` bytes of the guest's grant `ref`: the status.
    int16_t copy_out(gref_t ref, uint8_t* to, uint16_t len) {
        hv::copy_segment s = from_gref(1, ref, to, len);
        EXPECT_EQ(tab->copy(&s, 1), 0);
        return s.status;
    }
    test::emu_host host;
    std::unique_ptr<hv::port> dom0, guest;
    std::unique_ptr<hv::gnttab> tab;
    std::unique_ptr<hv::gntshr> shr;
};

} // namespace

TEST_F(EmuRegion, ExportedShareIsExactlyItsPagesAndCopiesLikeAnyGrant) {
    auto p = shr->share_exportable(0, 3, false);
    ASSERT_TRUE(p) << std::strerror(-p.error());
    auto ex = shr->export_fd(*p);
    ASSERT_TRUE(ex);
    EXPECT_EQ(ex->offset, 0u);
    struct stat st{};
    ASSERT_EQ(::fstat(ex->fd, &st), 0);
    EXPECT_EQ(st.st_size, off_t(3 * page_size));
    const int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    EXPECT_EQ(::fcntl(ex->fd, F_GET_SEALS) & want, want);
    EXPECT_EQ(::ftruncate(ex->fd, 0), -1);
    // What the exported fd shows is the share's memory.
    auto* app = static_cast<uint8_t*>(::mmap(nullptr, 3 * page_size, PROT_READ | PROT_WRITE, MAP_SHARED, ex->fd, 0));
    ASSERT_NE(app, MAP_FAILED);
    for (size_t i = 0; i < 3 * page_size; i++) ASSERT_EQ(app[i], 0) << i; // a fresh region is zeroed
    std::memset(app + page_size, 0x3C, page_size);
    EXPECT_EQ(static_cast<uint8_t*>(p->addr)[page_size + 17], 0x3C);
    // dom0 copies from it and maps it, through the grant checks.
    std::vector<uint8_t> buf(page_size, 0);
    EXPECT_EQ(copy_out(p->refs[1], buf.data(), uint16_t(page_size)), GNTST_okay);
    EXPECT_EQ(buf[0], 0x3C);
    EXPECT_EQ(buf[page_size - 1], 0x3C);
    domid_t doms[3] = {1, 1, 1};
    auto m = tab->map(3, doms, p->refs.data(), false);
    ASSERT_TRUE(m) << std::strerror(-m.error());
    EXPECT_EQ(static_cast<uint8_t*>(m->addr)[page_size + 5], 0x3C);
    EXPECT_EQ(static_cast<uint8_t*>(m->addr)[5], 0);
    EXPECT_EQ(tab->unmap(*m), 0);
    ::munmap(app, 3 * page_size);
    ::close(ex->fd);
    EXPECT_EQ(shr->unshare(*p), 0);
}

TEST_F(EmuRegion, FreedRegionsAreUnreachableAndReusedSlotsAreFreshMemory) {
    auto a = shr->share_exportable(0, 1, false);
    ASSERT_TRUE(a);
    auto ea = shr->export_fd(*a);
    ASSERT_TRUE(ea);
    std::memset(a->addr, 0xAA, page_size);
    uint8_t b0 = 0;
    EXPECT_EQ(copy_out(a->refs[0], &b0, 1), GNTST_okay); // dom0 now maps this region
    EXPECT_EQ(b0, 0xAA);
    ASSERT_EQ(shr->unshare(*a), 0);

    // The same slot again: a new memfd. dom0 sees the new pages, and the
    // old fd (an application that kept it) reaches only the old ones.
    auto b = shr->share_exportable(0, 1, false);
    ASSERT_TRUE(b);
    std::memset(b->addr, 0xBB, page_size);
    auto* old = static_cast<uint8_t*>(::mmap(nullptr, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, ea->fd, 0));
    ASSERT_NE(old, MAP_FAILED);
    EXPECT_EQ(old[0], 0xAA);
    std::memset(old, 0x11, page_size);
    EXPECT_EQ(copy_out(b->refs[0], &b0, 1), GNTST_okay);
    EXPECT_EQ(b0, 0xBB);
    ::munmap(old, page_size);
    ::close(ea->fd);

    // A grant that names a frame no region populates is GNTST_bad_page:
    // past the region's pages, or in a free region's window.
    auto* cli = hv::emu::client_of(*guest);
    ASSERT_NE(cli, nullptr);
    grant_entry_v1_t& e = cli->self_view().gnttab[b->refs[0]];
    const uint32_t frame = e.frame;
    ASSERT_GE(frame, cli->self_view().mem_pages);
    __atomic_store_n(&e.frame, frame + 1, __ATOMIC_RELAXED);
    EXPECT_EQ(copy_out(b->refs[0], &b0, 1), GNTST_bad_page);
    __atomic_store_n(&e.frame, frame + 10 * hv::emu::region_max_pages, __ATOMIC_RELAXED);
    EXPECT_EQ(copy_out(b->refs[0], &b0, 1), GNTST_bad_page);
    __atomic_store_n(&e.frame, cli->self_view().mem_pages + hv::emu::region_slots * hv::emu::region_max_pages,
                     __ATOMIC_RELAXED);
    EXPECT_EQ(copy_out(b->refs[0], &b0, 1), GNTST_bad_page);
    __atomic_store_n(&e.frame, frame, __ATOMIC_RELAXED);
    EXPECT_EQ(copy_out(b->refs[0], &b0, 1), GNTST_okay);
    EXPECT_EQ(shr->unshare(*b), 0);
}

TEST_F(EmuRegion, ErrorsAndLimits) {
    EXPECT_EQ(shr->share_exportable(0, 0, false).error(), -EINVAL);
    EXPECT_EQ(shr->share_exportable(0, hv::emu::region_max_pages + 1, false).error(), -EINVAL);
    EXPECT_EQ(shr->share_exportable(1, 1, false).error(), -EINVAL); // ourselves
    // A share made with share() has no fd of its own.
    auto plain = shr->share(0, 1, false);
    ASSERT_TRUE(plain);
    EXPECT_EQ(shr->export_fd(*plain).error(), -EINVAL);
    EXPECT_EQ(shr->unshare(*plain), 0);
    // Regions hold at most the base memory's pages (16384 by default).
    std::vector<hv::shared_pages> big;
    for (int i = 0; i < 4; i++) {
        auto p = shr->share_exportable(0, hv::emu::region_max_pages, false);
        ASSERT_TRUE(p) << i << ": " << std::strerror(-p.error());
        big.push_back(std::move(*p));
    }
    EXPECT_EQ(shr->share_exportable(0, 1, false).error(), -ENOMEM);
    for (auto& p : big) EXPECT_EQ(shr->unshare(p), 0);
    // And there are region_slots of them.
    std::vector<hv::shared_pages> small;
    for (uint32_t i = 0; i < hv::emu::region_slots; i++) {
        auto p = shr->share_exportable(0, 1, false);
        ASSERT_TRUE(p) << i;
        small.push_back(std::move(*p));
    }
    EXPECT_EQ(shr->share_exportable(0, 1, false).error(), -ENOSPC);
    for (auto& p : small) EXPECT_EQ(shr->unshare(p), 0);
    auto again = shr->share_exportable(0, 1, false);
    ASSERT_TRUE(again);
    EXPECT_EQ(shr->unshare(*again), 0);
}

// The broker's region ops: a domain's own regions only, or any domain's for
// a privileged one (as get_domain's memory); nothing before hello.
TEST_F(EmuRegion, OnlyItsDomainOrAPrivilegedOneGetsARegion) {
    auto p = shr->share_exportable(0, 2, false); // the guest's region 0
    ASSERT_TRUE(p);
    namespace pr = hv::emu::proto;
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, host.sock().c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    auto ask = [&](pr::request r, int* nfds) {
        r.magic = pr::magic;
        EXPECT_EQ(fdpass::send(fd, &r, sizeof r, nullptr, 0), long(sizeof r));
        char buf[pr::max_reply];
        int fds[pr::max_fds];
        *nfds = pr::max_fds;
        long n = fdpass::recv(fd, buf, sizeof buf, fds, nfds);
        for (int i = 0; i < *nfds; ++i) ::close(fds[i]);
        pr::reply_header h{};
        if (n < long(sizeof h)) return -9999;
        std::memcpy(&h, buf, sizeof h);
        return h.rc;
    };
    int nfds = -1;
    EXPECT_EQ(ask(pr::req(pr::op::region_get, 1, 0, 0, 0), &nfds), -ENOTCONN);
    EXPECT_EQ(nfds, 0);
    // Become domain 3, unprivileged.
    pr::request hello = pr::req(pr::op::hello, 3, 0, 0, pr::version);
    ASSERT_TRUE(pr::parse_token_hex(host.admin_token(), hello.token));
    ASSERT_EQ(ask(hello, &nfds), 0);
    EXPECT_EQ(ask(pr::req(pr::op::region_get, 1, 0, 0, 0), &nfds), -EPERM);
    EXPECT_EQ(nfds, 0) << "no descriptor of domain 1's region leaves the broker";
    EXPECT_EQ(ask(pr::req(pr::op::region_get, 3, 0, 0, 0), &nfds), -ENOENT);
    EXPECT_EQ(ask(pr::req(pr::op::region_get, 3, hv::emu::region_slots, 0, 0), &nfds), -ENOENT);
    EXPECT_EQ(ask(pr::req(pr::op::region_new, 0, 0, 0, 0), &nfds), -EINVAL);
    EXPECT_EQ(ask(pr::req(pr::op::region_new, hv::emu::region_max_pages + 1, 0, 0, 0), &nfds), -EINVAL);
    EXPECT_EQ(ask(pr::req(pr::op::region_free, 0, 0, 0, 0), &nfds), -EINVAL);
    EXPECT_EQ(ask(pr::req(pr::op::region_free, hv::emu::region_slots, 0, 0, 0), &nfds), -EINVAL);
    // Its own region: populated, then fetched with its generation.
    EXPECT_EQ(ask(pr::req(pr::op::region_new, 1, 0, 0, 0), &nfds), 0);
    EXPECT_EQ(nfds, 1);
    EXPECT_EQ(ask(pr::req(pr::op::region_get, 3, 0, 0, 0), &nfds), 0);
    EXPECT_EQ(nfds, 1);
    ::close(fd); // domain 3 goes away with its connection
    // dom0 (privileged) reaches domain 1's region through its grants.
    uint8_t b = 1;
    EXPECT_EQ(copy_out(p->refs[0], &b, 1), GNTST_okay);
    EXPECT_EQ(b, 0);
    EXPECT_EQ(shr->unshare(*p), 0);
}
