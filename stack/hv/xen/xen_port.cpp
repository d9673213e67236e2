// SPDX-License-Identifier: MIT
// hv::port on a real Xen host. See xen_port.hpp for the threading contract.
#include "hv/xen/xen_port.hpp"

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>
#include <unordered_map>

extern "C" {
#include <xenevtchn.h>
#include <xenstore.h>
#include <xentoollog.h>
}

#include "common/check.hpp"
#include "common/log.hpp"
#include "hv/xen/xen_export.hpp"

// Grant copy through libxengnttab on Linux: what we found and why copy()
// pre-validates.
//
// tools/libs/gnttab/linux.c (xen-project/xen), osdep_gnttab_grant_copy():
// the segment array is handed to the kernel as is (the library asserts at
// build time that xengnttab_grant_copy_segment_t has the layout of gntdev's
// ioctl_gntdev_grant_copy_segment) in ONE IOCTL_GNTDEV_GRANT_COPY; a failing
// ioctl becomes -1/errno, with no per-segment handling.
//
// drivers/xen/gntdev.c (torvalds/linux), gntdev_ioctl_grant_copy() and
// gntdev_grant_copy_seg(): segments are walked in order. A segment with no
// gref side, or whose gref side has offset + len > XEN_PAGE_SIZE, makes the
// whole ioctl return -EINVAL at that point; an unreadable local pointer
// (get_user_pages failing) does the same with -EFAULT. Before that point,
// each accepted segment got GNTST_okay written to its status *when it was
// queued*, not when it was copied; ops go to Xen in batches of 16
// (GNTDEV_COPY_BATCH, local sides split at page boundaries), and the queued
// but unflushed batch is dropped on error. So after a -EINVAL/-EFAULT:
//   - earlier segments in flushed batches were copied, statuses right;
//   - earlier segments in the dropped batch say GNTST_okay but were NOT
//     copied;
//   - the offending segment and all later ones keep whatever status the
//     caller left there.
// A GNTST_okay status is therefore a lie after a failed ioctl, and one bad
// segment costs every later one. hv::gnttab promises a status per segment,
// so copy() rejects those segments itself with GNTST_bad_copy_arg (what Xen
// itself answers for a page-crossing gref side), submits the rest, and
// after any failed ioctl marks every submitted segment GNTST_general_error
// (some may in fact have been copied: a grant copy is safe to repeat, a
// false "okay" is not).

namespace zc::hv::xen {

namespace {

constexpr const char* tag = "hv.xen";

int neg_errno() noexcept { return errno > 0 ? -errno : -EIO; }

// The libraries log through this instead of their default stderr logger:
// every failure they log also comes back to us as errno and our caller
// decides whether it is worth a line; some (a map of a bad gref) are
// triggered by peers, so they must not reach stderr unthrottled.
log::ratelimit g_lib_log_rl{10, 1};

__attribute__((format(printf, 5, 0))) void lib_vmessage(xentoollog_logger*, xentoollog_level lvl,
                                                        int errnoval, const char* context,
                                                        const char* format, va_list al) {
    if (lvl < XTL_WARN || !g_lib_log_rl.allow()) return;
    char buf[256];
    std::vsnprintf(buf, sizeof(buf), format, al);
    if (errnoval >= 0)
        ZC_LOG(debug, tag, "%s: %s: %s", context ? context : "xen", buf, std::strerror(errnoval));
    else
        ZC_LOG(debug, tag, "%s: %s", context ? context : "xen", buf);
}

void lib_destroy(xentoollog_logger*) {}

xentoollog_logger g_lib_logger = {lib_vmessage, nullptr, lib_destroy};

bool ordinary_domid(unsigned long d) noexcept { return d < DOMID_FIRST_RESERVED; }

// ---------------------------------------------------------------------------
class xen_gntshr final : public gntshr {
public:
    xen_gntshr(xengntshr_handle* h, domid_t self) noexcept : _h(h), _self(self) {}
    ~xen_gntshr() override {
        for (auto& [addr, x] : _exp) end_export(x);
        if (_gt) xengnttab_close(_gt);
        xengntshr_close(_h);
    }

