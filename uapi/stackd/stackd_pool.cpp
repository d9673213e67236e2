// SPDX-License-Identifier: MIT
// zc-stackd, the send buffers of a socket's pool and how they reach the
// backend (stackd.hpp, options::pool_export; uapi/README.md, "Pools"):
//
//   grant  pages of hv::gntshr::share_exportable, granted to the backend;
//          zc-netback grant-copies the payload from them (zero copy here).
//          Per socket, its send-buffer pages in grants.
//   copy   a sealed memfd of ours, never granted; each datagram's payload is
//          copied with its headers into one of the netfront's own TX pages,
//          which are granted once at connect (link/netfront.hpp, tx_reserve):
//          one copy more per datagram, no grant per socket, so the guest's
//          grants stay the netfront's whatever the number of sockets.
//   auto   grant where share_exportable works, else copy: on Xen it needs
//          udmabuf and gntdev's dma-buf import (hv/xen/xen_export.hpp),
//          which Debian 12's guest kernel lacks.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/checksum.hpp"
#include "stackd/stackd_impl.hpp"

namespace zc::stackd {

const char* pool_export_name(pool_export m) noexcept {
    switch (m) {
    case pool_export::grant: return "grant";
    case pool_export::copy: return "copy";
    default: return "auto";
    }
}

// auto: one exportable page to the backend, given back at once. Only
// -EOPNOTSUPP (the kernel cannot export granted pages) means copy; any
// other failure is left to each OPEN, which reports it.
void service::impl::choose_pool_mode() noexcept {
    if (opt.pool_mode != pool_export::auto_) {
        copy_pool = opt.pool_mode == pool_export::copy;
        ZC_LOG(info, tag, "pool export: %s (--pool-export)", pool_export_name(opt.pool_mode));
        return;
    }
    auto p = shr->share_exportable(nf->backend_id(), 1, false);
    if (p) {
        (void)shr->unshare(*p);
        ZC_LOG(info, tag, "pool export: grant (zero copy: the backend copies from each socket's pool)");
        return;
    }
    if (p.error() != -EOPNOTSUPP) {
        ZC_LOG(warn, tag, "pool export: grant; the probe failed (%s), sockets may be refused",
               std::strerror(-p.error()));
        return;
    }
    copy_pool = true;
    const char* why = ::access("/dev/udmabuf", F_OK) != 0
                          ? "no /dev/udmabuf (CONFIG_UDMABUF)"
                          : "gntdev has no dma-buf import (CONFIG_XEN_GNTDEV_DMABUF)";
    ZC_LOG(warn, tag,
           "pool export: copy, because this kernel cannot grant memory an application may map: %s; "
           "each datagram's payload is copied into the netfront's TX pages (one copy more, no grant per socket)",
           why);
}

namespace {

// A sealed memfd of `bytes`, mapped read-write here. Sealed before the
// application sees it: it may not resize the file under our mapping
// (SIGBUS) nor seal it against us; `future_write` also lets it map the file
// only read-only. 0 or -errno.
int private_memfd(const char* name, size_t bytes, bool future_write, int& fd_out, uint8_t*& mem) noexcept {
    int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    void* m = MAP_FAILED;
    // F_SEAL_FUTURE_WRITE after our writable mapping exists.
    if (::ftruncate(fd, off_t(bytes)) == 0)
        m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED || ::fcntl(fd, F_ADD_SEALS,
                                   F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | (future_write ? F_SEAL_FUTURE_WRITE : 0)) < 0) {
        if (m != MAP_FAILED) ::munmap(m, bytes);
        ::close(fd);
        return -ENOMEM;
    }
    fd_out = fd;
    mem = static_cast<uint8_t*>(m);
    return 0;
}

} // namespace

// The socket's send buffers (`tx_pages`) and receive buffers (`rx_pages`).
// Grant mode: two shares granted to the backend, read-only (it only copies
// from them: a receive buffer can be sent on); two, so that the direct path
// can grant the send buffers alone to a peer (direct_tx.cpp). Copy mode:
// two memfds of ours. 0 or -errno (-ENOSPC: the grant table is full).
int service::impl::open_pool(zsock& s, uint32_t tx_pages, uint32_t rx_pages) noexcept {
    if (!copy_pool) {
        auto p = shr->share_exportable(nf->backend_id(), tx_pages, false);
        if (!p) return p.error();
        auto r = shr->share_exportable(nf->backend_id(), rx_pages, false);
        if (!r) {
            (void)shr->unshare(*p);
            return r.error();
        }
        s.pool = std::move(*p);
        s.rxpool = std::move(*r);
        s.mem = static_cast<uint8_t*>(s.pool.addr);
        s.rxmem = static_cast<uint8_t*>(s.rxpool.addr);
        return 0;
    }
    if (int rc = private_memfd("zc-socket-tx", size_t{tx_pages} * hv::page_size, false, s.tx_fd, s.mem); rc < 0)
        return rc;
    s.tx_pages = tx_pages;
    if (int rc = private_memfd("zc-socket-rx", size_t{rx_pages} * hv::page_size, true, s.rx_fd, s.rxmem); rc < 0) {
        (void)close_pool(s, true);
        return rc;
    }
    return 0;
}

