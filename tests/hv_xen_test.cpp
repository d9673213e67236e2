// SPDX-License-Identifier: MIT
// The real-Xen hypervisor port. Most machines running this have no Xen: the
// tests that need /dev/xen skip with a reason; the rest cover what runs
// anywhere (detection, selection, copy-segment pre-validation).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <poll.h>
#include <set>
#include <string>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "hv/hv.hpp"
#include "hv/xen/xen_export.hpp"
#include "hv/xen/xen_port.hpp"

namespace {

using namespace zc::hv;

bool have_xen() { return ::access("/dev/xen/gntdev", F_OK) == 0; }

#define SKIP_WITH_XEN()                                                                   \
    do {                                                                                  \
        if (have_xen()) GTEST_SKIP() << "/dev/xen/gntdev exists: this host runs on Xen";  \
    } while (0)
#define SKIP_WITHOUT_XEN()                                                                \
    do {                                                                                  \
        if (!have_xen()) GTEST_SKIP() << "no /dev/xen/gntdev: needs a Xen host";          \
    } while (0)

// Sets an environment variable for one test and restores it after.
class scoped_env {
public:
    scoped_env(const char* name, const char* value) : _name(name) {
        if (const char* old = std::getenv(name)) _old = old;
        if (value)
            ::setenv(name, value, 1);
        else
            ::unsetenv(name);
    }
    ~scoped_env() {
        if (_old)
            ::setenv(_name.c_str(), _old->c_str(), 1);
        else
            ::unsetenv(_name.c_str());
    }

private:
    std::string _name;
    std::optional<std::string> _old;
};

// Some local memory for the local side of segments.
alignas(4096) unsigned char g_buf[2 * page_size];

copy_segment local_to_gref(uint16_t dst_off, uint16_t len) {
    copy_segment s{};
    s.source.virt = g_buf;
    s.dest.foreign.ref = 8;
    s.dest.foreign.domid = 1;
    s.dest.foreign.offset = dst_off;
    s.len = len;
    s.flags = GNTCOPY_dest_gref;
    s.status = 99; // must be overwritten
    return s;
}

copy_segment gref_to_local(uint16_t src_off, uint16_t len) {
    copy_segment s{};
    s.source.foreign.ref = 9;
    s.source.foreign.domid = 2;
    s.source.foreign.offset = src_off;
    s.dest.virt = g_buf;
    s.len = len;
    s.flags = GNTCOPY_source_gref;
    s.status = 99;
    return s;
}

copy_segment gref_to_gref(uint16_t src_off, uint16_t dst_off, uint16_t len) {
    copy_segment s{};
    s.source.foreign.ref = 9;
    s.source.foreign.domid = 2;
    s.source.foreign.offset = src_off;
    s.dest.foreign.ref = 8;
    s.dest.foreign.domid = 1;
    s.dest.foreign.offset = dst_off;
    s.len = len;
    s.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
    s.status = 99;
    return s;
}

int16_t precheck_one(copy_segment s) {
    uint32_t n = xen::precheck_copy(&s, 1);
    EXPECT_EQ(n, s.status == GNTST_okay ? 1u : 0u);
    return s.status;
}

// ---------------------------------------------------------------------------
// Detection and selection.

TEST(HvXenOpen, FailsWithEnodevAndNamesGntdevWithoutXen) {
    SKIP_WITH_XEN();
    std::string why;
    auto p = xen::open_port(&why);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), -ENODEV);
    EXPECT_NE(why.find("/dev/xen/gntdev"), std::string::npos) << why;
    EXPECT_NE(why.find("ZCNET_HV=emu"), std::string::npos) << why;
}

TEST(HvXenOpen, NullWhyIsAllowed) {
    SKIP_WITH_XEN();
    auto p = xen::open_port(nullptr);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), -ENODEV);
}

TEST(HvOpen, ExplicitXenKindWithoutXen) {
    SKIP_WITH_XEN();
    std::string why;
    auto p = zc::hv::open(kind::xen, &why);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), -ENODEV);
    EXPECT_NE(why.find("/dev/xen/gntdev"), std::string::npos) << why;
}

TEST(HvOpen, EnvXenOverridesDetection) {
    SKIP_WITH_XEN();
    scoped_env env("ZCNET_HV", "xen");
    std::string why;
    auto p = zc::hv::open(&why);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), -ENODEV);
    EXPECT_NE(why.find("/dev/xen/gntdev"), std::string::npos) << why;
}

