// SPDX-License-Identifier: MIT
// zc-xenlab-peer: the guest half of the lab's step 1, run inside a domU. It
// grants pages to a domain with libxengntshr (as a real frontend does), offers
// an event channel, and publishes everything under its own xenstore "data"
// directory, which the toolstack makes writable by the guest:
//
//   data/xenlab/rw      "g0 g1"   two read-write pages granted to PEER
//   data/xenlab/ro      "g"       one read-only page granted to PEER
//   data/xenlab/other   "g"       one page granted to OTHER (not to PEER)
//   data/xenlab/ended   "g"       a ref granted, then its access ended
//   data/xenlab/port    "p"       an unbound event channel for PEER
//   data/xenlab/ready   "1"
//
// Each page i is filled with byte (0x10 * domid + i). On every event from
// PEER it writes the FNV-1a hash of rw page 1 to data/xenlab/hash<N>, N
// counting events, and notifies back. Statically linked: the domU initramfs
// has nothing but busybox.
//
// OTHER is the domid dom0 writes to data/xenlab-other once both guests exist.
//
// Usage: zc-xenlab-peer PEER
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

static struct xs_handle* xs;
static char base[64];

static void die(const char* what) {
    fprintf(stderr, "xenlab-peer: %s: %s\n", what, strerror(errno));
    printf("XENLAB-PEER-FAIL %s\n", what);
    fflush(stdout);
    exit(1);
}

static void put(const char* key, const char* val) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", base, key);
    if (!xs_write(xs, XBT_NULL, path, val, strlen(val))) die(path);
}

static uint64_t fnv1a(const unsigned char* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: zc-xenlab-peer PEER\n");
        return 2;
    }
    uint32_t peer = (uint32_t)strtoul(argv[1], NULL, 0);
    setvbuf(stdout, NULL, _IOLBF, 0);

    xs = xs_open(0);
    if (!xs) die("xs_open");
    unsigned len = 0;
    char* o = NULL;
    for (int i = 0; i < 3000 && !o; i++) { // 5 minutes: dom0 is slow under emulation
        o = xs_read(xs, XBT_NULL, "data/xenlab-other", &len);
        if (!o) usleep(100 * 1000);
    }
    if (!o) die("no data/xenlab-other from dom0");
    uint32_t other = (uint32_t)strtoul(o, NULL, 10);
    free(o);
    char* dom = xs_read(xs, XBT_NULL, "domid", &len);
    if (!dom) die("read domid");
    unsigned self = (unsigned)strtoul(dom, NULL, 10);
    free(dom);
    snprintf(base, sizeof base, "data/xenlab");

    xengntshr_handle* sh = xengntshr_open(NULL, 0);
    if (!sh) die("xengntshr_open");
    uint32_t rw[2], ro, oth, ended;
    unsigned char* prw = xengntshr_share_pages(sh, peer, 2, rw, 1);
    unsigned char* pro = xengntshr_share_pages(sh, peer, 1, &ro, 0);
    unsigned char* poth = xengntshr_share_pages(sh, other, 1, &oth, 1);
    if (!prw || !pro || !poth) die("xengntshr_share_pages");
    memset(prw, 0x10 * self + 0, 4096);
    memset(prw + 4096, 0x10 * self + 1, 4096);
    memset(pro, 0x10 * self + 2, 4096);
    memset(poth, 0x10 * self + 3, 4096);
    // Grant then end: the ref stays in the table with its flags cleared.
    unsigned char* pend = xengntshr_share_pages(sh, peer, 1, &ended, 1);
    if (!pend) die("xengntshr_share_pages ended");
    if (xengntshr_unshare(sh, pend, 1)) die("xengntshr_unshare");

    xenevtchn_handle* ev = xenevtchn_open(NULL, 0);
    if (!ev) die("xenevtchn_open");
    xenevtchn_port_or_error_t port = xenevtchn_bind_unbound_port(ev, peer);
    if (port < 0) die("bind_unbound_port");

    char v[64];
    snprintf(v, sizeof v, "%u %u", rw[0], rw[1]);
    put("rw", v);
    snprintf(v, sizeof v, "%u", ro);
    put("ro", v);
    snprintf(v, sizeof v, "%u", oth);
    put("other", v);
    snprintf(v, sizeof v, "%u", ended);
    put("ended", v);
    snprintf(v, sizeof v, "%d", port);
    put("port", v);
    put("ready", "1");
    printf("XENLAB-PEER-READY dom%u rw=%u,%u ro=%u other=%u ended=%u port=%d\n", self, rw[0], rw[1],
           ro, oth, ended, port);

    for (unsigned n = 1;; n++) {
        xenevtchn_port_or_error_t p = xenevtchn_pending(ev); // blocks
        if (p < 0) die("xenevtchn_pending");
        xenevtchn_unmask(ev, (evtchn_port_t)p);
        char key[32];
        snprintf(key, sizeof key, "hash%u", n);
        snprintf(v, sizeof v, "%016" PRIx64, fnv1a(prw + 4096, 4096));
        put(key, v);
        if (xenevtchn_notify(ev, (evtchn_port_t)p)) die("xenevtchn_notify");
    }
}