    result<shared_pages> share(domid_t peer, uint32_t count, bool writable) noexcept override {
        // libxengntshr takes an int count.
        if (count == 0 || count > uint32_t(INT_MAX)) return err(-EINVAL);
        if (peer == _self || !ordinary_domid(peer)) return err(-EINVAL);
        shared_pages p;
        p.refs.resize(count);
        // gntalloc allocates the pages zeroed, as the interface promises.
        void* addr = xengntshr_share_pages(_h, peer, int(count), p.refs.data(), writable ? 1 : 0);
        if (!addr) return err(neg_errno());
        p.addr = addr;
        p.count = count;
        p.peer = peer;
        p.writable = writable;
        _c.shares += count;
        return p;
    }

    // xen_export.hpp: a sealed memfd, a udmabuf of it, gntdev's dma-buf
    // import for the grants.
    result<shared_pages> share_exportable(domid_t peer, uint32_t count, bool writable) noexcept override {
        if (count == 0 || count > 4096) return err(-EINVAL);
        if (peer == _self || !ordinary_domid(peer)) return err(-EINVAL);
        if (!_gt && !(_gt = xengnttab_open(&g_lib_logger, 0))) return err(neg_errno());
        exported x;
        x.count = count;
        if (int e = make_pool_memfd(count, &x.memfd, &x.addr); e < 0) return err(e);
        shared_pages p;
        p.refs.resize(count);
        int e = make_udmabuf(x.memfd, size_t(count) * page_size);
        if (e >= 0) {
            x.dmabuf = e;
            e = xengnttab_dmabuf_imp_to_refs(_gt, peer, uint32_t(x.dmabuf), count, p.refs.data()) == 0
                    ? 0
                    : neg_errno();
            if (e < 0) {
                ::close(x.dmabuf);
                x.dmabuf = -1;
            }
        }
        if (e < 0) {
            end_export(x);
            return err(e == -ENOTTY || e == -ENODEV ? -EOPNOTSUPP : e);
        }
        try {
            _exp.emplace(x.addr, x);
        } catch (...) {
            end_export(x);
            return err(-ENOMEM);
        }
        p.addr = x.addr;
        p.count = count;
        p.peer = peer;
        p.writable = writable;
        _c.shares += count;
        return p;
    }

    result<exported_fd> export_fd(const shared_pages& p) noexcept override {
        auto it = _exp.find(p.addr);
        if (it == _exp.end() || it->second.count != p.count) return err(-EINVAL);
        int fd = ::fcntl(it->second.memfd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) return err(neg_errno());
        return exported_fd{fd, 0};
    }

    int unshare(shared_pages& p) noexcept override {
        if (auto it = _exp.find(p.addr); it != _exp.end()) {
            if (it->second.count != p.count) return -EINVAL;
            // gntdev ends the grants; one the peer still uses stays until
            // it lets go (gnttab_end_foreign_access), as with gntalloc.
            end_export(it->second);
            _exp.erase(it);
            _c.unshares += p.count;
            p = shared_pages{};
            return 0;
        }
        if (!p.addr || p.count == 0) return -EINVAL;
        // Only our mapping goes away here; gntalloc ends the grant itself
        // once the peer has unmapped, so -EBUSY never comes back on Xen.
        if (xengntshr_unshare(_h, p.addr, p.count) != 0) return neg_errno();
        _c.unshares += p.count;
        p = shared_pages{};
        return 0;
    }

    op_counters counters() const noexcept override { return _c; }

private:
    struct exported {
        int memfd = -1, dmabuf = -1;
        void* addr = nullptr;
        uint32_t count = 0;
    };
    void end_export(exported& x) noexcept {
        if (x.dmabuf >= 0) {
            (void)xengnttab_dmabuf_imp_release(_gt, uint32_t(x.dmabuf));
            ::close(x.dmabuf);
        }
        if (x.addr) ::munmap(x.addr, size_t(x.count) * page_size);
        if (x.memfd >= 0) ::close(x.memfd);
        x = exported{};
    }

    xengntshr_handle* _h;
    xengnttab_handle* _gt = nullptr; // gntdev, for dma-buf import (share_exportable)
    domid_t _self;
    op_counters _c;
    std::unordered_map<void*, exported> _exp; // share_exportable's, by address
};

// ---------------------------------------------------------------------------
class xen_gnttab final : public gnttab {
public:
    explicit xen_gnttab(xengnttab_handle* h) noexcept : _h(h) {}
    ~xen_gnttab() override { xengnttab_close(_h); }

