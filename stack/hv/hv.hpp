// SPDX-License-Identifier: MIT
// The hypervisor port: the one interface zcnet uses for grant tables, grant
// copy, event channels and xenstore. Two implementations, chosen at run time
// by hv::open():
//   xen  the real libraries (libxengntshr, libxengnttab, libxenevtchn,
//        libxenstore); needs /dev/xen.
//   emu  the emulated hypervisor (stack/hv/emu): a broker process plays Xen,
//        domains are processes, guest memory is a memfd, grant tables are
//        arrays of Xen's own grant_entry_v1_t.
// Nothing above this header knows which one it runs on.
//
// Shapes follow the Xen libraries on purpose (a handle per service, the same
// argument order, libxengnttab's own grant-copy segment type) so that the xen
// implementation is a thin shim and the emu implementation is measured
// against the same contract.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include <xen/grant_table.h>
#include <xengnttab.h>
}

#include "common/counters.hpp"
#include "common/result.hpp"

namespace zc::hv {

using domid_t = uint16_t;
using gref_t = grant_ref_t;
using evtchn_port_t = uint32_t;
using copy_segment = xengnttab_grant_copy_segment_t;

inline constexpr size_t page_size = 4096;      // XEN_PAGE_SIZE
inline constexpr domid_t domid_self = 0x7FF0;   // DOMID_SELF
inline constexpr domid_t domid_invalid = 0x7FF4; // DOMID_INVALID

// Counters of hypervisor operations, kept per handle. These are what carries
// over to a real Xen host (one grant-copy batch is one hypercall there), so
// the benchmark reports them next to timings.
struct op_counters {
    uint64_t copy_batches = 0;   // grant_copy() calls that reached the hypervisor
    uint64_t copy_segments = 0;  // segments in those calls
    uint64_t copy_bytes = 0;     // bytes in segments that returned GNTST_okay
    uint64_t copy_errors = 0;    // segments with status != GNTST_okay
    uint64_t maps = 0;           // pages mapped
    uint64_t unmaps = 0;         // pages unmapped
    uint64_t shares = 0;         // pages granted
    uint64_t unshares = 0;       // pages whose grant was ended
    uint64_t notifies = 0;       // event-channel notifications sent
};
ZC_COUNTERS_ADDABLE(op_counters)

// ---------------------------------------------------------------------------
// Granter side (libxengntshr). Pages are allocated by the hypervisor port and
// granted in one step, as gntalloc does; the caller cannot grant arbitrary
// memory.
struct shared_pages {
    void* addr = nullptr;          // `count` contiguous pages, page aligned
    uint32_t count = 0;
    domid_t peer = domid_invalid;  // the only domain that may use the grants
    bool writable = false;
    std::vector<gref_t> refs;      // refs[i] grants page i
};

class gntshr {
public:
    virtual ~gntshr() = default;
    // Allocate `count` zeroed pages and grant each to `peer`.
    // Errors: -EINVAL (count 0 or peer is ourselves/invalid), -ENOSPC (grant
    // table full), -ENOMEM (no guest memory left).
    virtual result<shared_pages> share(domid_t peer, uint32_t count, bool writable) noexcept = 0;
    // End access to every page of `p` and free them.
    // Errors: -EBUSY when some page is still mapped by the peer or in a grant
    // copy. Emu: nothing is revoked, retry later. Xen (gntalloc): never
    // returned; the kernel defers the revocation until the peer unmaps.
    virtual int unshare(shared_pages& p) noexcept = 0;
    virtual op_counters counters() const noexcept = 0;

    // As share(), but the pages can be handed to another process of this
    // domain with export_fd, which then reaches those pages and nothing
    // else (docs/ARCHITECTURE.md, "What an application holds"). Emu: a
    // memory region of its own; xen: a memfd granted through udmabuf and
    // gntdev's dma-buf import (hv/xen/xen_export.hpp; read-write grants).
    // Errors: those of share(), -EINVAL also for count > 4096, -EOPNOTSUPP
    // (xen: the kernel has no udmabuf or no gntdev dma-buf).
    virtual result<shared_pages> share_exportable(domid_t peer, uint32_t count, bool writable) noexcept {
        (void)peer, (void)count, (void)writable;
        return err(-EOPNOTSUPP);
    }

    // Let another process of this domain see the pages of a live share made
    // by share_exportable: a new file descriptor (the caller closes it)
    // whose bytes [offset, offset + count * 4096) are those pages and which
    // reaches nothing else, for mmap(MAP_SHARED) after passing it with
    // SCM_RIGHTS. Its size cannot be changed (emu: a memfd sealed
    // F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL).
    // Errors: -EINVAL (not a live exportable share of this handle), -EMFILE,
    // -EOPNOTSUPP.
    struct exported_fd {
        int fd = -1;
        uint64_t offset = 0;
    };
    virtual result<exported_fd> export_fd(const shared_pages& p) noexcept {
        (void)p;
        return err(-EOPNOTSUPP);
    }

