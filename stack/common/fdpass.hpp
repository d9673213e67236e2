// SPDX-License-Identifier: MIT
// One message with file descriptors over a Unix socket (SCM_RIGHTS). Used by
// the emulated hypervisor's broker protocol and by zc-stackd's control
// socket (both ends): the only place that builds or walks a cmsg.
#pragma once

#include <cstddef>

namespace zc::fdpass {

inline constexpr int max_fds = 8;

// Send `len` bytes and `nfds` (<= max_fds) descriptors as one message.
// MSG_NOSIGNAL is always added to `flags`; EINTR is retried. Bytes sent or
// -errno (-EINVAL for too many fds).
long send(int sock, const void* buf, size_t len, const int* fds, int nfds, int flags = 0) noexcept;

// Receive one message. Received descriptors are close-on-exec; the first
// *nfds of them are stored in `fds` and *nfds is set to how many were
// (pass fds = nullptr or *nfds = 0 to close every one that came: a peer
// cannot leak descriptors into us). EINTR is retried. Bytes received, or
// -errno; -EMSGSIZE when the message or its descriptors did not fit (no
// descriptor is kept then).
long recv(int sock, void* buf, size_t cap, int* fds, int* nfds, int flags = 0) noexcept;

} // namespace zc::fdpass