    result<mapping> map(uint32_t count, const domid_t* doms, const gref_t* refs, bool writable,
                        int16_t* status) noexcept override {
        // gntdev reports only "the batch failed", never which grant or why.
        auto fail = [&](int e) {
            if (status)
                for (uint32_t i = 0; i < count; i++) status[i] = GNTST_general_error;
            return err(e);
        };
        if (count == 0 || !doms || !refs) return fail(-EINVAL);
        // The library wants 32-bit domids, one per page.
        std::unique_ptr<uint32_t[]> domids(new (std::nothrow) uint32_t[count]);
        if (!domids) return fail(-ENOMEM);
        for (uint32_t i = 0; i < count; i++) domids[i] = doms[i];
        // The library only reads refs (it copies them into the ioctl).
        // Note: it retries the mmap forever, 1 ms apart, while Xen says a
        // granted page is paged out (EAGAIN), so this call can block.
        void* addr = xengnttab_map_grant_refs(_h, count, domids.get(), const_cast<uint32_t*>(refs),
                                              PROT_READ | (writable ? PROT_WRITE : 0));
        if (!addr) return fail(neg_errno());
        if (status)
            for (uint32_t i = 0; i < count; i++) status[i] = GNTST_okay;
        _c.maps += count;
        return mapping{addr, count, writable};
    }

    int unmap(mapping& m) noexcept override {
        // gntdev checks that the address starts a mapping of this fd with
        // exactly this many pages (-EINVAL otherwise), so a foreign or stale
        // `m` is refused by the kernel, not by bookkeeping here.
        if (!m.addr || m.count == 0) return -EINVAL;
        if (xengnttab_unmap(_h, m.addr, m.count) != 0) return neg_errno();
        _c.unmaps += m.count;
        m = mapping{};
        return 0;
    }

    int copy(copy_segment* segs, uint32_t count) noexcept override {
        if (!segs) return count == 0 ? 0 : -EINVAL;
        int rc = copy_batch(segs, count, _scratch, &xen_gnttab::submit, this);
        for (uint32_t i = 0; i < count; i++) {
            if (segs[i].status == GNTST_okay)
                _c.copy_bytes += segs[i].len;
            else
                _c.copy_errors++;
        }
        return rc;
    }

    op_counters counters() const noexcept override { return _c; }

private:
    static int submit(void* ctx, copy_segment* s, uint32_t n) noexcept {
        auto* self = static_cast<xen_gnttab*>(ctx);
        self->_c.copy_batches++;
        self->_c.copy_segments += n;
        return xengnttab_grant_copy(self->_h, n, s) == 0 ? 0 : neg_errno();
    }

    xengnttab_handle* _h;
    op_counters _c;
    // Kept across calls so that a batch with rejected segments does not
    // allocate every time.
    copy_scratch _scratch;
};

// ---------------------------------------------------------------------------
// The Linux evtchn driver answers ENOTCONN for a port this fd has not bound;
// the interface says -EINVAL.
int evtchn_errno() noexcept {
    int e = neg_errno();
    return e == -ENOTCONN ? -EINVAL : e;
}

class xen_evtchn final : public evtchn {
public:
    xen_evtchn(xenevtchn_handle* h, int fd) noexcept : _h(h), _fd(fd) {}
    ~xen_evtchn() override { xenevtchn_close(_h); } // unbinds every port

    int fd() const noexcept override { return _fd; }

    result<evtchn_port_t> bind_unbound(domid_t remote) noexcept override {
        xenevtchn_port_or_error_t p = xenevtchn_bind_unbound_port(_h, remote);
        if (p < 0) return err(neg_errno());
        return evtchn_port_t(p);
    }

    result<evtchn_port_t> bind_interdomain(domid_t remote, evtchn_port_t remote_port) noexcept override {
        xenevtchn_port_or_error_t p = xenevtchn_bind_interdomain(_h, remote, remote_port);
        if (p < 0) return err(neg_errno());
        return evtchn_port_t(p);
    }

    int unbind(evtchn_port_t port) noexcept override {
        return xenevtchn_unbind(_h, port) == 0 ? 0 : evtchn_errno();
    }

    int notify(evtchn_port_t port) noexcept override {
        if (xenevtchn_notify(_h, port) != 0) return evtchn_errno();
        _c.notifies++;
        return 0;
    }

