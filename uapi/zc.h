/* SPDX-License-Identifier: MIT */
/*
 * zc.h: the zcnet zero-copy datagram socket API (UDP over IPv4).
 *
 * A zc socket is a real file descriptor. The application writes payload
 * straight into buffers of the socket's pool (memory granted to the domain
 * that moves frames toward the destination), hands them to the stack without
 * a copy, and learns from a completion when a sent buffer may be written
 * again. Received datagrams are descriptors pointing into the same pool; the
 * application releases them when done.
 *
 * Conventions (liburing / libxdp style):
 *  - every function returning int returns >= 0 on success or -errno;
 *  - option structs start with `size_t sz` (set it to sizeof the struct you
 *    were compiled with); bytes past what the library knows must be zero,
 *    unknown flag bits are refused with -EINVAL;
 *  - a socket is identified by its file descriptor `s`; a closed or unknown
 *    descriptor gives -EBADF, never a crash;
 *  - the library is thread-compatible, not thread-safe: one thread per
 *    socket at a time (as for an AF_XDP socket or an io_uring).
 *
 * FORK. A socket belongs to the process that opened it. A fork()ed child
 * inherits its descriptor and mappings but cannot use them: every call on
 * an inherited socket returns -EBADF in the child (as for an unknown
 * descriptor), and the parent's socket keeps working. zc_close() in the
 * child returns 0 and releases only the child's copies (mappings and
 * descriptors); the stack service frees the socket once the parent closed
 * it and no child still holds its descriptors (they are close-on-exec).
 * A child opens sockets of its own with zc_socket(). (Processes made with
 * a raw clone(2) system call instead of fork() are not detected.)
 *
 * BUFFER OWNERSHIP. A pool buffer is in exactly one of these states:
 *
 *   FREE      owned by the library. zc_buf_alloc() -> APP.
 *   APP       owned by the application: it may read and write the payload
 *             area [data, data + max_payload). zc_send()/zc_sendv() -> STACK
 *             (on success only; on error the buffer stays APP).
 *             zc_buf_free() -> FREE.
 *   STACK     owned by the stack (a send is in flight): the application must
 *             not write it (the bytes may be read by the hypervisor's copy at
 *             any time until the completion) and may not send or free it
 *             (-EBUSY). The completion carrying its user_data -> APP again.
 *   RX        a received datagram handed out by zc_recv(): the application
 *             may read it until zc_rx_release() -> back to the stack, which
 *             reuses it for later datagrams. Received data is read-only: the
 *             receive buffers are mapped PROT_READ (zc_rxd.data is const), a
 *             write faults (SIGSEGV). Or it sends it on as it is, without a
 *             copy (a forwarder, an echo server): zc_send()/zc_sendv()/
 *             zc_sendmmsg() of the received payload (`data`; up to
 *             max_payload bytes, usually `len`) hands the buffer back to the stack
 *             instead of zc_rx_release() (then -EALREADY); its completion
 *             carries user_data but gives the buffer to nobody: the stack
 *             receives into it again. Sending it again before that is
 *             -EBUSY. Only this socket's own received buffers are sent in
 *             place (they are in its pool, granted like the send buffers);
 *             any other memory, another socket's received datagram
 *             included, is outside the pool: -EFAULT on strict sockets,
 *             copied on copy-fallback ones.
 *
 * The `headroom` bytes in front of a buffer's payload are never the
 * application's: do not rely on what they hold. The stack service builds a
 * datagram's headers in memory of its own, where the application cannot
 * change them after zc_send(); only a service started with
 * `zc-stackd --tx-headers headroom` (one slot fewer per frame, for guests
 * whose every application is trusted) writes them into the headroom while
 * the buffer is STACK.
 * After zc_close() every pointer into the pool (APP or RX) is invalid.
 *
 * Memory outside the pool is never owned by the library: a copy-fallback
 * send copies it before zc_send() returns, so the caller may reuse it at
 * once; the completion of such a send carries ZC_CQE_F_COPIED.
 *
 * COPIES. A zero-copy send costs one copy of the payload end to end on the
 * emulated and the real Xen host (the backend's grant copy from this pool's
 * page into the destination guest's page). A copy-fallback send adds one
 * (application memory -> pool). A receive costs one copy in the local stack
 * service (the netfront RX page -> this socket's pool) on top of the
 * backend's grant copy; forwarding a received buffer (RX above) adds none;
 * see uapi/README.md.
 */