TEST(HvOpen, EnvRejectsUnknownBackend) {
    for (const char* bad : {"kvm", "XEN", "xen ", "emulated"}) {
        scoped_env env("ZCNET_HV", bad);
        std::string why;
        auto p = zc::hv::open(&why);
        ASSERT_FALSE(p.ok()) << bad;
        EXPECT_EQ(p.error(), -EINVAL) << bad;
        EXPECT_NE(why.find("ZCNET_HV"), std::string::npos) << why;
        EXPECT_NE(why.find(bad), std::string::npos) << why;
    }
}

TEST(HvGntst, EveryCodeHasItsOwnName) {
    const std::pair<int16_t, const char*> codes[] = {
        {GNTST_okay, "GNTST_okay"},
        {GNTST_general_error, "GNTST_general_error"},
        {GNTST_bad_domain, "GNTST_bad_domain"},
        {GNTST_bad_gntref, "GNTST_bad_gntref"},
        {GNTST_bad_handle, "GNTST_bad_handle"},
        {GNTST_bad_virt_addr, "GNTST_bad_virt_addr"},
        {GNTST_bad_dev_addr, "GNTST_bad_dev_addr"},
        {GNTST_no_device_space, "GNTST_no_device_space"},
        {GNTST_permission_denied, "GNTST_permission_denied"},
        {GNTST_bad_page, "GNTST_bad_page"},
        {GNTST_bad_copy_arg, "GNTST_bad_copy_arg"},
        {GNTST_address_too_big, "GNTST_address_too_big"},
        {GNTST_eagain, "GNTST_eagain"},
        {GNTST_no_space, "GNTST_no_space"},
    };
    std::set<std::string> seen;
    for (auto [code, name] : codes) {
        EXPECT_STREQ(gntst_name(code), name);
        seen.insert(gntst_name(code));
    }
    EXPECT_EQ(seen.size(), std::size(codes));
    EXPECT_STREQ(gntst_name(-14), "GNTST_unknown");
    EXPECT_STREQ(gntst_name(1), "GNTST_unknown");
}

// ---------------------------------------------------------------------------
// Copy-segment pre-validation: each rule is shown to pass at its limit and
// to fail one step past it.

TEST(HvXenPrecheck, AllShapesWithAGrefSidePass) {
    EXPECT_EQ(precheck_one(local_to_gref(0, 4096)), GNTST_okay);
    EXPECT_EQ(precheck_one(gref_to_local(0, 4096)), GNTST_okay);
    EXPECT_EQ(precheck_one(gref_to_gref(0, 0, 4096)), GNTST_okay);
    EXPECT_EQ(precheck_one(gref_to_gref(100, 3000, 60)), GNTST_okay);
}

TEST(HvXenPrecheck, NeitherSideAGrefIsRejected) {
    copy_segment s = local_to_gref(0, 64);
    s.dest.virt = g_buf + page_size;
    s.flags = 0;
    EXPECT_EQ(precheck_one(s), GNTST_bad_copy_arg);
}

TEST(HvXenPrecheck, SourceGrefMustNotCrossItsPage) {
    EXPECT_EQ(precheck_one(gref_to_local(4000, 96)), GNTST_okay);
    EXPECT_EQ(precheck_one(gref_to_local(4000, 97)), GNTST_bad_copy_arg);
    EXPECT_EQ(precheck_one(gref_to_gref(4000, 0, 97)), GNTST_bad_copy_arg);
}

TEST(HvXenPrecheck, DestGrefMustNotCrossItsPage) {
    EXPECT_EQ(precheck_one(local_to_gref(4095, 1)), GNTST_okay);
    EXPECT_EQ(precheck_one(local_to_gref(4095, 2)), GNTST_bad_copy_arg);
    EXPECT_EQ(precheck_one(gref_to_gref(0, 4095, 2)), GNTST_bad_copy_arg);
}

TEST(HvXenPrecheck, OffsetPlusLenDoesNotWrapIn16Bits) {
    // 0xFFFF + 1 wraps to 0 in uint16_t arithmetic.
    EXPECT_EQ(precheck_one(local_to_gref(0xFFFF, 1)), GNTST_bad_copy_arg);
    EXPECT_EQ(precheck_one(gref_to_local(0xFFFF, 1)), GNTST_bad_copy_arg);
    EXPECT_EQ(precheck_one(local_to_gref(1, 0xFFFF)), GNTST_bad_copy_arg);
}

