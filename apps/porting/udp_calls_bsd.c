/* SPDX-License-Identifier: MIT */
/* apps/porting/udp_calls_zc.c's BSD original, call for call: three UDP
 * sockets of one host talking over 127.0.0.1 (local delivery). A server
 * binds PORT, a client connects to it (a connected socket takes only its
 * peer's datagrams), a stranger sends the client a datagram that must not
 * arrive, receives wait with a timeout, the server answers the client and
 * the stranger in one batch (sendmmsg). Prints what it saw; the zc program
 * prints the same lines (tests/porting_calls_check.sh compares them).
 * Usage: udp_calls_bsd PORT */
#define _GNU_SOURCE /* sendmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int udp(void) {
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval tmo = {0, 200000}; /* recv waits up to 200 ms */
	if (s >= 0) setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo);
	return s;
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

/* One datagram of text: the kernel copies it out of `text`. */
static int send_text(int s, const char *text, const struct sockaddr_in *to) {
	ssize_t n = to ? sendto(s, text, strlen(text), 0, (const struct sockaddr *)to, sizeof *to)
	               : send(s, text, strlen(text), 0);
	return n < 0 ? -errno : 0;
}

/* Two datagrams, each to its own destination, in one system call. */
static int send_two(int s, const char *t0, const struct sockaddr_in *to0, const char *t1,
                    const struct sockaddr_in *to1) {
	struct iovec io[2] = {{(void *)t0, strlen(t0)}, {(void *)t1, strlen(t1)}};
	struct mmsghdr m[2];
	memset(m, 0, sizeof m);
	m[0].msg_hdr.msg_name = (void *)to0;
	m[1].msg_hdr.msg_name = (void *)to1;
	for (int i = 0; i < 2; i++) {
		m[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
		m[i].msg_hdr.msg_iov = &io[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	return sendmmsg(s, m, 2, 0) == 2 ? 0 : -1;
}

/* Wait (up to 200 ms) for one datagram and print it, or the error. */
static void recv_text(int s, const char *who, struct sockaddr_in *from) {
	char buf[1472];
	socklen_t fl = sizeof *from;
	ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)from, &fl);
	if (n < 0) {
		printf("%s: %s\n", who, errno == EAGAIN ? "EAGAIN (nothing within 200 ms)" : strerror(errno));
		return;
	}
	printf("%s: \"%.*s\"\n", who, (int)n, buf); /* a copy: nothing to give back */
}

int main(int argc, char **argv) {
	if (argc != 2) return 2;
	unsigned port = (unsigned)atoi(argv[1]);
	int srv = udp(), cli = udp(), stranger = udp();
	if (srv < 0 || cli < 0 || stranger < 0) return 1;
	struct sockaddr_in a = addr("0.0.0.0", port), me, from, from2;
	socklen_t len = sizeof me;

	if (bind(srv, (struct sockaddr *)&a, sizeof a) < 0) return perror("bind"), 1;
	getsockname(srv, (struct sockaddr *)&me, &len);
	say_addr("server bound to", &me);

	a = addr("127.0.0.1", port); /* loopback: never leaves the host */
	if (connect(cli, (struct sockaddr *)&a, sizeof a) < 0) return perror("connect"), 1;
	len = sizeof me;
	getsockname(cli, (struct sockaddr *)&me, &len); /* the ephemeral port it got */
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

	close(stranger);
	close(cli);
	close(srv);
	return 0;
}