#ifndef ZCNET_UAPI_ZC_H
#define ZCNET_UAPI_ZC_H

#include <stddef.h> /* offsetof */
#include <stdint.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZC_API_VERSION 1

/* ---- sockets ------------------------------------------------------------- */

/* zc_socket_opts.flags */
#define ZC_SOCK_STRICT        0u        /* a pointer outside the pool: -EFAULT */
#define ZC_SOCK_COPY_FALLBACK (1u << 0) /* ...: copied into the pool and counted */
/* zc_recv_wait() looks at the receive ring for up to $ZCNET_BUSY_POLL_US
 * microseconds (default 50, at most 1000) before it sleeps, as SO_BUSY_POLL,
 * but only while a CPU is idle (fewer runnable tasks than CPUs): it saves
 * the wake-up of a request/response exchange on a host with a CPU to spare
 * and costs nothing where none is. Off by default. Since ZCNET 1.2. */
#define ZC_SOCK_BUSY_POLL     (1u << 1)
#define ZC_SOCK_FLAGS_ALL     (ZC_SOCK_COPY_FALLBACK | ZC_SOCK_BUSY_POLL)

struct zc_socket_opts {
	size_t sz;             /* sizeof(struct zc_socket_opts) */
	uint32_t flags;        /* ZC_SOCK_* */
	uint32_t tx_bufs;      /* send buffers in the pool; 0 = 256; 2..4096, even */
	uint32_t rx_bufs;      /* receive buffers in the pool; 0 = 256; 2..4096, even */
	uint32_t ring_entries; /* entries per ring; 0 = 512; power of two, 8..4096 */
	const char *service;   /* zc-stackd's socket; NULL = $ZCNET_STACK_SOCK,
	                          else "/run/zcnet/stackd.sock" */
	/* Since ZCNET 1.2 (zc_version() "1.2"); a struct of the 1.0 size
	 * (ZC_SOCKET_OPTS_SZ_1_0) is still accepted and means 0 here. */
	uint32_t rx_max;       /* largest payload zc_recv() hands out: longer datagrams
	                          come cut to it with ZC_RXD_F_TRUNC, as recv(2) into a
	                          buffer of rx_max bytes; 0 = the receive buffer's size */
	uint32_t pad;          /* must be 0 */
};
/* sizeof(struct zc_socket_opts) of ZCNET 1.0 and 1.1 (before rx_max). */
#define ZC_SOCKET_OPTS_SZ_1_0 offsetof(struct zc_socket_opts, rx_max)

/*
 * Open a UDP/IPv4 socket on the guest's stack service (zc-stackd).
 * Returns the socket's file descriptor (>= 0). poll/epoll report it
 * readable while received datagrams or send completions are pending, and
 * always writable (sends never block: -EAGAIN means wait for readable, since
 * only completions free send resources). To wait for datagrams only, use
 * zc_recv_wait(). Close it with zc_close(), not
 * close(2): close(2) leaves the mappings behind (until a later socket gets
 * the same number, which then replaces them).
 * Errors: -EINVAL (opts NULL, sz neither ZC_SOCKET_OPTS_SZ_1_0 nor at least
 * sizeof, unknown flags, non-zero pad or unknown trailing bytes, bad counts), -ENOENT / -ECONNREFUSED (no stack service at
 * that path), -ENOMEM (no memory, the service could not grant the pool, or
 * this process's pool pages at the service would pass its limit:
 * zc-stackd --max-pool-pages-per-app), -ENOSPC (the guest's grant budget
 * is exhausted: zc-stackd --max-pool-pages), -EMFILE (no descriptor left,
 * or this process has as many sockets as the service allows it:
 * --max-sockets-per-app). A socket's pool is (tx_bufs + rx_bufs) x 2 KiB,
 * 1 MiB by default: smaller counts fit more sockets. zc-stackd logs each
 * refusal with the limit, the numbers and what to change.
 * -EOPNOTSUPP (the service cannot export pools on this host), -EPROTO (the
 * service speaks another version of the protocol), -ENAMETOOLONG (service
 * path), -ENOTCONN / -ETIMEDOUT (the service went away or did not answer).
 */