TEST(HvXenPrecheck, LocalSideMayCrossPages) {
    // gntdev splits the local side at page boundaries itself.
    copy_segment s = local_to_gref(0, 200);
    s.source.virt = g_buf + page_size - 100;
    EXPECT_EQ(precheck_one(s), GNTST_okay);
    copy_segment d = gref_to_local(0, 4096);
    d.dest.virt = g_buf + 1;
    EXPECT_EQ(precheck_one(d), GNTST_okay);
}

TEST(HvXenPrecheck, NullLocalSideIsRejected) {
    copy_segment s = local_to_gref(0, 64);
    s.source.virt = nullptr;
    EXPECT_EQ(precheck_one(s), GNTST_bad_copy_arg);
    copy_segment d = gref_to_local(0, 64);
    d.dest.virt = nullptr;
    EXPECT_EQ(precheck_one(d), GNTST_bad_copy_arg);
}

TEST(HvXenPrecheck, MixedBatchGetsAStatusPerSegment) {
    copy_segment segs[] = {
        local_to_gref(0, 1500),    // ok
        gref_to_local(4000, 200),  // crosses
        gref_to_gref(0, 0, 64),    // ok
        local_to_gref(3000, 2000), // crosses
        gref_to_local(0, 0),       // ok: empty copy, as gntdev accepts it
    };
    segs[2].status = GNTST_bad_copy_arg; // stale status must be overwritten
    EXPECT_EQ(xen::precheck_copy(segs, 5), 3u);
    EXPECT_EQ(segs[0].status, GNTST_okay);
    EXPECT_EQ(segs[1].status, GNTST_bad_copy_arg);
    EXPECT_EQ(segs[2].status, GNTST_okay);
    EXPECT_EQ(segs[3].status, GNTST_bad_copy_arg);
    EXPECT_EQ(segs[4].status, GNTST_okay);
}

TEST(HvXenPrecheck, EmptyAndNullBatches) {
    EXPECT_EQ(xen::precheck_copy(nullptr, 0), 0u);
    EXPECT_EQ(xen::precheck_copy(nullptr, 3), 0u);
    copy_segment s = local_to_gref(0, 1);
    EXPECT_EQ(xen::precheck_copy(&s, 0), 0u);
    EXPECT_EQ(s.status, 99); // untouched
}

// ---------------------------------------------------------------------------
// copy_batch: what reaches the ioctl, and what the caller sees back. A fake
// stands in for gntdev.

struct fake_gntdev {
    int calls = 0;
    std::vector<copy_segment> seen; // what the last call got
    int rc = 0;                     // what to answer
    int16_t status = GNTST_okay;    // status it writes on success

    static int submit(void* ctx, copy_segment* segs, uint32_t n) noexcept {
        auto* f = static_cast<fake_gntdev*>(ctx);
        f->calls++;
        f->seen.assign(segs, segs + n);
        if (f->rc < 0) {
            // What gntdev leaves behind after -EINVAL: some statuses "okay".
            for (uint32_t i = 0; i < n; i++) segs[i].status = GNTST_okay;
            return f->rc;
        }
        for (uint32_t i = 0; i < n; i++) segs[i].status = int16_t(f->status - int16_t(i));
        return 0;
    }
};

TEST(HvXenCopyBatch, CleanBatchGoesThroughInPlaceInOneCall) {
    fake_gntdev f;
    xen::copy_scratch scratch;
    copy_segment segs[] = {local_to_gref(0, 10), gref_to_local(0, 20), gref_to_gref(0, 0, 30)};
    f.status = -1; // statuses -1, -2, -3: shows which went where
    EXPECT_EQ(xen::copy_batch(segs, 3, scratch, &fake_gntdev::submit, &f), 0);
    EXPECT_EQ(f.calls, 1);
    ASSERT_EQ(f.seen.size(), 3u);
    EXPECT_EQ(scratch.cap, 0u); // no compaction needed
    EXPECT_EQ(segs[0].status, -1);
    EXPECT_EQ(segs[1].status, -2);
    EXPECT_EQ(segs[2].status, -3);
}

