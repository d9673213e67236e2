// SPDX-License-Identifier: MIT
// zc-netback's XDP program on an uplink (docs/ARCHITECTURE.md, "Uplinks").
// Classifies a received frame by its destination MAC:
//   - the host's own MACs (zc_pass)            -> XDP_PASS (the kernel's stack);
//   - everything else, broadcast and multicast -> the AF_XDP socket bound to
//     the receiving queue (zc_xsks), i.e. zc-netback's switch. Group frames
//     are not also passed to the kernel (XDP cannot clone a frame); with
//     zc_cfg.group_pass set they go to the kernel instead.
// Runts (shorter than an Ethernet header) are dropped and counted; a queue
// without a socket falls back to XDP_PASS (bpf_redirect_map's default).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} zc_xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, __u64);   // MAC in the low 48 bits, first octet most significant
    __type(value, __u32);
} zc_pass SEC(".maps");

struct zc_cfg {
    __u32 group_pass;     // 1: broadcast/multicast to the kernel instead of the socket
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct zc_cfg);
} zc_config SEC(".maps");

// Counters, per CPU: 0 redirected, 1 passed (host MAC), 2 passed (group),
// 3 runts dropped.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} zc_stats SEC(".maps");

static __always_inline void count(__u32 k) {
    __u64* v = bpf_map_lookup_elem(&zc_stats, &k);
    if (v) *v += 1;
}

SEC("xdp")
int zc_uplink(struct xdp_md* ctx) {
    const unsigned char* data = (const unsigned char*)(long)ctx->data;
    const unsigned char* end = (const unsigned char*)(long)ctx->data_end;
    if (data + ETH_HLEN > end) {
        count(3);
        return XDP_DROP;
    }
    if (data[0] & 1) {
        __u32 zero = 0;
        struct zc_cfg* c = bpf_map_lookup_elem(&zc_config, &zero);
        if (c && c->group_pass) {
            count(2);
            return XDP_PASS;
        }
    } else {
        __u64 key = 0;
#pragma unroll
        for (int i = 0; i < 6; i++) key = (key << 8) | data[i];
        if (bpf_map_lookup_elem(&zc_pass, &key)) {
            count(1);
            return XDP_PASS;
        }
    }
    count(0);
    return bpf_redirect_map(&zc_xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual MIT/GPL";