int zc_socket(const struct zc_socket_opts *opts);

/*
 * Close the socket. Every buffer of its pool, in whatever state, is released;
 * pointers into the pool are invalid afterwards (the mapping is gone).
 * Sends still in flight complete inside the stack; their completions are
 * lost. Errors: -EBADF.
 */
int zc_close(int s);

/* Local address. sin_port 0 picks a free port (49152..65535); sin_addr must
 * be INADDR_ANY or the guest's address. Errors: -EBADF, -EINVAL (addr NULL,
 * not AF_INET, already bound), -EADDRINUSE, -EADDRNOTAVAIL, -ENOTCONN (the
 * stack service went away), -ETIMEDOUT (it did not answer in 10 s). */
int zc_bind(int s, const struct sockaddr_in *addr);

/* Default destination for zc_send(); binds an ephemeral port first if
 * unbound. As connect(2) on a UDP socket, the socket then receives only
 * datagrams whose source address and port are `addr`'s; others are dropped
 * and counted (zc-stackd's per-socket rx_not_peer: `zc-stackd stats
 * --sockets`). Calling it again changes the peer.
 * The direct path (zc-stackd --zc-direct, on by default): when the peer is
 * a zcnet guest on the same host and switch, the socket's datagrams to it
 * are read by the peer's domain straight from this socket's send buffers
 * (granted read-only to that domain, for every send buffer of the socket:
 * what it sends elsewhere with zc_send(to) too; never another socket's),
 * and a send completes when the receiver has copied it. Nothing changes
 * for the application: the same calls, completions and ownership rules.
 * Errors: -EBADF, -EINVAL (addr NULL, not AF_INET, port 0 or
 * address 0), -EADDRINUSE (no free ephemeral port), -ENOTCONN, -ETIMEDOUT
 * (as zc_bind). */
int zc_connect(int s, const struct sockaddr_in *addr);

/* The socket's local address, as getsockname(2): AF_INET, the bound
 * address and port (network order). Unbound: 0.0.0.0 port 0. Bound to
 * INADDR_ANY: 0.0.0.0 and the port (an ephemeral one if zc_bind() asked for
 * port 0). Connected: the source address toward the peer (127.0.0.1 for a
 * peer on 127.0.0.0/8, else the guest's address; a bound address stays)
 * and the port datagrams leave from.
 * Errors: -EBADF, -EINVAL (out NULL). */
int zc_getsockname(int s, struct sockaddr_in *out);

/* ---- the pool -------------------------------------------------------------- */

struct zc_pool_info {
	size_t sz;            /* sizeof(struct zc_pool_info) */
	void *base;           /* first byte of the pool in this process */
	size_t size;          /* bytes mapped */
	uint32_t buf_size;    /* bytes per buffer (a power of two; never crosses a page) */
	uint32_t headroom;    /* bytes in front of each payload, not the application's
	                         (headers go there only with zc-stackd --tx-headers headroom) */
	uint32_t max_payload; /* largest datagram payload (1472: one frame, no IP fragments) */
	uint32_t tx_bufs;     /* buffers zc_buf_alloc() can hand out */
	uint32_t rx_bufs;     /* buffers the stack receives into */
	uint32_t pad;
};

/*
 * Where the socket's pool is mapped in this process. zc_socket() maps it
 * (MAP_SHARED) from the file descriptors the stack service passed: the
 * tx_bufs send buffers read-write, then the rx_bufs receive buffers
 * read-only; this call reports the mapping, idempotently. The mapping lives
 * until zc_close(). Bytes of `info` past what this library knows are zeroed.
 * Errors: -EBADF, -EINVAL (info NULL or sz too small).
 */
int zc_pool_mmap(int s, struct zc_pool_info *info);

/*
 * Take a FREE buffer: *data receives the start of its payload area
 * (max_payload bytes, headroom already reserved in front of it). Owner
 * afterwards: the application (APP).
 * Errors: -EBADF, -EINVAL (data NULL), -ENOBUFS (every send buffer is APP or STACK: wait for completions).
 */
int zc_buf_alloc(int s, void **data);

/*
 * Give an APP buffer back (FREE). `data` is what zc_buf_alloc() returned.
 * Errors: -EBADF, -EFAULT (not inside this socket's pool), -EINVAL (inside
 * the pool but not the start of a send buffer's payload), -EALREADY
 * (already FREE: double free), -EBUSY (STACK: wait for its completion).
 */
