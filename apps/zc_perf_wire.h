/* SPDX-License-Identifier: MIT */
/*
 * zc-perf's datagrams, shared by zc-perf (zc_perf.cpp, the zc socket API)
 * and tests/xenlab/perf_bsd.c (the same protocol over a kernel UDP socket,
 * the peer of zc-perf in an unmodified Linux guest). C11 and C++.
 *
 * Every datagram starts with a zcpf_hdr. DATA (client -> server) carries a
 * sequence number; with pad = 1 its payload after the header is
 * zcpf_pattern(session, seq), which the server checks byte for byte. PING
 * is echoed as PONG with the same header. FIN asks for a REPORT of what the
 * server received in that session.
 */
#ifndef ZC_PERF_WIRE_H
#define ZC_PERF_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { ZCPF_DATA = 1, ZCPF_PING = 2, ZCPF_PONG = 3, ZCPF_FIN = 4, ZCPF_REPORT = 5 };
#define ZCPF_MAGIC 0x7a637066u /* "zcpf" */

struct zcpf_hdr {
	uint32_t magic, type, session, pad; /* pad: 1 = the payload is the pattern */
	uint64_t seq;
	uint64_t t_ns;
};

struct zcpf_report {
	struct zcpf_hdr h;
	uint64_t received, bytes, corrupt, max_seq_plus1;
};

/* Payload after the header: 64-bit words derived from (session, seq, i). */
static inline void zcpf_pattern(uint8_t *p, size_t len, uint32_t session, uint64_t seq) {
	uint64_t x = (((uint64_t)session << 32) ^ seq) * 0x9E3779B97F4A7C15ull + 1;
	size_t i = sizeof(struct zcpf_hdr);
	for (; i + 8 <= len; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
	for (; i < len; i++) p[i] = (uint8_t)(seq + i);
}

/* Whether p[sizeof hdr, len) is the pattern of (session, seq). */
static inline int zcpf_pattern_ok(const uint8_t *p, size_t len, uint32_t session, uint64_t seq) {
	uint8_t tmp[2048];
	if (len > sizeof tmp || len < sizeof(struct zcpf_hdr)) return 0;
	zcpf_pattern(tmp, len, session, seq);
	return memcmp(p + sizeof(struct zcpf_hdr), tmp + sizeof(struct zcpf_hdr), len - sizeof(struct zcpf_hdr)) == 0;
}

#endif