    result<evtchn_port_t> pending() noexcept override {
        // xenevtchn_pending() is a read() that blocks when nothing is
        // pending; look first. The fd is also O_NONBLOCK (see open_evtchn)
        // so that a fork sharing the fd cannot make the read block after
        // poll said yes.
        pollfd pfd{_fd, POLLIN, 0};
        int r = ::poll(&pfd, 1, 0);
        if (r < 0) return err(errno == EINTR ? -EAGAIN : neg_errno());
        if (r == 0 || !(pfd.revents & POLLIN)) return err(-EAGAIN);
        xenevtchn_port_or_error_t p = xenevtchn_pending(_h);
        if (p < 0) return err(neg_errno());
        return evtchn_port_t(p);
    }

    int unmask(evtchn_port_t port) noexcept override {
        return xenevtchn_unmask(_h, port) == 0 ? 0 : evtchn_errno();
    }

    op_counters counters() const noexcept override { return _c; }

private:
    xenevtchn_handle* _h;
    int _fd;
    op_counters _c;
};

// ---------------------------------------------------------------------------
class xen_port final : public port {
public:
    explicit xen_port(domid_t self) noexcept : _self(self) {}

    kind which() const noexcept override { return kind::xen; }
    const char* name() const noexcept override { return "xen"; }
    domid_t self() const noexcept override { return _self; }
    std::string xenstore_path() const override { return {}; }

    result<std::unique_ptr<gntshr>> open_gntshr() noexcept override {
        xengntshr_handle* h = xengntshr_open(&g_lib_logger, 0);
        if (!h) return err(open_errno("/dev/xen/gntalloc"));
        auto* g = new (std::nothrow) xen_gntshr(h, _self);
        if (!g) {
            xengntshr_close(h);
            return err(-ENOMEM);
        }
        return std::unique_ptr<gntshr>(g);
    }

    result<std::unique_ptr<gnttab>> open_gnttab() noexcept override {
        xengnttab_handle* h = xengnttab_open(&g_lib_logger, 0);
        if (!h) return err(open_errno("/dev/xen/gntdev"));
        auto* g = new (std::nothrow) xen_gnttab(h);
        if (!g) {
            xengnttab_close(h);
            return err(-ENOMEM);
        }
        return std::unique_ptr<gnttab>(g);
    }

    result<std::unique_ptr<evtchn>> open_evtchn() noexcept override {
        xenevtchn_handle* h = xenevtchn_open(&g_lib_logger, 0);
        if (!h) return err(open_errno("/dev/xen/evtchn"));
        int fd = xenevtchn_fd(h);
        int fl = ::fcntl(fd, F_GETFL);
        if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            int e = neg_errno();
            xenevtchn_close(h);
            return err(e);
        }
        auto* x = new (std::nothrow) xen_evtchn(h, fd);
        if (!x) {
            xenevtchn_close(h);
            return err(-ENOMEM);
        }
        return std::unique_ptr<evtchn>(x);
    }

private:
    // A missing device node means this host cannot do it at all (no
    // gntalloc module, say): -ENODEV, as from open_port.
    static int open_errno(const char* dev) noexcept {
        int e = neg_errno();
        ZC_LOG(warn, tag, "cannot open %s: %s", dev, std::strerror(-e));
        return e == -ENOENT ? -ENODEV : e;
    }

    domid_t _self;
};

// Our domid: xenstore's relative "domid" (the toolstack writes it under
// /local/domain/<id>); dom0 on an old toolstack may lack it, but then it is
// the control domain.
int read_self_domid(domid_t* out, std::string* detail) noexcept {
    if (xs_handle* xs = xs_open(0)) {
        unsigned int len = 0;
        char* v = static_cast<char*>(xs_read(xs, XBT_NULL, "domid", &len));
        int xs_err = v ? 0 : errno;
        xs_close(xs);
        if (v) {
            char* end = nullptr;
            errno = 0;
            unsigned long d = std::strtoul(v, &end, 10);
            bool ok = errno == 0 && end != v && *end == '\0' && ordinary_domid(d);
            std::free(v);
            if (ok) {
                *out = domid_t(d);
                return 0;
            }
            *detail = "xenstore \"domid\" is not a domain id";
        } else {
            *detail = std::string("xenstore read of \"domid\" failed: ") + std::strerror(xs_err);
        }
    } else {
        *detail = std::string("cannot connect to xenstore: ") + std::strerror(errno);
    }

    std::FILE* f = std::fopen("/proc/xen/capabilities", "re");
    if (f) {
        char caps[256] = {};
        size_t n = std::fread(caps, 1, sizeof(caps) - 1, f);
        std::fclose(f);
        caps[n] = '\0';
        if (std::strstr(caps, "control_d")) {
            *out = 0;
            return 0;
        }
        *detail += "; not the control domain per /proc/xen/capabilities";
    } else {
        *detail += "; /proc/xen/capabilities unreadable";
    }
    return -ENOENT;
}

} // namespace