int zc_buf_free(int s, void *data);

/* ---- sending --------------------------------------------------------------- */

/* zc_send flags */
#define ZC_SEND_FLAGS_ALL 0u

/* Return value of a send that copied (fallback mode), like io_uring's
 * IORING_NOTIF_USAGE_ZC_COPIED. */
#define ZC_SENT_ZEROCOPY 0
#define ZC_SENT_COPIED   1

/*
 * Send one datagram of `len` bytes at `data` to `to` (NULL: the connected
 * peer). To the guest's own address or to 127.0.0.0/8 the stack service
 * delivers it to the socket of this guest bound to that port (an
 * application of the same guest) without the network, as the kernel's
 * loopback does; the source the receiver sees is the sender's bound
 * address, else 127.0.0.1 toward 127.0.0.0/8 and the guest's address
 * toward the guest's address (Linux's choice), and the completion comes at once (also when no socket has the
 * port: the datagram is then dropped, as UDP does). If `data` is the payload start of an APP buffer of this pool, the
 * buffer goes to STACK with no copy and ZC_SENT_ZEROCOPY is returned; its
 * completion (zc_completions) carries `user_data` and hands it back. If
 * `data` is a received datagram's payload (zc_rxd.data, RX) of this
 * socket, it is sent without a copy too and the buffer is the stack's
 * from then on (BUFFER OWNERSHIP above).
 * If `data` is outside the pool: strict sockets fail with -EFAULT; copy-
 * fallback sockets copy the bytes into a pool buffer the library owns,
 * count a copied send, and return ZC_SENT_COPIED (the caller's memory is
 * free at once; the completion still comes, flagged ZC_CQE_F_COPIED).
 * Errors: -EBADF, -EINVAL (unknown flags, data NULL, `to` not
 * AF_INET or port/address 0, `data` inside the pool but not a send
 * buffer's payload start or in a FREE buffer, or a receive buffer that is
 * not RX or not at its payload's start), -EMSGSIZE (len >
 * max_payload), -EFAULT (strict: outside the pool), -EBUSY (the buffer is
 * STACK: reused before its completion), -EDESTADDRREQ (to NULL and not
 * connected), -EAGAIN (send ring full, or
 * fallback with no FREE buffer to copy into: wait until readable and reap
 * completions), -ENOTCONN / -EPIPE (the stack service went away).
 */
int zc_send(int s, const void *data, size_t len, const struct sockaddr_in *to,
            uint32_t flags, uint64_t user_data);

/* One datagram of a zc_sendv() batch. */
struct zc_iov {
	const void *base;
	uint32_t len;
	uint32_t pad;       /* must be 0 */
	uint64_t user_data; /* returned in this datagram's completion */
};

/*
 * Send `n` datagrams to `to` (NULL: the connected peer) with one wake-up of
 * the stack. Each element follows zc_send()'s rules. Returns how many
 * elements were accepted (1..n), in order; elements after a failing one are
 * not sent (their buffers stay APP). If the first element fails, its error
 * is returned. `*copied` (optional) receives how many elements were copied.
 * Errors: those of zc_send(), -EINVAL also for iov NULL, n 0 or n > 1024.
 */
int zc_sendv(int s, const struct zc_iov *iov, unsigned n, const struct sockaddr_in *to,
             uint32_t flags, unsigned *copied);

/* One datagram of a zc_sendmmsg() batch: a zc_iov with its own destination. */
struct zc_mmsg {
	const void *base;
	uint32_t len;
	uint32_t pad;           /* must be 0 */
	uint64_t user_data;     /* returned in this datagram's completion */
	struct sockaddr_in to;  /* destination; sin_family AF_UNSPEC (0): the connected peer */
};

/*
 * Send `n` datagrams, each to its own destination, with one wake-up of the
 * stack: sendmmsg(2) with a msg_name per message, e.g. a server answering
 * several clients at once. Each element follows zc_send()'s rules with
 * `to` (AF_UNSPEC for the connected peer, as zc_send's NULL). Returns how
 * many elements were accepted (1..n), in order; elements after a failing
 * one are not sent (their buffers stay APP). If the first element fails,
 * its error is returned. `*copied` (optional) receives how many elements
 * were copied. Datagrams to a destination still being resolved (ARP)
 * wait without holding those to other destinations, as for zc_send(). Completions
 * of datagrams for this guest (its address, 127.0.0.0/8) come at once, so
 * they may precede those of earlier elements sent through the network.
 * Errors: those of zc_send() for the failing element, -EINVAL also for
 * msgs NULL, n 0, n > 1024 or pad not 0. Since ZCNET_1.2.
 */
