// SPDX-License-Identifier: MIT
// The AF_XDP link (xsk.hpp) on libxdp's xsk API: UMEM registration, the
// fill/completion/RX/TX rings, mode selection and need_wakeup. See Linux
// Documentation/networking/af_xdp.rst for the ring protocol.
#include "link/xsk.hpp"

#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xdp/xsk.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/log.hpp"

namespace zc::link {

namespace {
constexpr const char* tag = "xsk";
constexpr uint32_t frame_size = 4096; // one UMEM frame = one pool buffer = one page

void set_why(std::string* why, const std::string& s) {
    if (why) *why = s;
}
bool pow2(uint32_t v) { return v && !(v & (v - 1)); }
} // namespace

const char* to_string(xdp_mode m) noexcept {
    switch (m) {
    case xdp_mode::any: return "any";
    case xdp_mode::zc: return "zc";
    case xdp_mode::copy: return "copy";
    case xdp_mode::skb: return "skb";
    }
    return "?";
}

std::optional<xdp_mode> parse_xdp_mode(std::string_view s) noexcept {
    if (s == "any" || s == "auto") return xdp_mode::any;
    if (s == "zc") return xdp_mode::zc;
    if (s == "copy") return xdp_mode::copy;
    if (s == "skb") return xdp_mode::skb;
    return std::nullopt;
}

struct xsk_link::state {
    xsk_options opt;
    xdp_mode mode = xdp_mode::any;
    int ifindex = 0;
    uint8_t mac[6] = {};
    uint32_t mtu = 1500;
    std::unique_ptr<pool::pool> pool;
    std::vector<uint32_t> cookie; // per UMEM frame: its pool buffer's cookie while out of the pool
    std::vector<uint8_t> in_kernel; // per UMEM frame: posted on the fill or TX ring, not yet back
    uint8_t* base = nullptr;
    std::unique_ptr<xdp_prog> prog;
    xsk_umem* umem = nullptr;
    xsk_socket* xsk = nullptr;
    xsk_ring_prod fill{};
    xsk_ring_cons comp{};
    xsk_ring_cons rx{};
    xsk_ring_prod tx{};
    std::mutex tx_lock; // the TX and completion rings
    bool starved = false;
    std::vector<pool::buffer> scratch;
#define ZC_XSK_CTR_(n) std::atomic<uint64_t> n{0};
    ZC_XSK_CTR_(rx_frames) ZC_XSK_CTR_(rx_bytes) ZC_XSK_CTR_(tx_frames) ZC_XSK_CTR_(tx_bytes)
    ZC_XSK_CTR_(tx_ring_full) ZC_XSK_CTR_(fill_starved) ZC_XSK_CTR_(rx_wakeups) ZC_XSK_CTR_(tx_wakeups)
    ZC_XSK_CTR_(rx_bad_desc)
#undef ZC_XSK_CTR_

    ~state() {
        close_socket();
        // The rings are gone: what the kernel held comes back to the pool.
        for (uint32_t i = 0; i < in_kernel.size(); ++i)
            if (in_kernel[i]) (void)pool->free(pool::buffer{i, cookie[i]});
    }
    void close_socket() {
        if (xsk) xsk_socket__delete(xsk);
        xsk = nullptr;
        if (umem) xsk_umem__delete(umem);
        umem = nullptr;
        prog.reset();
    }
    int fd() const { return xsk_socket__fd(xsk); }

