// SPDX-License-Identifier: MIT
#include "common/fdpass.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace zc::fdpass {

long send(int sock, const void* buf, size_t len, const int* fds, int nfds, int flags) noexcept {
    if (nfds < 0 || nfds > max_fds) return -EINVAL;
    iovec iov{const_cast<void*>(buf), len};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * max_fds)] = {}; // padding goes out too
    if (nfds > 0) {
        mh.msg_control = ctl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * size_t(nfds));
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * size_t(nfds));
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * size_t(nfds));
    }
    for (;;) {
        ssize_t n = ::sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno != EINTR) return -errno;
    }
}

long recv(int sock, void* buf, size_t cap, int* fds, int* nfds, int flags) noexcept {
    iovec iov{buf, cap};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * max_fds)];
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    ssize_t n;
    do n = ::recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    const int keep = (fds && nfds) ? *nfds : 0;
    if (nfds) *nfds = 0;
    if (n < 0) return -errno;
    int got = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < keep) fds[got++] = fd;
            else ::close(fd);
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < got; i++) ::close(fds[i]);
        return -EMSGSIZE;
    }
    if (nfds) *nfds = got;
    return n;
}

} // namespace zc::fdpass