TEST(HvXenCopyBatch, RejectedSegmentsAreNotSubmittedAndStatusesLineUp) {
    fake_gntdev f;
    xen::copy_scratch scratch;
    copy_segment segs[] = {
        gref_to_local(4000, 200), // rejected
        local_to_gref(0, 11),     // submitted #0
        gref_to_gref(0, 4095, 2), // rejected
        gref_to_local(0, 22),     // submitted #1
        local_to_gref(0, 33),     // submitted #2
    };
    segs[4].flags = 0; // now local->local: rejected
    f.status = -2;     // -2, -3 for the two survivors
    EXPECT_EQ(xen::copy_batch(segs, 5, scratch, &fake_gntdev::submit, &f), 0);
    EXPECT_EQ(f.calls, 1);
    ASSERT_EQ(f.seen.size(), 2u);
    EXPECT_EQ(f.seen[0].len, 11);
    EXPECT_EQ(f.seen[1].len, 22);
    EXPECT_EQ(segs[0].status, GNTST_bad_copy_arg);
    EXPECT_EQ(segs[1].status, -2);
    EXPECT_EQ(segs[2].status, GNTST_bad_copy_arg);
    EXPECT_EQ(segs[3].status, -3);
    EXPECT_EQ(segs[4].status, GNTST_bad_copy_arg);

    // The scratch buffer is reused, not regrown, for a smaller batch.
    copy_segment* kept = scratch.segs.get();
    copy_segment two[] = {gref_to_local(4000, 200), local_to_gref(0, 5)};
    EXPECT_EQ(xen::copy_batch(two, 2, scratch, &fake_gntdev::submit, &f), 0);
    EXPECT_EQ(scratch.segs.get(), kept);
    EXPECT_EQ(f.seen.size(), 1u);
}

TEST(HvXenCopyBatch, AllRejectedNeverSubmits) {
    fake_gntdev f;
    xen::copy_scratch scratch;
    copy_segment segs[] = {gref_to_local(4000, 200), local_to_gref(4095, 2)};
    EXPECT_EQ(xen::copy_batch(segs, 2, scratch, &fake_gntdev::submit, &f), 0);
    EXPECT_EQ(f.calls, 0);
    EXPECT_EQ(segs[0].status, GNTST_bad_copy_arg);
    EXPECT_EQ(segs[1].status, GNTST_bad_copy_arg);
    EXPECT_EQ(xen::copy_batch(segs, 0, scratch, &fake_gntdev::submit, &f), 0);
    EXPECT_EQ(f.calls, 0);
    EXPECT_EQ(xen::copy_batch(nullptr, 1, scratch, &fake_gntdev::submit, &f), -EINVAL);
}

TEST(HvXenCopyBatch, FailedIoctlLeavesNoFalseOkay) {
    // gntdev may have written GNTST_okay for segments it never copied.
    for (bool with_rejected : {false, true}) {
        fake_gntdev f;
        f.rc = -EFAULT;
        xen::copy_scratch scratch;
        copy_segment segs[] = {local_to_gref(0, 10), gref_to_local(4000, 200), gref_to_local(0, 20)};
        if (!with_rejected) segs[1] = gref_to_local(0, 1);
        EXPECT_EQ(xen::copy_batch(segs, 3, scratch, &fake_gntdev::submit, &f), -EFAULT);
        EXPECT_EQ(f.calls, 1);
        EXPECT_EQ(segs[0].status, GNTST_general_error);
        EXPECT_EQ(segs[1].status, with_rejected ? GNTST_bad_copy_arg : GNTST_general_error);
        EXPECT_EQ(segs[2].status, GNTST_general_error);
    }
}

// ---------------------------------------------------------------------------
// Exportable shares (xen_export.hpp): the parts that run without Xen.

TEST(HvXenExport, PoolMemfdIsExactlyThePagesSealedAndZeroed) {
    int fd = -1;
    void* addr = nullptr;
    EXPECT_EQ(xen::make_pool_memfd(0, &fd, &addr), -EINVAL);
    ASSERT_EQ(xen::make_pool_memfd(3, &fd, &addr), 0);
    struct stat st{};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, off_t(3 * page_size));
    const int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    EXPECT_EQ(::fcntl(fd, F_GET_SEALS) & want, want);
    EXPECT_EQ(::fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE, 0); // udmabuf refuses write-sealed memfds
    EXPECT_EQ(::ftruncate(fd, 0), -1);
    EXPECT_EQ(errno, EPERM);
    for (size_t i = 0; i < 3 * page_size; i++) ASSERT_EQ(static_cast<unsigned char*>(addr)[i], 0) << i;
    static_cast<unsigned char*>(addr)[5] = 9; // ours to write
    ::munmap(addr, 3 * page_size);
    ::close(fd);
}

