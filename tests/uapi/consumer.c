/* SPDX-License-Identifier: MIT */
/* A tiny consumer of zc.h, compiled as C11 (consumer.c) and as C++20
 * (consumer.cpp includes this file): the header must be clean in both. It
 * needs no stack service: it checks argument validation only. */
#if !defined(__cplusplus) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* setenv */
#endif
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "zc.h"

#ifdef __cplusplus
#define CONSUMER_LANG "C++"
#else
#define CONSUMER_LANG "C"
#endif

int main(void) {
	struct zc_socket_opts o;
	struct zc_stats st;
	memset(&o, 0, sizeof o);
	if (zc_socket(NULL) != -EINVAL) return 1;
	o.sz = sizeof o - 1; /* too small */
	if (zc_socket(&o) != -EINVAL) return 2;
	o.sz = sizeof o;
	o.flags = 0x80; /* unknown flag */
	if (zc_socket(&o) != -EINVAL) return 3;
	o.flags = ZC_SOCK_COPY_FALLBACK;
	o.service = "/nonexistent/zc-stackd.sock";
	if (zc_socket(&o) != -ENOENT) return 4;
	memset(&st, 0, sizeof st);
	st.sz = sizeof st;
	if (zc_socket_stats(12345, &st) != -EBADF) return 5;
	if (zc_close(-1) != -EBADF) return 6;
	if (strcmp(zc_version(), "1.2") != 0) return 7;
	/* the path zc_socket() tried above, for its error message */
	if (strcmp(zc_service_path(o.service), o.service) != 0) return 8;
	if (setenv("ZCNET_STACK_SOCK", "/x/env.sock", 1) != 0 || strcmp(zc_service_path(NULL), "/x/env.sock") != 0) return 9;
	if (setenv("ZCNET_STACK_SOCK", "", 1) != 0 || strcmp(zc_service_path(""), "/run/zcnet/stackd.sock") != 0) return 10;
	/* A program built against 1.0/1.1 passes the struct without rx_max. */
	o.sz = ZC_SOCKET_OPTS_SZ_1_0;
	if (zc_socket(&o) != -ENOENT) return 11;
	o.sz = ZC_SOCKET_OPTS_SZ_1_0 + 4; /* a size that cuts a field */
	if (zc_socket(&o) != -EINVAL) return 12;
	o.sz = sizeof o;
	o.pad = 1;
	if (zc_socket(&o) != -EINVAL) return 13;
	o.pad = 0;
	if (zc_sendmmsg(12345, NULL, 1, 0, NULL) != -EBADF) return 16; /* ZCNET_1.2 */
	{
		struct zc_rxd d;
		memset(&d, 0, sizeof d);
		d.len = 100;
		d.flags = ZC_RXD_F_TRUNC | 3000u << 16;
		if (ZC_RXD_FULL_LEN(&d) != 3000) return 14;
		d.flags = 0;
		if (ZC_RXD_FULL_LEN(&d) != 100) return 15;
	}
	printf("zc.h consumer (%s) ok, libzcnet %s\n", CONSUMER_LANG, zc_version());
	return 0;
}
