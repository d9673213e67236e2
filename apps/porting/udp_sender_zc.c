/* SPDX-License-Identifier: MIT */
/* PORTING.md, right column: the same program on the zc socket API.
 * Usage: udp_sender_zc IP PORT COUNT [SERVICE] */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zc.h" /* link -lzcnet */

static size_t make_record(char *buf, size_t cap, long i) {
	return (size_t)snprintf(buf, cap, "record %ld", i) + 1;
}

int main(int argc, char **argv) {
	if (argc < 4) return 2;
	long count = atol(argv[3]), ok = 0, i;
	struct zc_socket_opts o = {0};
	o.sz = sizeof o;          /* the struct can grow */
	o.flags = ZC_SOCK_STRICT; /* or ZC_SOCK_COPY_FALLBACK while porting */
	o.service = argc > 4 ? argv[4] : NULL;
	int s = zc_socket(&o); /* a real fd, or -errno */
	if (s < 0) {           /* name the stack service socket it tried */
		fprintf(stderr, "zc_socket: %s: %s\n", zc_service_path(o.service), strerror(-s));
		return 1;
	}

	struct sockaddr_in to = {0};
	to.sin_family = AF_INET;
	to.sin_port = htons((uint16_t)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &to.sin_addr);
	if (zc_connect(s, &to) < 0) return 1;

	void *buf; /* a buffer of the socket's pool, reused for every record */
	if (zc_buf_alloc(s, &buf) < 0) return 1;
	for (i = 0; i < count; i++) {
		size_t n = make_record(buf, 1472, i); /* written in place: nothing copies it later */
		if (zc_send(s, buf, n, NULL, 0, (uint64_t)i) < 0) return 1; /* buf is the stack's now */
		struct zc_completion c;
		while (zc_completions(s, &c, 1) == 0) {
			struct pollfd p = {s, POLLIN, 0};
			poll(&p, 1, 1000);
		}
		/* c.user_data == i: buf is ours again */

		struct zc_rxd d;
		/* waits up to 1 s for a datagram (-EAGAIN after); completions do not end it */
		if (zc_recv_wait(s, &d, 1, 1000) == 1) { /* d.data points into the pool */
			if (d.len == n && memcmp(d.data, buf, n) == 0) ok++; /* read in place */
			zc_rx_release(s, d.data); /* give the buffer back */
		}
	}
	zc_buf_free(s, buf);
	zc_close(s); /* not close(2) */
	printf("%ld/%ld acknowledged\n", ok, count);
	return ok == count ? 0 : 3;
}
