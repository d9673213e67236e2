/* SPDX-License-Identifier: MIT */
/* zc-ping: ICMP echo from this guest's stack service (zc-stackd) to IP.
 *   zc-ping [--service PATH] [-c COUNT] [-W TIMEOUT_MS] IP
 * Exit 0 when every echo was answered. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zc.h"

int main(int argc, char **argv) {
	const char *service = NULL, *ip = NULL;
	int count = 3, timeout = 1000, i, ok = 0;
	struct sockaddr_in dst;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--service") && i + 1 < argc) service = argv[++i];
		else if (!strcmp(argv[i], "-c") && i + 1 < argc) count = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-W") && i + 1 < argc) timeout = atoi(argv[++i]);
		else if (argv[i][0] != '-' && !ip) ip = argv[i];
		else ip = NULL, i = argc;
	}
	memset(&dst, 0, sizeof dst);
	dst.sin_family = AF_INET;
	if (!ip || inet_pton(AF_INET, ip, &dst.sin_addr) != 1) {
		fputs("usage: zc-ping [--service PATH] [-c COUNT] [-W TIMEOUT_MS] IP\n", stderr);
		return 2;
	}
	for (i = 0; i < count; i++) {
		int rtt = zc_ping(service, &dst, timeout);
		if (rtt >= 0) {
			printf("reply from %s: seq=%d time=%d.%03d ms\n", ip, i + 1, rtt / 1000, rtt % 1000);
			ok++;
		} else {
			printf("no reply from %s: seq=%d: %s\n", ip, i + 1, strerror(-rtt));
			if (rtt == -ENOENT || rtt == -ECONNREFUSED || rtt == -EACCES || rtt == -ENAMETOOLONG) {
				fprintf(stderr, "zc-ping: stack service %s: %s\n", zc_service_path(service), strerror(-rtt));
				return 1; /* no service: every further try fails the same way */
			}
		}
		if (i + 1 < count) usleep(100000);
	}
	printf("%d packets transmitted, %d received\n", count, ok);
	return ok == count ? 0 : 1;
}
