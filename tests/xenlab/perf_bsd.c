// SPDX-License-Identifier: MIT
// zc-xenlab-perf: zc-perf's protocol (apps/zc_perf_wire.h) over an ordinary
// kernel UDP socket, the peer of zc-perf and zc-echo in the lab's step 4,
// run in an unmodified Linux guest (kernel netfront). Static: the domU
// initramfs holds busybox and little else. Every result is one marker line
// on stdout, which the guest's console carries to dom0.
//
//   zc-xenlab-perf -s PORT                   zc-perf's server: checks every
//                                            verified DATA byte for byte,
//                                            echoes PING, answers FIN with a
//                                            REPORT (and prints it)
//   zc-xenlab-perf -c IP PORT SECONDS SIZE   zc-perf's client: verified DATA
//                                            for SECONDS, 20 PINGs, FIN;
//                                            exit 0 when the server's REPORT
//                                            came, counts datagrams and none
//                                            corrupt, and PONGs came back
//   zc-xenlab-perf -e IP PORT COUNT SIZE     request/response with an echo
//                                            server (zc-echo -s): COUNT
//                                            datagrams, each echo compared
//                                            byte for byte; exit 0 when all
//                                            came back intact
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "zc_perf_wire.h"

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int udp_socket(int timeout_ms) {
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval tmo = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int big = 4 << 20;
	if (s < 0) return -1;
	(void)setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	if (timeout_ms > 0) (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo);
	return s;
}

static struct sockaddr_in addr_of(const char *ip, int port) {
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	if (ip) inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static int server(int port) {
	int s = udp_socket(0);
	struct sockaddr_in b = addr_of(NULL, port);
	uint32_t session = 0;
	uint64_t received = 0, bytes = 0, corrupt = 0, max_seq = 0;
	static uint8_t p[65536];
	if (s < 0 || bind(s, (struct sockaddr *)&b, sizeof b) < 0) {
		perror("zc-xenlab-perf: bind");
		return 1;
	}
	printf("XENLAB-PERF-SERVER port %d\n", port);
	fflush(stdout);
	for (;;) {
		struct sockaddr_in from;
		socklen_t fl = sizeof from;
		struct zcpf_hdr h;
		ssize_t n = recvfrom(s, p, sizeof p, 0, (struct sockaddr *)&from, &fl);
		if (n < 0) continue;
		memset(&h, 0, sizeof h);
		if ((size_t)n >= sizeof h) memcpy(&h, p, sizeof h);
		if ((size_t)n < sizeof h || h.magic != ZCPF_MAGIC) {
			corrupt++;
		} else if (h.type == ZCPF_DATA) {
			if (h.session != session) { /* a new client run */
				session = h.session;
				received = bytes = corrupt = max_seq = 0;
			}
			received++;
			bytes += (uint64_t)n;
			if (h.seq + 1 > max_seq) max_seq = h.seq + 1;
			if (h.pad && !zcpf_pattern_ok(p, (size_t)n, h.session, h.seq)) corrupt++;
		} else if (h.type == ZCPF_PING) {
			h.type = ZCPF_PONG;
			(void)sendto(s, &h, sizeof h, 0, (struct sockaddr *)&from, fl);
		} else if (h.type == ZCPF_FIN) {
			struct zcpf_report r;
			memset(&r, 0, sizeof r);
			r.h = h;
			r.h.type = ZCPF_REPORT;
			if (h.session == session) {
				r.received = received;
				r.bytes = bytes;
				r.corrupt = corrupt;
				r.max_seq_plus1 = max_seq;
			}
			(void)sendto(s, &r, sizeof r, 0, (struct sockaddr *)&from, fl);
			printf("XENLAB-PERF-SERVED from %s received=%llu bytes=%llu corrupt=%llu\n", inet_ntoa(from.sin_addr),
			       (unsigned long long)r.received, (unsigned long long)r.bytes, (unsigned long long)r.corrupt);
			fflush(stdout);
		}
	}
}

static int client(const char *ip, int port, double seconds, size_t size) {
	int s = udp_socket(1000);
	struct sockaddr_in to = addr_of(ip, port);
	uint32_t session = (uint32_t)(now_ns() ^ ((uint64_t)getpid() << 16)) | 1;
	uint64_t seq = 0, until, pongs = 0;
	static uint8_t p[2048];
	struct zcpf_report rep;
	int have = 0, i;
	if (size < sizeof(struct zcpf_hdr)) size = sizeof(struct zcpf_hdr);
	if (size > 1472) size = 1472;
	if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof to) < 0) {
		perror("zc-xenlab-perf: connect");
		return 1;
	}
	until = now_ns() + (uint64_t)(seconds * 1e9);
	while (now_ns() < until) {
		struct zcpf_hdr h = {ZCPF_MAGIC, ZCPF_DATA, session, 1, seq, now_ns()};
		zcpf_pattern(p, size, session, seq);
		memcpy(p, &h, sizeof h);
		if (send(s, p, size, 0) == (ssize_t)size) seq++;
		else if (errno != ENOBUFS && errno != EAGAIN) perror("zc-xenlab-perf: send");
	}
	for (i = 0; i < 20; i++) { /* request/response */
		struct zcpf_hdr h = {ZCPF_MAGIC, ZCPF_PING, session, 0, (uint64_t)i, now_ns()}, r;
		int tries;
		if (send(s, &h, sizeof h, 0) < 0) continue;
		for (tries = 0; tries < 3; tries++) {
			ssize_t n = recv(s, &r, sizeof r, 0);
			if (n == (ssize_t)sizeof r && r.magic == ZCPF_MAGIC && r.type == ZCPF_PONG && r.session == session &&
			    r.seq == (uint64_t)i) {
				pongs++;
				break;
			}
			if (n < 0) break; /* the timeout: lost */
		}
	}
	for (i = 0; i < 10 && !have; i++) {
		struct zcpf_hdr h = {ZCPF_MAGIC, ZCPF_FIN, session, 0, 0, now_ns()};
		int tries;
		if (send(s, &h, sizeof h, 0) < 0) continue;
		for (tries = 0; tries < 50 && !have; tries++) {
			ssize_t n = recv(s, &rep, sizeof rep, 0);
			if (n < 0) break;
			have = n == (ssize_t)sizeof rep && rep.h.magic == ZCPF_MAGIC && rep.h.type == ZCPF_REPORT &&
			       rep.h.session == session;
		}
	}
	printf("XENLAB-PERF-CLIENT %s to %s:%d sent=%llu received=%llu corrupt=%llu pongs=%llu/20 size=%zu\n",
	       have && rep.received > 0 && rep.corrupt == 0 && pongs > 0 ? "ok" : "bad", ip, port,
	       (unsigned long long)seq, have ? (unsigned long long)rep.received : 0ull,
	       have ? (unsigned long long)rep.corrupt : 0ull, (unsigned long long)pongs, size);
	fflush(stdout);
	return have && rep.received > 0 && rep.corrupt == 0 && pongs > 0 ? 0 : 3;
}