int zc_sendmmsg(int s, const struct zc_mmsg *msgs, unsigned n, uint32_t flags, unsigned *copied);

/* zc_completion.flags */
#define ZC_CQE_F_COPIED (1u << 0) /* the send was a copy-fallback send */

struct zc_completion {
	uint64_t user_data;
	int32_t res;     /* bytes sent, or -errno: -EHOSTUNREACH (the neighbour
	                    never answered ARP, as Linux reports it), -ENETUNREACH
	                    (off the subnet and no zc-stackd --gateway), -EIO (the backend reported an error or drop) */
	uint32_t flags;  /* ZC_CQE_F_* */
};

/*
 * Reap up to `max` send completions. Each hands its buffer back to the
 * application (APP), except copied sends whose internal buffer goes back to
 * FREE. Returns how many were written (0 when none; never blocks).
 * Errors: -EBADF, -EINVAL (out NULL with max > 0).
 */
int zc_completions(int s, struct zc_completion *out, unsigned max);

/* ---- receiving ------------------------------------------------------------- */

/* zc_rxd.flags (bits 0-15; bits 16-31 hold the full length, see below) */
#define ZC_RXD_F_TRUNC (1u << 0) /* the datagram was longer than `len`: cut, as MSG_TRUNC */

struct zc_rxd {
	const void *data;          /* payload, inside the pool, read-only; owner: the application (RX) */
	uint32_t len;              /* payload bytes delivered at `data` */
	uint32_t flags;            /* ZC_RXD_F_*; with ZC_RXD_F_TRUNC, bits 16-31 are the
	                              datagram's full payload length (ZC_RXD_FULL_LEN) */
	struct sockaddr_in from;   /* sender */
};

/* The datagram's payload length as sent: `len`, or more when it was cut
 * (recvmsg(2) with MSG_TRUNC returns the same). UDP payloads are < 65536. */
#define ZC_RXD_FULL_LEN(d) \
	(((d)->flags & ZC_RXD_F_TRUNC) ? (uint32_t)((d)->flags >> 16) : (d)->len)

/*
 * Take up to `max` received datagrams. Each descriptor's buffer is RX until
 * zc_rx_release(). A datagram longer than a receive buffer holds
 * (zc_pool_info's buf_size - headroom: 1984 bytes; only a jumbo frame from
 * the network brings one, a zc send is at most max_payload) or than the
 * socket's rx_max is not dropped: its first bytes are delivered, `len` says
 * how many, and ZC_RXD_F_TRUNC with ZC_RXD_FULL_LEN() says it was cut and
 * how long it was, as recvmsg(2) reports MSG_TRUNC (zc-stackd counts the
 * ones cut to the buffer: rx_truncated). Returns the count; -EAGAIN when none is pending.
 * Errors: -EBADF, -EINVAL (out NULL or max 0), -EAGAIN, -ENOTCONN (the stack service went away and nothing is left).
 */
int zc_recv(int s, struct zc_rxd *out, unsigned max);

/*
 * zc_recv() that waits up to `timeout_ms` milliseconds (-1: no limit, 0:
 * do not wait) for at least one datagram, as recv(2) on a blocking socket
 * with SO_RCVTIMEO. Send completions arriving meanwhile do not end the wait
 * (they stay pending for zc_completions(), and the descriptor stays readable
 * for poll while any are); the stack service does not wake the waiting
 * thread for them, and may collect them from the backend only when the
 * wait ends. Returns the count (1..max).
 * Errors: -EBADF, -EINVAL (out NULL, max 0 or timeout_ms < -1), -EAGAIN
 * (the time passed with nothing received: SO_RCVTIMEO's EAGAIN), -EINTR (a
 * signal handler ran), -ENOTCONN (the stack service went away and nothing
 * is left).
 */
int zc_recv_wait(int s, struct zc_rxd *out, unsigned max, int timeout_ms);