TEST(HvXenExport, UdmabufOfThePoolOrEnodevWithoutTheDevice) {
    int fd = -1;
    void* addr = nullptr;
    ASSERT_EQ(xen::make_pool_memfd(2, &fd, &addr), 0);
    int d = xen::make_udmabuf(fd, 2 * page_size);
    if (::access("/dev/udmabuf", F_OK) != 0) {
        EXPECT_EQ(d, -ENODEV);
    } else if (d == -EACCES || d == -EPERM) {
        GTEST_SKIP() << "/dev/udmabuf is not ours to open";
    } else {
        ASSERT_GE(d, 0) << std::strerror(-d);
        ::close(d);
        // Not a memfd we sealed against shrinking: udmabuf refuses it.
        int raw = ::memfd_create("raw", MFD_CLOEXEC);
        ASSERT_GE(raw, 0);
        ASSERT_EQ(::ftruncate(raw, off_t(page_size)), 0);
        EXPECT_LT(xen::make_udmabuf(raw, page_size), 0);
        ::close(raw);
    }
    ::munmap(addr, 2 * page_size);
    ::close(fd);
}

// ---------------------------------------------------------------------------
// Real paths: only on a Xen host.

class HvXenReal : public ::testing::Test {
protected:
    void SetUp() override {
        SKIP_WITHOUT_XEN();
        std::string why;
        auto p = xen::open_port(&why);
        ASSERT_TRUE(p.ok()) << why << " (" << std::strerror(-p.error()) << ")";
        _port = std::move(p.value());
    }
    std::unique_ptr<port> _port;
};

TEST_F(HvXenReal, Identity) {
    EXPECT_EQ(_port->which(), kind::xen);
    EXPECT_STREQ(_port->name(), "xen");
    EXPECT_LT(_port->self(), 0x7FF0);
    EXPECT_EQ(_port->xenstore_path(), "");
}

TEST_F(HvXenReal, ShareRejectsBadArguments) {
    auto s = _port->open_gntshr();
    if (!s.ok() && s.error() == -ENODEV) GTEST_SKIP() << "no /dev/xen/gntalloc on this host";
    ASSERT_TRUE(s.ok()) << std::strerror(-s.error());
    EXPECT_EQ((*s)->share(_port->self(), 1, true).error(), -EINVAL);
    EXPECT_EQ((*s)->share(domid_invalid, 1, true).error(), -EINVAL);
    EXPECT_EQ((*s)->share(domid_self, 1, true).error(), -EINVAL);
    domid_t other = _port->self() == 0 ? 1 : 0;
    EXPECT_EQ((*s)->share(other, 0, true).error(), -EINVAL);
    EXPECT_EQ((*s)->counters().shares, 0u);
}

TEST_F(HvXenReal, ShareExportableGivesExactlyThePoolOrSaysWhyNot) {
    auto s = _port->open_gntshr();
    if (!s.ok() && s.error() == -ENODEV) GTEST_SKIP() << "no /dev/xen/gntalloc on this host";
    ASSERT_TRUE(s.ok()) << std::strerror(-s.error());
    domid_t other = _port->self() == 0 ? 1 : 0;
    EXPECT_EQ((*s)->share_exportable(_port->self(), 1, false).error(), -EINVAL);
    EXPECT_EQ((*s)->share_exportable(other, 0, false).error(), -EINVAL);
    EXPECT_EQ((*s)->share_exportable(other, 4097, false).error(), -EINVAL);
    auto p = (*s)->share_exportable(other, 2, false);
    if (!p.ok() && p.error() == -EOPNOTSUPP) {
        // The kernel has no udmabuf or no gntdev dma-buf (Debian 12's guest
        // and dom0 kernels have neither): the pool cannot be exported, and
        // the call says so without leaving a grant behind. Not a skip: on a
        // Xen host this is the answer the lab checks.
        EXPECT_EQ((*s)->counters().shares, 0u);
        std::printf("share_exportable: not supported by this kernel (-EOPNOTSUPP)\n");
        return;
    }
    ASSERT_TRUE(p.ok()) << std::strerror(-p.error());
    auto ex = (*s)->export_fd(*p);
    ASSERT_TRUE(ex.ok());
    struct stat st{};
    ASSERT_EQ(::fstat(ex->fd, &st), 0);
    EXPECT_EQ(st.st_size, off_t(2 * page_size));
    EXPECT_EQ(::ftruncate(ex->fd, 0), -1);
    ::close(ex->fd);
    EXPECT_EQ((*s)->unshare(*p), 0);
}

