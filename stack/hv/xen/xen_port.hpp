// SPDX-License-Identifier: MIT
// The real-Xen implementation of hv::port, on libxengnttab (gnttab and
// gntshr), libxenevtchn and libxenstore. A thin shim: the Linux drivers
// (gntdev, gntalloc, evtchn) and Xen do the work; this layer validates
// arguments, turns errno into negative returns and keeps op_counters.
//
// Threads: the port itself is immutable after open_port() and may be shared.
// Each handle (gntshr, gnttab, evtchn) is single-threaded: its counters are
// plain fields and the gnttab handle owns a scratch buffer for copy().
// Open one handle per thread; the kernel objects behind them are independent.
#pragma once

#include <memory>
#include <string>

#include "hv/hv.hpp"

namespace zc::hv::xen {

// Open the Xen port. Needs /dev/xen/gntdev and /dev/xen/evtchn.
// Errors: -ENODEV (no Xen here; *why says so and points at ZCNET_HV=emu),
// -errno when our own domid cannot be found (neither xenstore "domid" nor a
// control domain per /proc/xen/capabilities).
result<std::unique_ptr<port>> open_port(std::string* why) noexcept;

// Userspace half of gnttab::copy(), exposed so it can be tested without Xen.
// For every segment that the gntdev ioctl would reject for the WHOLE batch,
// sets status = GNTST_bad_copy_arg; every other segment gets GNTST_okay
// (it is still to be submitted). Rules:
//   - at least one side is a gref (GNTCOPY_source_gref / GNTCOPY_dest_gref);
//   - a gref side satisfies offset + len <= page_size;
//   - a local side is not a null pointer (gntdev would fail the whole batch
//     with -EFAULT on it).
// Returns the number of segments that passed.
uint32_t precheck_copy(copy_segment* segs, uint32_t count) noexcept;

// The rest of gnttab::copy(), with the ioctl behind `submit` so that tests
// can stand in for Xen: precheck, gather the survivors into `scratch` (only
// when some were rejected), hand them to `submit` in ONE call, scatter the
// statuses back. `submit` fills statuses and returns 0, or returns -errno;
// then every submitted segment is set to GNTST_general_error and that errno
// is returned. Never calls `submit` with zero segments.
// Errors: -EINVAL (segs null with count > 0), -ENOMEM (scratch), submit's.
struct copy_scratch {
    std::unique_ptr<copy_segment[]> segs;
    uint32_t cap = 0;
};
using copy_submit_fn = int (*)(void* ctx, copy_segment* segs, uint32_t count) noexcept;
int copy_batch(copy_segment* segs, uint32_t count, copy_scratch& scratch, copy_submit_fn submit,
               void* ctx) noexcept;

} // namespace zc::hv::xen
