// SPDX-License-Identifier: MIT
// Exportable shares on real Xen (hv::gntshr::share_exportable): pages that
// one application may map, and nothing else. They are not gntalloc's: a
// /dev/xen/gntalloc fd handed to an application would let it allocate
// grants of its own to any domain (IOCTL_GNTALLOC_ALLOC_GREF), end ours
// (IOCTL_GNTALLOC_DEALLOC_GREF) and use up gntalloc's limit, which is one
// for the whole guest (module parameter `limit`, 1024 by default; Linux
// drivers/xen/gntalloc.c). Instead the pages are a sealed memfd of their
// own, made a dma-buf by /dev/udmabuf (Linux drivers/dma-buf/udmabuf.c,
// which wants F_SEAL_SHRINK and refuses F_SEAL_WRITE) and granted by
// gntdev's dma-buf import (IOCTL_GNTDEV_DMABUF_IMP_TO_REFS,
// xengnttab_dmabuf_imp_to_refs; Linux drivers/xen/gntdev-dmabuf.c), whose
// grants come from the kernel's grant table, not from gntalloc's limit.
// The application gets the memfd: exactly the pages, nothing to grant or
// revoke with. Needs CONFIG_UDMABUF and CONFIG_XEN_GNTDEV_DMABUF in the
// guest kernel and access to /dev/udmabuf and /dev/xen/gntdev (Debian 12's
// 6.1 kernel has neither: share_exportable answers -EOPNOTSUPP there).
// gntdev-dmabuf grants read-write (gnttab_grant_foreign_access_ref with
// readonly 0): the peer may write the pages whatever `writable` asked.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zc::hv::xen {

// A memfd of `count` zeroed pages, sealed F_SEAL_SHRINK | F_SEAL_GROW |
// F_SEAL_SEAL, and our read-write mapping of it. 0 or -errno.
int make_pool_memfd(uint32_t count, int* memfd, void** addr) noexcept;

// A dma-buf of the memfd's first `bytes` (/dev/udmabuf): its fd, or -errno
// (-ENODEV without /dev/udmabuf).
int make_udmabuf(int memfd, size_t bytes) noexcept;

} // namespace zc::hv::xen