int service::impl::export_pool(const zsock& s, hv::gntshr::exported_fd& tx, int& rx) noexcept {
    int e = 0;
    if (copy_pool) {
        tx = {::fcntl(s.tx_fd, F_DUPFD_CLOEXEC, 0), 0};
        rx = ::fcntl(s.rx_fd, F_DUPFD_CLOEXEC, 0); // sealed F_SEAL_FUTURE_WRITE
        if (tx.fd < 0 || rx < 0) e = -errno;
    } else {
        auto t = shr->export_fd(s.pool);
        if (!t) return t.error();
        tx = *t;
        auto r = shr->export_fd(s.rxpool);
        if (!r || r->offset != 0) { // the protocol maps the receive buffers from 0
            ::close(tx.fd);
            if (r) ::close(r->fd);
            return r ? -EPROTO : r.error();
        }
        // Reopened read-only: the application can neither map nor mprotect
        // the receive buffers writable (docs/ARCHITECTURE.md, "What an
        // application holds").
        char path[64];
        std::snprintf(path, sizeof path, "/proc/self/fd/%d", r->fd);
        rx = ::open(path, O_RDONLY | O_CLOEXEC);
        if (rx < 0) e = -errno;
        ::close(r->fd);
    }
    if (tx.fd < 0 || rx < 0) {
        if (tx.fd >= 0) ::close(tx.fd);
        if (rx >= 0) ::close(rx);
        return e;
    }
    return 0;
}

// 0, or -EBUSY while the backend may still copy from a granted pool.
int service::impl::close_pool(zsock& s, bool force) noexcept {
    for (hv::shared_pages* p : {&s.pool, &s.rxpool}) {
        if (!p->addr) continue;
        const uint32_t pages = p->count; // unshare() clears it
        int rc = shr->unshare(*p);
        if (rc == -EBUSY && !force) return rc;
        if (rc == 0) pool_pages -= pages;
    }
    if (s.tx_fd >= 0) {
        ::munmap(s.mem, size_t{s.tx_pages} * hv::page_size);
        ::close(s.tx_fd);
        s.tx_fd = -1;
    }
    if (s.rx_fd >= 0) {
        ::munmap(s.rxmem, s.rx_bytes);
        ::close(s.rx_fd);
        s.rx_fd = -1;
    }
    s.mem = s.rxmem = nullptr;
    return 0;
}

// --pool-export copy: headers and payload into a netfront TX page of ours
// (granted at connect), the frame one slot. The send completes here: the
// buffer is the application's again as soon as it is copied. An
// application changing its buffer meanwhile changes only its own payload
// (the checksum is summed over the copy). False when netfront is full.
bool service::impl::submit_copy(zsock& s, const tx_desc& d, const proto::udp_flow& f) noexcept {
    auto b = nf->tx_reserve();
    if (!b) {
        if (b.error() == -EAGAIN) return false;
        complete(s, d, b.error());
        return true;
    }
    uint8_t* fr = b->data;
    const size_t hl = proto::udp_headroom;
    std::memcpy(fr + hl, buf_ptr(s, d.buf) + d.off, d.len);
    size_t len = hl + d.len;
    if (len < 60) { // the Ethernet minimum; the IP length says where it ends
        std::memset(fr + len, 0, 60 - len);
        len = 60;
    }
    const proto::tx_csum mode = opt.csum_offload && d.len ? proto::tx_csum::offload : proto::tx_csum::full;
    const uint32_t sum = mode == proto::tx_csum::full && d.len ? proto::csum_partial(fr + hl, d.len) : 0;
    proto::tx_headers h;
    int rc = host->udp_headers(std::span<uint8_t>(fr, hl), d.len, sum, f, mode, h);
    link::tx_offload off{};
    off.csum_blank = h.csum_blank;
    if (rc == 0) rc = nf->tx_submit(*b, len, 0, &off);
    if (rc < 0) (void)nf->tx_release(*b);
    if (rc == -EAGAIN) return false;
    if (rc == 0) {
        n.tx_zc++;
        n.tx_copied++;
        s.st.tx_datagrams++;
        s.st.tx_bytes += d.len;
    }
    complete(s, d, rc < 0 ? rc : int32_t(d.len));
    return true;
}

} // namespace zc::stackd