static int echo(const char *ip, int port, int count, size_t size) {
	int s = udp_socket(1000), i, ok = 0;
	struct sockaddr_in to = addr_of(ip, port);
	static uint8_t p[2048], r[2048];
	uint32_t session = (uint32_t)now_ns() | 1;
	if (size < sizeof(struct zcpf_hdr)) size = sizeof(struct zcpf_hdr);
	if (size > 1472) size = 1472;
	if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof to) < 0) {
		perror("zc-xenlab-perf: connect");
		return 1;
	}
	for (i = 0; i < count; i++) {
		struct zcpf_hdr h = {ZCPF_MAGIC, ZCPF_DATA, session, 1, (uint64_t)i, 0};
		int tries, got = 0;
		zcpf_pattern(p, size, session, (uint64_t)i);
		memcpy(p, &h, sizeof h);
		/* A datagram or its echo may be lost while ARP settles: send again. */
		for (tries = 0; tries < 5 && !got; tries++) {
			if (send(s, p, size, 0) < 0) continue;
			for (;;) {
				ssize_t n = recv(s, r, sizeof r, 0);
				if (n < 0) break;
				if ((size_t)n == size && memcmp(r, p, size) == 0) {
					got = 1;
					break;
				}
				/* an older echo (sent twice): read on */
			}
		}
		ok += got;
	}
	printf("XENLAB-ECHO %s %d/%d intact from %s:%d size=%zu\n", ok == count ? "ok" : "bad", ok, count, ip, port,
	       size);
	fflush(stdout);
	return ok == count ? 0 : 3;
}

int main(int argc, char **argv) {
	if (argc == 3 && !strcmp(argv[1], "-s")) return server(atoi(argv[2]));
	if (argc == 6 && !strcmp(argv[1], "-c")) return client(argv[2], atoi(argv[3]), atof(argv[4]), (size_t)atol(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "-e")) return echo(argv[2], atoi(argv[3]), atoi(argv[4]), (size_t)atol(argv[5]));
	fprintf(stderr, "usage: zc-xenlab-perf -s PORT | -c IP PORT SECONDS SIZE | -e IP PORT COUNT SIZE\n");
	return 2;
}
