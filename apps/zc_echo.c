/* SPDX-License-Identifier: MIT */
/*
 * zc-echo: UDP echo server and client on the zc socket API, in plain C11.
 *
 *   zc-echo -s [--port P] [--count N]            echo every datagram back
 *   zc-echo -c IP [--port P] [--count N] [--size N]
 *
 * The server answers from the receive buffer itself: zc_send() of the
 * received data hands the buffer back to the stack, which sends it without
 * a copy and reuses it for later datagrams once the send completed (zc.h,
 * BUFFER OWNERSHIP), so an echo costs no copy in the application.
 * The client sends --count datagrams with a pattern, checks every echo and
 * exits 0 when all came back intact.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zc.h"

static int wait_in(int s, int ms) {
	struct pollfd p = {s, POLLIN, 0};
	return poll(&p, 1, ms) == 1;
}

static int open_sock(const char *service) {
	struct zc_socket_opts o;
	int s;
	memset(&o, 0, sizeof o);
	o.sz = sizeof o;
	o.flags = ZC_SOCK_STRICT;
	o.service = service;
	s = zc_socket(&o);
	if (s < 0) fprintf(stderr, "zc-echo: zc_socket: %s: %s\n", zc_service_path(service), strerror(-s));
	return s;
}

static void reap(int s) {
	struct zc_completion c[32];
	while (zc_completions(s, c, 32) > 0) {
	}
}

/* Send a received datagram back from its own buffer (user_data 0: nothing
 * to free at its completion). On failure the buffer is still ours: release it. */
static int echo_in_place(int s, const struct zc_rxd *d) {
	int rc, i;
	for (i = 0; (rc = zc_send(s, d->data, d->len, &d->from, 0, 0)) == -EAGAIN && i < 1000; i++) {
		reap(s);
		wait_in(s, 1);
	}
	if (rc < 0) zc_rx_release(s, d->data);
	return rc;
}

/* Send len bytes of data from a pool buffer; the buffer is freed on its completion. */
static int send_copy(int s, const void *data, size_t len, const struct sockaddr_in *to) {
	void *b = NULL;
	int rc, i;
	struct zc_completion c[32];
	for (i = 0; (rc = zc_buf_alloc(s, &b)) == -ENOBUFS && i < 1000; i++) {
		int n = zc_completions(s, c, 32), k;
		for (k = 0; k < n; k++) zc_buf_free(s, (void *)(uintptr_t)c[k].user_data);
		wait_in(s, 1);
	}
	if (rc < 0) return rc;
	memcpy(b, data, len);
	while ((rc = zc_send(s, b, len, to, 0, (uint64_t)(uintptr_t)b)) == -EAGAIN) wait_in(s, 1);
	if (rc < 0) zc_buf_free(s, b);
	return rc;
}

static void free_completed(int s) {
	struct zc_completion c[32];
	int n, k;
	while ((n = zc_completions(s, c, 32)) > 0)
		for (k = 0; k < n; k++)
			if (c[k].user_data) zc_buf_free(s, (void *)(uintptr_t)c[k].user_data);
}

static int server(const char *service, unsigned port, long count) {
	struct sockaddr_in a;
	long echoed = 0;
	int s = open_sock(service), rc;
	if (s < 0) return 1;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	if ((rc = zc_bind(s, &a)) < 0) {
		fprintf(stderr, "zc-echo: bind: %s\n", strerror(-rc));
		return 1;
	}
	fprintf(stderr, "zc-echo: server on port %u\n", port);
	while (count < 0 || echoed < count) {
		struct zc_rxd d[16];
		int n = zc_recv(s, d, 16), k;
		if (n == -EAGAIN) {
			free_completed(s);
			wait_in(s, 100);
			continue;
		}
		if (n < 0) {
			fprintf(stderr, "zc-echo: recv: %s\n", strerror(-n));
			return 1;
		}
		for (k = 0; k < n; k++)
			if (echo_in_place(s, &d[k]) >= 0) echoed++;
		reap(s);
	}
	/* Let the last echoes complete before the socket goes. */
	for (rc = 0; rc < 100; rc++) {
		free_completed(s);
		wait_in(s, 5);
	}
	zc_close(s);
	return 0;
}

static int client(const char *service, const char *ip, unsigned port, long count, size_t size) {
	struct sockaddr_in to;
	unsigned char msg[1472];
	long i, ok = 0;
	int s = open_sock(service), rc;
	if (s < 0) return 1;
	if (size < 8 || size > sizeof msg) size = 64;
	memset(&to, 0, sizeof to);
	to.sin_family = AF_INET;
	to.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, ip, &to.sin_addr) != 1) return 2;
	if ((rc = zc_connect(s, &to)) < 0) {
		fprintf(stderr, "zc-echo: connect: %s\n", strerror(-rc));
		return 1;
	}
	for (i = 0; i < count; i++) {
		int w, got = 0;
		size_t j;
		for (j = 0; j < size; j++) msg[j] = (unsigned char)(i * 7 + j);
		memcpy(msg, &i, sizeof i < size ? sizeof i : size);
		if ((rc = send_copy(s, msg, size, NULL)) < 0) {
			fprintf(stderr, "zc-echo: send: %s\n", strerror(-rc));
			return 1;
		}
		for (w = 0; w < 2000 && !got; w++) {
			struct zc_rxd d[4];
			int n = zc_recv(s, d, 4), k;
			for (k = 0; k < n; k++) {
				if (d[k].len == size && memcmp(d[k].data, msg, size) == 0) got = 1;
				zc_rx_release(s, d[k].data);
			}
			free_completed(s);
			if (!got) wait_in(s, 1);
		}
		ok += got;
	}
	reap(s);
	printf("zc-echo: %ld/%ld echoes intact\n", ok, count);
	zc_close(s);
	return ok == count ? 0 : 3;
}

int main(int argc, char **argv) {
	const char *service = NULL, *ip = NULL;
	unsigned port = 7;
	long count = -1;
	size_t size = 64;
	int srv = 0, i;
	for (i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(k, "-s")) { srv = 1; continue; }
		if (!v) goto usage;
		i++;
		if (!strcmp(k, "-c")) ip = v;
		else if (!strcmp(k, "--port")) port = (unsigned)atoi(v);
		else if (!strcmp(k, "--count")) count = atol(v);
		else if (!strcmp(k, "--size")) size = (size_t)atol(v);
		else if (!strcmp(k, "--service")) service = v;
		else goto usage;
	}
	if (srv == !!ip) goto usage;
	if (srv) return server(service, port, count);
	return client(service, ip, port, count < 0 ? 10 : count, size);
usage:
	fputs("usage: zc-echo -s [--port P] [--count N] [--service PATH]\n"
	      "       zc-echo -c IP [--port P] [--count N] [--size N] [--service PATH]\n", stderr);
	return 2;
}