/*
 * Give a received buffer back to the stack. `data` is zc_rxd.data.
 * Errors: -EBADF, -EFAULT (not inside this socket's pool), -EINVAL (inside
 * the pool but never handed out by zc_recv: a send buffer, a receive buffer
 * nothing was received in, or not the start of the received payload),
 * -EALREADY (a received buffer released a second time, or sent on with
 * zc_send: the stack's already), -EAGAIN (release ring full: reap with zc_recv first; the
 * buffer stays RX).
 */
int zc_rx_release(int s, const void *data);

/* ---- statistics ------------------------------------------------------------ */

struct zc_stats {
	size_t sz;             /* sizeof(struct zc_stats) */
	uint64_t zc_sends;     /* datagrams sent without a copy */
	uint64_t copied_sends; /* datagrams copied (fallback) */
	uint64_t completions;  /* completions reaped */
	uint64_t send_errors;  /* completions with res < 0 */
	uint64_t tx_bytes;     /* payload bytes handed to the stack */
	uint64_t rx_packets;   /* datagrams delivered to this socket */
	uint64_t rx_bytes;
	uint64_t rx_drops;     /* datagrams for this socket dropped (no RX buffer or ring full) */
	uint64_t strict_refused; /* sends refused with -EFAULT (strict) */
	/* Since ZCNET 1.2; a struct of the 1.0 size (ZC_STATS_SZ_1_0) is still
	 * accepted and filled up to strict_refused. */
	uint64_t rx_truncated; /* datagrams zc_recv()/zc_recv_wait() handed out cut
	                          (ZC_RXD_F_TRUNC: longer than a receive buffer or rx_max) */
};
/* sizeof(struct zc_stats) of ZCNET 1.0 and 1.1 (before rx_truncated). */
#define ZC_STATS_SZ_1_0 offsetof(struct zc_stats, rx_truncated)

/* Errors: -EBADF, -EINVAL (st NULL or sz smaller than ZC_STATS_SZ_1_0).
 * Bytes of `st` past what this library knows are zeroed. */
int zc_socket_stats(int s, struct zc_stats *st);

/* ---- diagnostics ------------------------------------------------------------ */

/*
 * Send an ICMP echo request from the guest's stack to `dst` and wait up to
 * timeout_ms for the reply. Returns the round-trip time in microseconds.
 * `service` as in zc_socket_opts. Errors: -EINVAL (dst NULL, not AF_INET,
 * address 0, timeout_ms <= 0), -ENOENT/-ECONNREFUSED (no stack service),
 * -ENAMETOOLONG (service path), -ETIMEDOUT (no reply, including no ARP
 * answer), -ENETUNREACH (off the guest's subnet and zc-stackd has no
 * --gateway: answered at once, as ping(8) without a route), -ENOTCONN (the
 * service went away).
 */
int zc_ping(const char *service, const struct sockaddr_in *dst, int timeout_ms);

/* Name of the library's version ("1.2"). */
const char *zc_version(void);

/*
 * The path of the stack service's socket that zc_socket() and zc_ping()
 * connect to for `service`: `service` itself when not NULL or empty, else
 * $ZCNET_STACK_SOCK when set and not empty, else "/run/zcnet/stackd.sock".
 * For error messages that name the path actually tried. Never NULL.
 * Since ZCNET_1.1.
 */
const char *zc_service_path(const char *service);

#ifdef __cplusplus
} /* extern "C" */
#endif

/* Shared layouts (checked where C11 or C++ static assertions exist). */
#if defined(__cplusplus)
static_assert(sizeof(struct zc_iov) == 24, "zc_iov ABI");
static_assert(sizeof(struct zc_mmsg) == 40, "zc_mmsg ABI");
static_assert(sizeof(struct zc_completion) == 16, "zc_completion ABI");
static_assert(sizeof(struct zc_rxd) == 32, "zc_rxd ABI");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct zc_iov) == 24, "zc_iov ABI");
_Static_assert(sizeof(struct zc_mmsg) == 40, "zc_mmsg ABI");
_Static_assert(sizeof(struct zc_completion) == 16, "zc_completion ABI");
_Static_assert(sizeof(struct zc_rxd) == 32, "zc_rxd ABI");
#endif

#endif /* ZCNET_UAPI_ZC_H */
