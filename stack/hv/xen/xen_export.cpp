// SPDX-License-Identifier: MIT
// See xen_export.hpp.
#include "hv/xen/xen_export.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/udmabuf.h>

#include "hv/hv.hpp"

namespace zc::hv::xen {

int make_pool_memfd(uint32_t count, int* memfd, void** addr) noexcept {
    if (count == 0) return -EINVAL;
    const size_t bytes = size_t(count) * page_size;
    int fd = ::memfd_create("zc-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    int e = 0;
    if (::ftruncate(fd, off_t(bytes)) < 0 || ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        e = -errno;
    void* m = e ? MAP_FAILED : ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        if (!e) e = -errno;
        ::close(fd);
        return e;
    }
    *memfd = fd;
    *addr = m;
    return 0;
}

int make_udmabuf(int memfd, size_t bytes) noexcept {
    int dev = ::open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
    if (dev < 0) return errno == ENOENT ? -ENODEV : -errno;
    udmabuf_create c{};
    c.memfd = uint32_t(memfd);
    c.flags = UDMABUF_FLAGS_CLOEXEC;
    c.offset = 0;
    c.size = bytes;
    int fd = ::ioctl(dev, UDMABUF_CREATE, &c);
    int e = fd < 0 ? -errno : 0;
    ::close(dev);
    return fd < 0 ? e : fd;
}

} // namespace zc::hv::xen