uint32_t precheck_copy(copy_segment* segs, uint32_t count) noexcept {
    if (!segs) return 0;
    uint32_t ok = 0;
    for (uint32_t i = 0; i < count; i++) {
        copy_segment& s = segs[i];
        const bool src_gref = s.flags & GNTCOPY_source_gref;
        const bool dst_gref = s.flags & GNTCOPY_dest_gref;
        // Each rule is one that makes gntdev fail the whole ioctl.
        bool good = src_gref || dst_gref; // local->local is a memcpy, not ours
        if (src_gref && size_t(s.source.foreign.offset) + s.len > page_size) good = false;
        if (dst_gref && size_t(s.dest.foreign.offset) + s.len > page_size) good = false;
        if (!src_gref && !s.source.virt) good = false;
        if (!dst_gref && !s.dest.virt) good = false;
        s.status = good ? GNTST_okay : GNTST_bad_copy_arg;
        ok += good ? 1 : 0;
    }
    return ok;
}

int copy_batch(copy_segment* segs, uint32_t count, copy_scratch& scratch, copy_submit_fn submit,
               void* ctx) noexcept {
    if (count == 0) return 0;
    if (!segs) return -EINVAL;
    const uint32_t n_ok = precheck_copy(segs, count);
    if (n_ok == 0) return 0;
    if (n_ok == count) {
        int rc = submit(ctx, segs, count);
        // See the note at the top: after a failed ioctl no status is true.
        if (rc < 0)
            for (uint32_t i = 0; i < count; i++) segs[i].status = GNTST_general_error;
        return rc;
    }
    // Survivors go in one ioctl (one hypercall per 16 ops) rather than one
    // per run between rejected segments.
    if (n_ok > scratch.cap) {
        std::unique_ptr<copy_segment[]> s(new (std::nothrow) copy_segment[n_ok]);
        if (!s) {
            for (uint32_t i = 0; i < count; i++)
                if (segs[i].status == GNTST_okay) segs[i].status = GNTST_general_error;
            return -ENOMEM;
        }
        scratch.segs = std::move(s);
        scratch.cap = n_ok;
    }
    copy_segment* out = scratch.segs.get();
    uint32_t j = 0;
    // precheck left GNTST_okay on exactly the segments to submit.
    for (uint32_t i = 0; i < count; i++)
        if (segs[i].status == GNTST_okay) out[j++] = segs[i];
    int rc = submit(ctx, out, n_ok);
    j = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (segs[i].status != GNTST_okay) continue;
        segs[i].status = rc < 0 ? int16_t(GNTST_general_error) : out[j].status;
        j++;
    }
    return rc;
}

result<std::unique_ptr<port>> open_port(std::string* why) noexcept {
    for (const char* dev : {"/dev/xen/gntdev", "/dev/xen/evtchn"}) {
        if (::access(dev, F_OK) == 0) continue;
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            if (why)
                *why = std::string("no Xen: ") + dev +
                       " not found; use the emulated hypervisor (ZCNET_HV=emu)";
            return err(-ENODEV);
        }
        if (why) *why = std::string("cannot access ") + dev + ": " + std::strerror(e);
        return err(-e);
    }

    domid_t self = domid_invalid;
    std::string detail;
    int rc = read_self_domid(&self, &detail);
    if (rc < 0) {
        if (why) *why = "xen: cannot find our own domid: " + detail;
        return err(rc);
    }

    auto* p = new (std::nothrow) xen_port(self);
    if (!p) return err(-ENOMEM);
    ZC_LOG(info, tag, "xen port open, self domid %u", unsigned(self));
    return std::unique_ptr<port>(p);
}

} // namespace zc::hv::xen
