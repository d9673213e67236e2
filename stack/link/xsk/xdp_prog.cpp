// SPDX-License-Identifier: MIT
// Loading, attaching and detaching zc_uplink (bpf/zc_uplink.bpf.c) with
// libbpf. docs/ARCHITECTURE.md, "Uplinks".
#include "link/xdp_prog.hpp"

#include <linux/if_link.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/log.hpp"

// The compiled object, embedded at build time (stack/CMakeLists.txt).
extern const unsigned char zc_uplink_bpf_obj[];
extern const unsigned long zc_uplink_bpf_obj_len;

namespace zc::link {

namespace {
constexpr const char* tag = "xsk";

void set_why(std::string* why, const std::string& s) {
    if (why) *why = s;
}

// Name of the program with kernel id `id` ("" when it cannot be read).
std::string prog_name_of(uint32_t id) {
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) return {};
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    std::string name;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) name = info.name;
    ::close(fd);
    return name;
}

// A program a crashed run of ours left on `ifindex` is detached; anybody
// else's is left alone and refused.
int clear_stale(int ifindex, std::string* why) {
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    if (int rc = bpf_xdp_query(ifindex, 0, &q); rc < 0) {
        set_why(why, std::string("querying XDP programs: ") + std::strerror(-rc));
        return rc;
    }
    struct {
        uint32_t id;
        uint32_t flags;
    } slots[] = {{q.drv_prog_id, XDP_FLAGS_DRV_MODE}, {q.skb_prog_id, XDP_FLAGS_SKB_MODE}};
    for (auto& s : slots) {
        if (s.id == 0) continue;
        const std::string name = prog_name_of(s.id);
        if (name != xdp_prog::prog_name) {
            set_why(why, "interface already has XDP program '" + name + "' (id " + std::to_string(s.id) +
                             "), not zc-netback's; remove it first");
            return -EBUSY;
        }
        ZC_LOG(warn, tag, "ifindex %d: replacing a stale %s program (id %u) from an earlier run", ifindex,
               xdp_prog::prog_name, s.id);
        if (int rc = bpf_xdp_detach(ifindex, s.flags, nullptr); rc < 0) {
            set_why(why, std::string("detaching the stale program: ") + std::strerror(-rc));
            return rc;
        }
    }
    return 0;
}
} // namespace

struct xdp_prog::state {
    bpf_object* obj = nullptr;
    int prog_fd = -1;
    int ifindex = 0;
    uint32_t flags = 0;
    bool attached = false;
    int xsks = -1, pass = -1, config = -1, stats = -1;

    ~state() {
        if (attached) {
            LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = prog_fd);
            // Only if ours is still the one attached (old_prog_fd).
            int rc = bpf_xdp_detach(ifindex, flags | XDP_FLAGS_REPLACE, &o);
            if (rc < 0) ZC_LOG(warn, tag, "ifindex %d: detaching %s: %s", ifindex, prog_name, std::strerror(-rc));
            else ZC_LOG(info, tag, "ifindex %d: %s detached", ifindex, prog_name);
        }
        if (obj) bpf_object__close(obj);
    }
};

xdp_prog::xdp_prog(std::unique_ptr<state> s) noexcept : _s(std::move(s)) {}
xdp_prog::~xdp_prog() = default;

int ensure_bpffs() noexcept {
    struct statfs st{};
    if (::statfs("/sys/fs/bpf", &st) == 0 && st.f_type == BPF_FS_MAGIC) return 0;
    if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0) return -errno;
    ZC_LOG(info, tag, "mounted bpffs on /sys/fs/bpf");
    return 0;
}

result<std::unique_ptr<xdp_prog>> xdp_prog::attach(int ifindex, bool skb, std::string* why) noexcept {
    auto s = std::make_unique<state>();
    s->ifindex = ifindex;
    s->flags = skb ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
    if (int rc = ensure_bpffs(); rc < 0) ZC_LOG(warn, tag, "bpffs: %s (not needed by zc_uplink)", std::strerror(-rc));
    LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = "zc_uplink");
    s->obj = bpf_object__open_mem(zc_uplink_bpf_obj, zc_uplink_bpf_obj_len, &oo);
    if (!s->obj) {
        int e = errno;
        set_why(why, std::string("opening the embedded XDP object: ") + std::strerror(e));
        return err(-e);
    }
    if (int rc = bpf_object__load(s->obj); rc < 0) {
        set_why(why, std::string("loading the XDP program (needs CAP_BPF/CAP_NET_ADMIN): ") + std::strerror(-rc));
        return err(rc);
    }
    bpf_program* p = bpf_object__find_program_by_name(s->obj, prog_name);
    s->prog_fd = p ? bpf_program__fd(p) : -1;
    s->xsks = bpf_object__find_map_fd_by_name(s->obj, "zc_xsks");
    s->pass = bpf_object__find_map_fd_by_name(s->obj, "zc_pass");
    s->config = bpf_object__find_map_fd_by_name(s->obj, "zc_config");
    s->stats = bpf_object__find_map_fd_by_name(s->obj, "zc_stats");
    if (s->prog_fd < 0 || s->xsks < 0 || s->pass < 0 || s->config < 0 || s->stats < 0) {
        set_why(why, "the embedded XDP object lacks its program or maps");
        return err(-ENOENT);
    }
    if (int rc = clear_stale(ifindex, why); rc < 0) return err(rc);
    if (int rc = bpf_xdp_attach(ifindex, s->prog_fd, s->flags | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr); rc < 0) {
        set_why(why, std::string("attaching XDP in ") + (skb ? "generic (skb)" : "driver") +
                         " mode: " + std::strerror(-rc));
        return err(rc);
    }
    s->attached = true;
    return std::unique_ptr<xdp_prog>(new xdp_prog(std::move(s)));
}

int xdp_prog::xsks_map_fd() const noexcept { return _s->xsks; }

int xdp_prog::add_pass_mac(const uint8_t* mac) noexcept {
    uint64_t key = 0;
    for (int i = 0; i < 6; ++i) key = (key << 8) | mac[i];
    uint32_t one = 1;
    return bpf_map_update_elem(_s->pass, &key, &one, BPF_ANY) < 0 ? -errno : 0;
}

int xdp_prog::set_group_pass(bool pass) noexcept {
    uint32_t zero = 0, v = pass ? 1 : 0;
    return bpf_map_update_elem(_s->config, &zero, &v, BPF_ANY) < 0 ? -errno : 0;
}

xdp_prog_counters xdp_prog::counters() const noexcept {
    xdp_prog_counters c;
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return c;
    std::vector<uint64_t> v(static_cast<size_t>(ncpu));
    uint64_t* out[] = {&c.redirected, &c.passed_host, &c.passed_group, &c.runts};
    for (uint32_t k = 0; k < 4; ++k) {
        if (bpf_map_lookup_elem(_s->stats, &k, v.data()) < 0) continue;
        for (uint64_t x : v) *out[k] += x;
    }
    return c;
}

} // namespace zc::link
