/* SPDX-License-Identifier: MIT */
/* apps/porting/udp_calls_bsd.c ported to zc.h, call for call: three zc
 * sockets of one guest talking over 127.0.0.1 (zc-stackd delivers between
 * its own sockets). zc_getsockname for getsockname, zc_connect's peer
 * filter for connect's, zc_recv_wait for recv with SO_RCVTIMEO,
 * zc_rx_release where BSD's recv copied, zc_sendmmsg for sendmmsg.
 * Prints the same lines as the BSD
 * program (tests/porting_calls_check.sh compares them).
 * Usage: udp_calls_zc PORT [SERVICE] */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zc.h" /* link -lzcnet */

static const char *service;

static int udp(void) {
	struct zc_socket_opts o = {0};
	o.sz = sizeof o;
	o.flags = ZC_SOCK_STRICT;
	o.service = service;
	return zc_socket(&o); /* the 200 ms go to each zc_recv_wait */
}

static struct sockaddr_in addr(const char *ip, unsigned port) {
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void say_addr(const char *who, const struct sockaddr_in *a) {
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
	printf("%s %s:%u\n", who, ip, (unsigned)ntohs(a->sin_port));
}

/* One datagram of text, written into a pool buffer; the buffer is ours
 * again with its completion (at once for a socket of the same guest). */
static int send_text(int s, const char *text, const struct sockaddr_in *to) {
	void *buf;
	struct zc_completion c;
	int rc = zc_buf_alloc(s, &buf);
	if (rc < 0) return rc;
	memcpy(buf, text, strlen(text));
	rc = zc_send(s, buf, strlen(text), to, 0, 0); /* to NULL: the connected peer */
	if (rc < 0) return zc_buf_free(s, buf), rc;
	while ((rc = zc_completions(s, &c, 1)) == 0) {
		struct pollfd p = {s, POLLIN, 0};
		if (poll(&p, 1, 1000) == 0) return -ETIMEDOUT;
	}
	if (rc < 0) return rc;
	zc_buf_free(s, buf);
	return c.res < 0 ? c.res : 0;
}

/* Two datagrams, each to its own destination, with one wake-up of the
 * stack; both buffers are ours again with their completions. */
static int send_two(int s, const char *t0, const struct sockaddr_in *to0, const char *t1,
                    const struct sockaddr_in *to1) {
	struct zc_mmsg m[2];
	struct zc_completion c[2];
	int i, rc, got = 0;
	memset(m, 0, sizeof m);
	m[0].to = *to0;
	m[1].to = *to1;
	for (i = 0; i < 2; i++) {
		void *buf;
		const char *t = i ? t1 : t0;
		if ((rc = zc_buf_alloc(s, &buf)) < 0) return rc;
		memcpy(buf, t, strlen(t));
		m[i].base = buf;
		m[i].len = (uint32_t)strlen(t);
	}
	if ((rc = zc_sendmmsg(s, m, 2, 0, NULL)) != 2) return rc < 0 ? rc : -EAGAIN;
	while (got < 2) {
		struct pollfd p = {s, POLLIN, 0};
		if ((rc = zc_completions(s, c + got, (unsigned)(2 - got))) < 0) return rc;
		got += rc;
		if (got < 2 && poll(&p, 1, 1000) == 0) return -ETIMEDOUT;
	}
	for (i = 0; i < 2; i++) zc_buf_free(s, (void *)m[i].base);
	return c[0].res < 0 ? c[0].res : c[1].res < 0 ? c[1].res : 0;
}

/* Wait (up to 200 ms) for one datagram and print it, or the error. */
static void recv_text(int s, const char *who, struct sockaddr_in *from) {
	struct zc_rxd d;
	int n = zc_recv_wait(s, &d, 1, 200);
	if (n < 0) {
		printf("%s: %s\n", who, n == -EAGAIN ? "EAGAIN (nothing within 200 ms)" : strerror(-n));
		return;
	}
	*from = d.from;
	printf("%s: \"%.*s\"\n", who, (int)d.len, (const char *)d.data); /* read in place */
	zc_rx_release(s, d.data); /* the buffer goes back to the stack */
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	unsigned port = (unsigned)atoi(argv[1]);
	service = argc > 2 ? argv[2] : NULL;
	int srv = udp(), cli = udp(), stranger = udp();
	if (srv < 0 || cli < 0 || stranger < 0) {
		fprintf(stderr, "zc_socket: %s: %s\n", zc_service_path(service), strerror(-(srv < 0 ? srv : cli < 0 ? cli : stranger)));
		return 1;
	}
	struct sockaddr_in a = addr("0.0.0.0", port), me, from, from2;

	if (zc_bind(srv, &a) < 0) return fprintf(stderr, "zc_bind failed\n"), 1;
	zc_getsockname(srv, &me);
	say_addr("server bound to", &me);

	a = addr("127.0.0.1", port); /* loopback: never leaves the guest */
	if (zc_connect(cli, &a) < 0) return fprintf(stderr, "zc_connect failed\n"), 1;
	zc_getsockname(cli, &me); /* the ephemeral port it got */
	printf("client connected from 127.0.0.1: %s, ephemeral port: %s\n",
	       me.sin_addr.s_addr == htonl(INADDR_LOOPBACK) ? "yes" : "no", me.sin_port ? "yes" : "no");

	if (send_text(cli, "ping", NULL) < 0) return 1;
	recv_text(srv, "server got", &from);
	printf("from the client's address and port: %s\n",
	       from.sin_addr.s_addr == me.sin_addr.s_addr && from.sin_port == me.sin_port ? "yes" : "no");

	if (send_text(stranger, "junk", &me) < 0) return 1; /* not the peer: dropped */
	a = addr("127.0.0.1", port);
	if (send_text(stranger, "hi", &a) < 0) return 1;
	recv_text(srv, "server got", &from2);
	if (send_two(srv, "pong", &from, "bye", &from2) < 0) return 1; /* one batch, two peers */
	recv_text(cli, "client got", &a);
	recv_text(stranger, "stranger got", &a);
	recv_text(cli, "client got", &a); /* the stranger's "junk" never comes */

	zc_close(stranger); /* not close(2) */
	zc_close(cli);
	zc_close(srv);
	return 0;
}