TEST_F(HvXenReal, MapOfBadGrantFailsWithGeneralErrorPerPage) {
    auto t = _port->open_gnttab();
    ASSERT_TRUE(t.ok()) << std::strerror(-t.error());
    // A domid no domain has this early in a host's life is not guaranteed;
    // the last ordinary one is the best bet.
    domid_t doms[2] = {0x7FEF, 0x7FEF};
    gref_t refs[2] = {0, 1};
    int16_t st[2] = {GNTST_okay, GNTST_okay};
    auto m = (*t)->map(2, doms, refs, false, st);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(st[0], GNTST_general_error);
    EXPECT_EQ(st[1], GNTST_general_error);
    EXPECT_EQ((*t)->map(0, doms, refs, false).error(), -EINVAL);
    mapping bogus{g_buf, 1, false};
    EXPECT_EQ((*t)->unmap(bogus), -EINVAL);
}

TEST_F(HvXenReal, CopyReportsRejectedSegmentsAndSubmitsTheRest) {
    auto t = _port->open_gnttab();
    ASSERT_TRUE(t.ok()) << std::strerror(-t.error());
    copy_segment segs[] = {
        gref_to_local(4000, 200), // rejected here; gntdev would fail the batch
        local_to_gref(0, 64),     // submitted; Xen refuses it (no such grant)
    };
    segs[1].dest.foreign.domid = 0x7FEF;
    EXPECT_EQ((*t)->copy(segs, 2), 0);
    EXPECT_EQ(segs[0].status, GNTST_bad_copy_arg);
    EXPECT_NE(segs[1].status, GNTST_okay);
    EXPECT_NE(segs[1].status, GNTST_bad_copy_arg);
    op_counters c = (*t)->counters();
    EXPECT_EQ(c.copy_batches, 1u);
    EXPECT_EQ(c.copy_segments, 1u);
    EXPECT_EQ(c.copy_errors, 2u);
    EXPECT_EQ(c.copy_bytes, 0u);
}

TEST_F(HvXenReal, CopyWithEveryBatchRejectedNeverReachesXen) {
    auto t = _port->open_gnttab();
    ASSERT_TRUE(t.ok()) << std::strerror(-t.error());
    copy_segment s = local_to_gref(4095, 2);
    EXPECT_EQ((*t)->copy(&s, 1), 0);
    EXPECT_EQ(s.status, GNTST_bad_copy_arg);
    EXPECT_EQ((*t)->counters().copy_batches, 0u);
}

TEST_F(HvXenReal, EventChannelLoopback) {
    auto a = _port->open_evtchn();
    auto b = _port->open_evtchn();
    ASSERT_TRUE(a.ok()) << std::strerror(-a.error());
    ASSERT_TRUE(b.ok()) << std::strerror(-b.error());
    EXPECT_EQ((*a)->pending().error(), -EAGAIN);

    auto local = (*a)->bind_unbound(_port->self());
    ASSERT_TRUE(local.ok()) << std::strerror(-local.error());
    auto remote = (*b)->bind_interdomain(_port->self(), *local);
    ASSERT_TRUE(remote.ok()) << std::strerror(-remote.error());

    ASSERT_EQ((*b)->notify(*remote), 0);
    EXPECT_EQ((*b)->counters().notifies, 1u);
    pollfd pfd{(*a)->fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
    auto got = (*a)->pending();
    ASSERT_TRUE(got.ok()) << std::strerror(-got.error());
    EXPECT_EQ(*got, *local);
    EXPECT_EQ((*a)->pending().error(), -EAGAIN);
    EXPECT_EQ((*a)->unmask(*local), 0);

    EXPECT_EQ((*a)->notify(0x7FFFFFF0u), -EINVAL);
    EXPECT_EQ((*b)->unbind(*remote), 0);
    EXPECT_EQ((*a)->unbind(*local), 0);
}

} // namespace