    pool::frame frame_at(uint64_t addr, uint32_t len) const {
        pool::frame f;
        f.kind = pool::seg_kind::local;
        f.owner = pool.get();
        f.buf = uint32_t(addr / frame_size);
        f.cookie = cookie[f.buf];
        f.offset = uint16_t(addr % frame_size);
        f.len = uint16_t(len);
        return f;
    }
    int try_mode(xdp_mode m, std::string* why);
    void refill();
    void reap_completions();
    void kick_tx();
};

// One mode: attach the program (driver or generic), register the UMEM and
// bind the socket with that mode's flags.
int xsk_link::state::try_mode(xdp_mode m, std::string* why) {
    close_socket();
    auto p = xdp_prog::attach(ifindex, m == xdp_mode::skb, why);
    if (!p) return p.error();
    prog = std::move(*p);
    xsk_umem_config uc{};
    uc.fill_size = opt.ring;
    uc.comp_size = opt.ring;
    uc.frame_size = frame_size;
    uc.frame_headroom = 0;
    uc.flags = 0;
    if (int rc = xsk_umem__create(&umem, base, uint64_t(opt.frames) * frame_size, &fill, &comp, &uc); rc < 0) {
        umem = nullptr;
        set_why(why, std::string("registering the UMEM: ") + std::strerror(-rc));
        return rc;
    }
    xsk_socket_config sc{};
    sc.rx_size = opt.ring;
    sc.tx_size = opt.ring;
    sc.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD; // our own program (xdp_prog)
    sc.xdp_flags = m == xdp_mode::skb ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
    sc.bind_flags = uint16_t((m == xdp_mode::zc ? XDP_ZEROCOPY : XDP_COPY) | XDP_USE_NEED_WAKEUP);
    // -EBUSY: a socket closed a moment ago still holds the queue (the
    // kernel releases it asynchronously); wait for it, up to a second.
    int rc = 0;
    for (int tries = 0; tries < 50; ++tries) {
        rc = xsk_socket__create(&xsk, opt.ifname.c_str(), opt.queue, umem, &rx, &tx, &sc);
        if (rc != -EBUSY) break;
        ::usleep(20000);
    }
    if (rc < 0) {
        xsk = nullptr;
        set_why(why, std::string("binding an AF_XDP socket in ") + to_string(m) + " mode: " + std::strerror(-rc) +
                         (m == xdp_mode::zc && (rc == -EOPNOTSUPP || rc == -EPROTONOSUPPORT || rc == -EINVAL)
                              ? " (the driver has no AF_XDP zero-copy support; veth never has)"
                              : ""));
        return rc;
    }
    if (int rc = xsk_socket__update_xskmap(xsk, prog->xsks_map_fd()); rc < 0) {
        set_why(why, std::string("adding the socket to the XSKMAP: ") + std::strerror(-rc));
        return rc;
    }
    return 0;
}

// Keep the fill ring stocked from the pool (receive thread only).
void xsk_link::state::refill() {
    const uint32_t want = xsk_prod_nb_free(&fill, opt.ring);
    scratch.clear();
    while (scratch.size() < want) {
        auto b = pool->alloc();
        if (!b) break;
        scratch.push_back(*b);
    }
    starved = scratch.size() < want && xsk_prod_nb_free(&fill, opt.ring) == opt.ring;
    if (scratch.size() < want) fill_starved.fetch_add(1, std::memory_order_relaxed);
    uint32_t idx = 0;
    const uint32_t got = xsk_ring_prod__reserve(&fill, uint32_t(scratch.size()), &idx);
    for (uint32_t i = 0; i < got; ++i) {
        cookie[scratch[i].index] = scratch[i].cookie;
        in_kernel[scratch[i].index] = 1;
        *xsk_ring_prod__fill_addr(&fill, idx + i) = uint64_t(scratch[i].index) * frame_size;
    }
    for (size_t i = got; i < scratch.size(); ++i) (void)pool->free(scratch[i]);
    if (got) xsk_ring_prod__submit(&fill, got);
    if (xsk_ring_prod__needs_wakeup(&fill)) {
        rx_wakeups.fetch_add(1, std::memory_order_relaxed);
        (void)::recvfrom(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
    }
}

// Under tx_lock: ask the kernel to send what the TX ring holds. In copy and
// SKB mode a sendto() transmits at most a small batch (Linux
// xsk_generic_xmit: TX_BATCH_SIZE) and answers EAGAIN while more is left,
// so kick until the ring is empty or the kernel stops making progress; in
// zero-copy mode the driver sends and a wakeup is needed only when it asks.
void xsk_link::state::kick_tx() {
    for (int k = 0; k < 256 && xsk_prod_nb_free(&tx, opt.ring) < opt.ring; ++k) {
        if (!xsk_ring_prod__needs_wakeup(&tx)) break;
        tx_wakeups.fetch_add(1, std::memory_order_relaxed);
        if (::sendto(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0 && errno != EAGAIN && errno != EBUSY &&
            errno != ENOBUFS)
            break;
        reap_completions();
    }
}

// Under tx_lock: sent frames go back to the pool.
void xsk_link::state::reap_completions() {
    uint32_t idx = 0;
    const uint32_t n = xsk_ring_cons__peek(&comp, opt.ring, &idx);
    for (uint32_t i = 0; i < n; ++i) {
        const uint64_t addr = *xsk_ring_cons__comp_addr(&comp, idx + i);
        if (addr / frame_size >= opt.frames) continue;
        pool::frame f = frame_at(addr - addr % frame_size, 0);
        in_kernel[f.buf] = 0;
        (void)pool->release(f);
    }
    if (n) xsk_ring_cons__release(&comp, n);
}

xsk_link::xsk_link(std::unique_ptr<state> s) noexcept : _s(std::move(s)) {}
xsk_link::~xsk_link() = default;

result<std::unique_ptr<xsk_link>> xsk_link::open(const xsk_options& o, std::string* why) noexcept {
    if (!pow2(o.frames) || !pow2(o.ring) || o.ring * 2 > o.frames || o.batch == 0 || o.batch > o.ring) {
        set_why(why, "bad AF_XDP sizes: frames and ring powers of two, ring <= frames / 2, 0 < batch <= ring");
        return err(-EINVAL);
    }
    auto s = std::make_unique<state>();
    s->opt = o;
    s->ifindex = int(::if_nametoindex(o.ifname.c_str()));
    if (s->ifindex == 0) {
        set_why(why, "no interface " + o.ifname);
        return err(-ENODEV);
    }
    {
        int sk = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, o.ifname.c_str(), IFNAMSIZ - 1);
        if (sk >= 0 && ::ioctl(sk, SIOCGIFHWADDR, &ifr) == 0) std::memcpy(s->mac, ifr.ifr_hwaddr.sa_data, 6);
        if (sk >= 0 && ::ioctl(sk, SIOCGIFMTU, &ifr) == 0) s->mtu = uint32_t(ifr.ifr_mtu);
        if (sk >= 0) ::close(sk);
    }
    // The UMEM: one chunk of a local pool, page aligned, never grown.
    pool::pool_options po;
    po.buf_size = frame_size;
    po.chunk_pages = o.frames;
    po.initial_chunks = 1;
    po.max_pages = o.frames;
    po.max_grants = o.frames;
    auto p = pool::pool::create(po, nullptr);
    if (!p) {
        set_why(why, "allocating the UMEM");
        return err(p.error());
    }
    s->pool = std::move(*p);
    s->base = s->pool->data(0);
    if (s->pool->data(o.frames - 1) != s->base + size_t(o.frames - 1) * frame_size) {
        set_why(why, "the UMEM pool is not one contiguous chunk");
        return err(-EINVAL);
    }
    s->cookie.assign(o.frames, 0);
    s->in_kernel.assign(o.frames, 0);
    const xdp_mode order_any[] = {xdp_mode::zc, xdp_mode::copy, xdp_mode::skb};
    std::string last;
    int rc = -EOPNOTSUPP;
    for (xdp_mode m : order_any) {
        if (o.mode != xdp_mode::any && m != o.mode) continue;
        std::string w;
        rc = s->try_mode(m, &w);
        if (rc == 0) {
            s->mode = m;
            break;
        }
        if (o.mode == xdp_mode::any) ZC_LOG(info, tag, "%s: %s mode unavailable: %s", o.ifname.c_str(), to_string(m), w.c_str());
        last = w;
    }
    if (rc < 0) {
        s->close_socket();
        set_why(why, o.ifname + ": " + (o.mode == xdp_mode::any ? "no AF_XDP mode works; last: " : "") + last);
        return err(rc);
    }
    ZC_LOG(info, tag, "%s queue %u: AF_XDP in %s mode (%u frames, ring %u, batch %u)", o.ifname.c_str(), o.queue,
           to_string(s->mode), o.frames, o.ring, o.batch);
    s->refill();
    return std::unique_ptr<xsk_link>(new xsk_link(std::move(s)));
}

xdp_mode xsk_link::mode() const noexcept { return _s->mode; }
const std::string& xsk_link::ifname() const noexcept { return _s->opt.ifname; }
int xsk_link::ifindex() const noexcept { return _s->ifindex; }
const uint8_t* xsk_link::if_mac() const noexcept { return _s->mac; }
uint32_t xsk_link::mtu() const noexcept { return _s->mtu; }
uint32_t xsk_link::max_frame() const noexcept { return frame_size; }
xdp_prog& xsk_link::prog() noexcept { return *_s->prog; }
pool::pool& xsk_link::umem() noexcept { return *_s->pool; }

uint32_t xsk_link::receive(pool::frame* out, uint32_t max) noexcept {
    state& s = *_s;
    s.refill();
    {
        std::lock_guard g(s.tx_lock);
        s.reap_completions();
    }
    uint32_t idx = 0;
    const uint32_t n = xsk_ring_cons__peek(&s.rx, std::min(max, s.opt.batch), &idx);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const xdp_desc* d = xsk_ring_cons__rx_desc(&s.rx, idx + i);
        const uint64_t addr = xsk_umem__extract_addr(d->addr) + xsk_umem__extract_offset(d->addr);
        if (addr / frame_size >= s.opt.frames || addr % frame_size + d->len > frame_size) {
            s.rx_bad_desc.fetch_add(1, std::memory_order_relaxed); // not ours to give back
            continue;
        }
        out[k] = s.frame_at(addr, d->len);
        s.in_kernel[out[k].buf] = 0;
        ++k;
        s.rx_bytes.fetch_add(d->len, std::memory_order_relaxed);
    }
    if (n) xsk_ring_cons__release(&s.rx, n);
    s.rx_frames.fetch_add(k, std::memory_order_relaxed);
    return k;
}

int xsk_link::wait(int extra_fd, int timeout_ms) noexcept {
    // Starved (every UMEM frame is out): frames come back from other
    // threads without a wakeup, so look again soon.
    if (_s->starved && (timeout_ms < 0 || timeout_ms > 5)) timeout_ms = 5;
    pollfd p[2] = {{_s->fd(), POLLIN, 0}, {extra_fd, POLLIN, 0}};
    const int n = ::poll(p, extra_fd >= 0 ? 2 : 1, timeout_ms);
    return n > 0 && extra_fd >= 0 ? p[1].revents : 0;
}

int xsk_link::alloc_tx(pool::frame& f) noexcept {
    state& s = *_s;
    int rc = s.pool->alloc_frame(f, 0);
    if (rc < 0) {
        std::lock_guard g(s.tx_lock);
        s.reap_completions();
        rc = s.pool->alloc_frame(f, 0);
    }
    return rc < 0 ? -ENOBUFS : 0;
}

uint32_t xsk_link::send(pool::frame* fs, uint32_t n) noexcept {
    state& s = *_s;
    std::lock_guard g(s.tx_lock);
    s.reap_completions();
    uint32_t idx = 0;
    // reserve() is all or nothing: ask for what fits.
    const uint32_t room = xsk_prod_nb_free(&s.tx, n);
    const uint32_t got = xsk_ring_prod__reserve(&s.tx, std::min(n, room), &idx);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < got; ++i) {
        xdp_desc* d = xsk_ring_prod__tx_desc(&s.tx, idx + i);
        d->addr = uint64_t(fs[i].buf) * frame_size + fs[i].offset;
        d->len = fs[i].len;
        d->options = 0;
        s.cookie[fs[i].buf] = fs[i].cookie;
        s.in_kernel[fs[i].buf] = 1;
        bytes += fs[i].len;
    }
    for (uint32_t i = got; i < n; ++i) (void)s.pool->release(fs[i]);
    if (got < n) s.tx_ring_full.fetch_add(n - got, std::memory_order_relaxed);
    if (got) {
        xsk_ring_prod__submit(&s.tx, got);
        s.tx_frames.fetch_add(got, std::memory_order_relaxed);
        s.tx_bytes.fetch_add(bytes, std::memory_order_relaxed);
    }
    s.kick_tx();
    return got;
}

xsk_counters xsk_link::counters() const noexcept {
    const state& s = *_s;
    xsk_counters c;
#define ZC_XSK_LOAD_(n) c.n = s.n.load(std::memory_order_relaxed);
    ZC_XSK_LOAD_(rx_frames) ZC_XSK_LOAD_(rx_bytes) ZC_XSK_LOAD_(tx_frames) ZC_XSK_LOAD_(tx_bytes)
    ZC_XSK_LOAD_(tx_ring_full) ZC_XSK_LOAD_(fill_starved) ZC_XSK_LOAD_(rx_wakeups) ZC_XSK_LOAD_(tx_wakeups)
    ZC_XSK_LOAD_(rx_bad_desc)
#undef ZC_XSK_LOAD_
    return c;
}

} // namespace zc::link