    // Grant the pages of a live share_exportable share to one more domain,
    // `peer`, as well (docs/ARCHITECTURE.md, "Direct path (guest to
    // guest)": a connected zc socket's send buffers, read-only to the
    // destination guest besides the backend): refs[i] grants page i. At
    // most one such domain per share; unshare() ends these grants too.
    // Errors: -EINVAL (not a live exportable share of this handle, `peer`
    // invalid, ourselves, the share's peer, or a second one), -ENOSPC
    // (grant table full), -EOPNOTSUPP (xen: not built, see xen_port.cpp).
    virtual result<std::vector<gref_t>> grant_also(const shared_pages& p, domid_t peer, bool writable) noexcept {
        (void)p, (void)peer, (void)writable;
        return err(-EOPNOTSUPP);
    }
    // End the grants grant_also() made, all or nothing.
    // Errors: -EBUSY (a page is still mapped or in a copy by that domain:
    // nothing changed, retry later), -EINVAL (none made), -EOPNOTSUPP.
    virtual int end_also(const shared_pages& p) noexcept {
        (void)p;
        return -EOPNOTSUPP;
    }
};

// ---------------------------------------------------------------------------
// Mapper side and grant copy (libxengnttab).
struct mapping {
    void* addr = nullptr;  // `count` contiguous pages
    uint32_t count = 0;
    bool writable = false;
};

class gnttab {
public:
    virtual ~gnttab() = default;
    // Map grants (doms[i], refs[i]) into `count` contiguous local pages.
    // On failure nothing stays mapped. Errors: -EINVAL (count 0 or a grant
    // failed validation), -ENOMEM. If `status` is non-null it receives a
    // GNTST_* code per page; the emu reports the exact code Xen's
    // GNTTABOP_map_grant_ref returns, the xen backend (gntdev hides it)
    // reports GNTST_general_error for every page of a failed batch.
    // A guest maps (and copies) grants other guests made to it on both;
    // emu, unprivileged caller: only grants of exportable shares
    // (gntshr::share_exportable), others are GNTST_permission_denied
    // (hv/emu/foreign.hpp).
    virtual result<mapping> map(uint32_t count, const domid_t* doms, const gref_t* refs,
                                bool writable, int16_t* status = nullptr) noexcept = 0;
    // Errors: -EINVAL if `m` is not a live mapping of this handle.
    virtual int unmap(mapping& m) noexcept = 0;
    // Batched grant copy. Each segment is local<->gref or gref<->gref
    // (GNTCOPY_source_gref / GNTCOPY_dest_gref); each gets a GNTST_* status.
    // A gref side must not cross its page (offset + len > 4096):
    // GNTST_bad_copy_arg for that segment. Returns 0 when the batch was
    // submitted (check every status), or -errno when it could not be.
    virtual int copy(copy_segment* segs, uint32_t count) noexcept = 0;
    virtual op_counters counters() const noexcept = 0;
};

// ---------------------------------------------------------------------------
// Event channels (libxenevtchn). Semantics follow the Linux evtchn driver: a
// port that fires is masked until unmask(); pending() returns it once.
class evtchn {
public:
    virtual ~evtchn() = default;
    // The fd to poll/epoll/io_uring for readability.
    virtual int fd() const noexcept = 0;
    // Allocate a port that `remote` may bind to. Returns the local port.
    virtual result<evtchn_port_t> bind_unbound(domid_t remote) noexcept = 0;
    // Bind to `remote`'s unbound port. Errors: -EINVAL (no such port, or it
    // was not allocated for us), -ESRCH (no such domain).
    virtual result<evtchn_port_t> bind_interdomain(domid_t remote, evtchn_port_t remote_port) noexcept = 0;
    virtual int unbind(evtchn_port_t port) noexcept = 0;
    // Errors: -EINVAL (port not bound by this handle).
    virtual int notify(evtchn_port_t port) noexcept = 0;
    // Next pending port of this handle, or -EAGAIN when none. Non-blocking.
    virtual result<evtchn_port_t> pending() noexcept = 0;
    virtual int unmask(evtchn_port_t port) noexcept = 0;
    virtual op_counters counters() const noexcept = 0;
};

// ---------------------------------------------------------------------------
// The port: which hypervisor, who we are, and factories for the handles.
// Xenstore needs no abstraction: libxenstore is the client on both backends
// (the emu broker speaks xenstored's wire protocol, xen/io/xs_wire.h); see
// hv/xs.hpp.
enum class kind { xen, emu };

class port {
public:
    virtual ~port() = default;
    virtual kind which() const noexcept = 0;
    virtual const char* name() const noexcept = 0;
    virtual domid_t self() const noexcept = 0;
    // Where libxenstore must connect for this domain ("" = libxenstore default).
    virtual std::string xenstore_path() const = 0;
    virtual result<std::unique_ptr<gntshr>> open_gntshr() noexcept = 0;
    virtual result<std::unique_ptr<gnttab>> open_gnttab() noexcept = 0;
    virtual result<std::unique_ptr<evtchn>> open_evtchn() noexcept = 0;
};

// Choose and open the port:
//   ZCNET_HV=xen|emu overrides; otherwise xen when /dev/xen/gntdev exists,
//   else emu. The emu backend reads ZCNET_EMU_SOCK (broker socket),
//   ZCNET_DOMID and ZCNET_EMU_TOKEN (the domain's secret), as set by
//   `zc-emu run`.
// On error returns nullptr-carrying result with a message in *why.
// Defined in the zc_hv_select part (hv/select.cpp): only what chooses a
// port at run time links both backends.
result<std::unique_ptr<port>> open(std::string* why = nullptr) noexcept;
result<std::unique_ptr<port>> open(kind k, std::string* why = nullptr) noexcept;

// Human-readable GNTST_* name ("GNTST_okay", ...).
const char* gntst_name(int16_t status) noexcept;

} // namespace zc::hv
