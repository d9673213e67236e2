// SPDX-License-Identifier: MIT
// A client's memory regions (layout.hpp, "memory regions"): populating and
// freeing our own, and mapping any domain's into its view on first use.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.hpp"
#include "hv/emu/client.hpp"
#include "hv/emu/proto.hpp"

namespace zc::hv::emu {

namespace {
constexpr const char* tag = "emu-client";
}

region_map::region_map() noexcept {
    for (int& f : fd) f = -1;
}

region_map::~region_map() {
    for (int f : fd)
        if (f >= 0) ::close(f);
}

// Under v.rmap->lock. The window gets anonymous zero pages first, then the
// memfd over its first `pages`: a copy that still runs against a region
// replaced meanwhile (only its own domain can do that, with grants still
// pinned) reads zeros instead of faulting.
int client::map_region(const domain_view& v, uint32_t index, uint32_t gen, uint32_t pages, int fd) noexcept {
    region_map& m = *v.rmap;
    uint8_t* at = v.mem + (size_t(v.mem_pages) + size_t(index) * region_max_pages) * page_size;
    const size_t window = size_t(region_max_pages) * page_size;
    if (pages > region_max_pages) errno = EPROTO;
    if (pages > region_max_pages ||
        ::mmap(at, window, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) ==
            MAP_FAILED ||
        ::mmap(at, size_t(pages) * page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        const int e = errno;
        ZC_LOG(warn, tag, "d%u region %u: map: %s", unsigned(v.dom), index, std::strerror(e));
        ::close(fd);
        return -e;
    }
    if (m.fd[index] >= 0) ::close(m.fd[index]);
    m.fd[index] = fd;
    m.gen[index].store(gen, std::memory_order_release);
    return 0;
}

result<client::region> client::region_new(uint32_t pages) noexcept {
    proto::request r = proto::req(proto::op::region_new, pages, 0, 0, 0);
    uint32_t a = 0, gen = 0;
    int fd = -1;
    int rc = call_fd(&r, sizeof r, &a, &gen, &fd);
    if (rc < 0) return err(rc);
    const uint32_t index = uint32_t(rc);
    std::lock_guard g(_self.rmap->lock);
    if (index >= region_slots) {
        ::close(fd);
        return err(-EPROTO);
    }
    if (int e = map_region(_self, index, gen, pages, fd); e < 0) {
        proto::request f = proto::req(proto::op::region_free, index, 0, 0, 0);
        (void)call_rc(&f, sizeof f);
        return err(e);
    }
    return region{index, _self.mem_pages + index * region_max_pages, _self.rmap->fd[index]};
}

int client::region_free(uint32_t index) noexcept {
    if (index >= region_slots) return -EINVAL;
    proto::request r = proto::req(proto::op::region_free, index, 0, 0, 0);
    int rc = call_rc(&r, sizeof r);
    if (rc < 0) return rc;
    // Our own window lets the pages go (an application that still maps the
    // memfd keeps them); a mapper that mapped them lets go when it next
    // maps the slot.
    std::lock_guard g(_self.rmap->lock);
    (void)::mmap(_self.mem + (size_t(_self.mem_pages) + size_t(index) * region_max_pages) * page_size,
                 size_t(region_max_pages) * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                 -1, 0);
    if (_self.rmap->fd[index] >= 0) ::close(_self.rmap->fd[index]);
    _self.rmap->fd[index] = -1;
    _self.rmap->gen[index].store(0, std::memory_order_release);
    return 0;
}

int client::region_sync(const domain_view& v, uint32_t frame) noexcept {
    if (!v.rmap || !v.regions || frame < v.mem_pages) return 0;
    const uint32_t index = (frame - v.mem_pages) / region_max_pages;
    if (index >= region_slots) return -EINVAL;
    const uint32_t want = v.regions[index].gen.load(std::memory_order_acquire);
    if (v.rmap->gen[index].load(std::memory_order_acquire) == want) return 0;
    std::lock_guard g(v.rmap->lock);
    if (v.rmap->gen[index].load(std::memory_order_relaxed) == want) return 0;
    proto::request r = proto::req(proto::op::region_get, v.dom, index, 0, 0);
    uint32_t gen = 0, pages = 0;
    int fd = -1;
    int rc = call_fd(&r, sizeof r, &gen, &pages, &fd);
    if (rc < 0) return rc;
    return map_region(v, index, gen, pages, fd);
}

int client::frame_fd(const domain_view& v, uint32_t frame, uint64_t* offset) const noexcept {
    if (frame < v.mem_pages) {
        *offset = uint64_t(frame) * page_size;
        return v.mem_fd;
    }
    if (!v.rmap) return -1;
    const uint32_t index = (frame - v.mem_pages) / region_max_pages;
    if (index >= region_slots) return -1;
    std::lock_guard g(v.rmap->lock);
    *offset = uint64_t((frame - v.mem_pages) % region_max_pages) * page_size;
    return v.rmap->fd[index] < 0 ? -1 : ::fcntl(v.rmap->fd[index], F_DUPFD_CLOEXEC, 0);
}

} // namespace zc::hv::emu
