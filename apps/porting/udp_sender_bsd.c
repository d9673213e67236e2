/* SPDX-License-Identifier: MIT */
/* PORTING.md, left column: send COUNT records to IP:PORT over a BSD UDP
 * socket, wait for each one's echo. Usage: udp_sender_bsd IP PORT COUNT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static size_t make_record(char *buf, size_t cap, long i) {
	return (size_t)snprintf(buf, cap, "record %ld", i) + 1;
}

int main(int argc, char **argv) {
	if (argc != 4) return 2;
	long count = atol(argv[3]), ok = 0, i;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) return 1;

	struct sockaddr_in to = {0};
	to.sin_family = AF_INET;
	to.sin_port = htons((uint16_t)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &to.sin_addr);
	if (connect(s, (struct sockaddr *)&to, sizeof to) < 0) return 1;
	struct timeval tmo = {1, 0}; /* recv waits up to 1 s */
	if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo) < 0) return 1;

	for (i = 0; i < count; i++) {
		char buf[1472]; /* the app's memory */
		size_t n = make_record(buf, sizeof buf, i);
		if (send(s, buf, n, 0) < 0) return 1; /* the kernel copies buf */
		/* buf is free again as soon as send returns */

		char ack[1472];
		ssize_t r = recv(s, ack, sizeof ack, 0); /* waits (EAGAIN after 1 s), copies out */
		if (r == (ssize_t)n && memcmp(ack, buf, n) == 0) ok++;
	}
	close(s);
	printf("%ld/%ld acknowledged\n", ok, count);
	return ok == count ? 0 : 3;
}
