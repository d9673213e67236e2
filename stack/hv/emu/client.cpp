// SPDX-License-Identifier: MIT
#include "hv/emu/client.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.hpp"
#include "hv/emu/proto.hpp"

namespace zc::hv::emu {

namespace {
constexpr const char* tag = "emu-client";

using proto::req;

std::string env_token() {
    const char* e = std::getenv("ZCNET_EMU_TOKEN");
    return e ? e : "";
}

} // namespace

std::string default_socket() {
    const char* e = std::getenv("ZCNET_EMU_SOCK");
    if (e && *e) return e;
    return "/run/zcnet-emu/broker.sock";
}

struct client::reply {
    proto::reply_header h{};
    std::string text;
    int fds[proto::max_fds];
    int nfds = 0;
    void close_fds() noexcept {
        for (int i = 0; i < nfds; i++) ::close(fds[i]);
        nfds = 0;
    }
};

int client::call_rc(const void* req, size_t len) noexcept {
    reply rep;
    return call(req, len, rep);
}

int client::call_fd(const void* req, size_t len, uint32_t* a, uint32_t* b, int* fd) noexcept {
    reply rep;
    int rc = call(req, len, rep);
    if (rc < 0) return rc;
    if (rep.nfds != 1) {
        rep.close_fds();
        return -EPROTO;
    }
    *a = rep.h.a;
    *b = rep.h.b;
    *fd = rep.fds[0];
    return rc;
}

int client::call(const void* req, size_t len, reply& out) noexcept {
    std::lock_guard<std::mutex> g(_call_lock);
    return call_locked(req, len, out);
}

int client::call_locked(const void* req, size_t len, reply& out) noexcept {
    long rc = fdpass::send(_fd, req, len, _pending_fd >= 0 ? &_pending_fd : nullptr, _pending_fd >= 0 ? 1 : 0);
    _pending_fd = -1;
    if (rc < 0) return int(rc);
    char buf[proto::max_reply];
    out.nfds = proto::max_fds;
    long n = fdpass::recv(_fd, buf, sizeof buf, out.fds, &out.nfds);
    if (n < 0) return int(n);
    if (n == 0) return -ECONNRESET; // the broker went away
    if (size_t(n) < sizeof out.h) {
        out.close_fds();
        return -EPROTO;
    }
    std::memcpy(&out.h, buf, sizeof out.h);
    size_t tl = std::min<size_t>(out.h.text_len, size_t(n) - sizeof out.h);
    out.text.assign(buf + sizeof out.h, tl);
    if (out.h.rc < 0) out.close_fds();
    return out.h.rc;
}

namespace {
void* map_ro(int fd, size_t bytes) noexcept {
    void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}
void* map_rw(int fd, size_t bytes) noexcept {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}

// A domain's address range: its base memory, then every region's frame
// window (layout.hpp, "memory regions").
size_t memory_span(uint32_t mem_pages) noexcept {
    return (size_t(mem_pages) + size_t(region_slots) * region_max_pages) * page_size;
}

// Reserve the whole range (no memory behind it), then put the base memory
// at its start; regions are placed into their windows when first used.
uint8_t* map_memory(int fd, uint32_t mem_pages) noexcept {
    void* area = ::mmap(nullptr, memory_span(mem_pages), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) return nullptr;
    void* p = ::mmap(area, size_t(mem_pages) * page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        ::munmap(area, memory_span(mem_pages));
        return nullptr;
    }
    return static_cast<uint8_t*>(area);
}

// The fds of a hello/get_domain/get_evtchn reply, unpacked by domain_fd
// (-1 where the broker sent none, proto.hpp). False if the mask and the
// count disagree; the fds are closed then.
bool unpack_fds(const proto::reply_header& h, int* packed, int n, int* out) noexcept {
    int k = 0;
    for (int i = 0; i < proto::n_domain_fds; i++) out[i] = (h.d & (1u << i)) && k < n ? packed[k++] : -1;
    if (k == n && !(h.d >> proto::n_domain_fds) && out[proto::fd_bindings] >= 0 && out[proto::fd_bitmaps] >= 0 &&
        out[proto::fd_registry] >= 0)
        return true;
    for (int i = 0; i < n; i++) ::close(packed[i]);
    return false;
}

// Map the tables of a domain from unpacked reply fds into `v`. Takes
// ownership of the fds (mem_fd is kept open, the others are closed once
// mapped, the registry fd is left to the caller). `self`: our own domain,
// whose active table is private to this process (broker.hpp).
int map_domain(domid_t d, const proto::reply_header& h, const int* fds, domain_view& v, bool self) noexcept {
    v.dom = d;
    v.generation = h.a;
    v.mem_pages = h.b;
    v.nr_grefs = h.c;
    const size_t active_bytes = size_t(v.nr_grefs) * sizeof(active_entry);
    bool ok = true;
    if (fds[proto::fd_mem] >= 0) {
        v.mem_fd = fds[proto::fd_mem];
        v.mem = map_memory(fds[proto::fd_mem], v.mem_pages);
        v.rmap.reset(new (std::nothrow) region_map);
        ok = ok && v.mem && v.rmap;
    }
    if (fds[proto::fd_gnttab] >= 0) {
        v.gnttab = static_cast<grant_entry_v1_t*>(map_rw(fds[proto::fd_gnttab], size_t(v.nr_grefs) * sizeof(grant_entry_v1_t)));
        ok = ok && v.gnttab;
    }
    if (fds[proto::fd_active] >= 0) {
        v.active = static_cast<active_entry*>(map_rw(fds[proto::fd_active], active_bytes));
        ok = ok && v.active;
    } else if (self) {
        void* p = ::mmap(nullptr, active_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        v.active = p == MAP_FAILED ? nullptr : static_cast<active_entry*>(p);
        ok = ok && v.active;
    }
    v.bindings = static_cast<const evtchn_binding*>(map_ro(fds[proto::fd_bindings], bindings_memfd_bytes));
    if (v.bindings)
        v.regions = reinterpret_cast<const region_slot*>(reinterpret_cast<const uint8_t*>(v.bindings) +
                                                         evtchn_bindings_bytes);
    v.bitmaps = static_cast<evtchn_bitmaps*>(map_rw(fds[proto::fd_bitmaps], sizeof(evtchn_bitmaps)));
    for (int i = proto::fd_gnttab; i < proto::n_domain_fds; i++)
        if (i != proto::fd_registry && fds[i] >= 0) ::close(fds[i]);
    if (!ok || !v.bindings || !v.bitmaps) return -ENOMEM;
    if (self && (!v.mem || !v.gnttab)) return -EPROTO;
    return 0;
}

void unmap_domain(domain_view& v) noexcept {
    if (v.mem) ::munmap(v.mem, memory_span(v.mem_pages));
    if (v.gnttab) ::munmap(v.gnttab, size_t(v.nr_grefs) * sizeof(grant_entry_v1_t));
    if (v.active) ::munmap(v.active, size_t(v.nr_grefs) * sizeof(active_entry));
    if (v.bindings) ::munmap(const_cast<evtchn_binding*>(v.bindings), bindings_memfd_bytes);
    if (v.bitmaps) ::munmap(v.bitmaps, sizeof(evtchn_bitmaps));
    if (v.mem_fd >= 0) ::close(v.mem_fd);
    v = domain_view{};
}
} // namespace

int client::dial(client& c, const std::string& path, std::string* why) noexcept {
    c._fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c._fd < 0) return -errno;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) {
        if (why) *why = "emu: broker socket path too long: " + path;
        return -ENAMETOOLONG;
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(c._fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        int e = errno;
        if (why)
            *why = "emu: cannot reach the emulated hypervisor at " + path + ": " + std::strerror(e) +
                   " (start it with `zc-emu up`)";
        return -e;
    }
    return 0;
}

result<std::unique_ptr<client>> client::connect_admin(const std::string& sock, std::string* why,
                                                      const std::string& token) noexcept {
    std::unique_ptr<client> c(new client());
    const std::string path = sock.empty() ? default_socket() : sock;
    std::string hex = token;
    if (hex.empty()) {
        // The toolstack's token lives beside the socket (broker.hpp); a
        // domain's program has its own token in $ZCNET_EMU_TOKEN, which is
        // no admin token, so the file comes first.
        const std::string file = path.substr(0, path.rfind('/') + 1) + "admin.token";
        int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[2 * proto::token_bytes];
            ssize_t n = ::read(fd, buf, sizeof buf);
            ::close(fd);
            if (n > 0) hex.assign(buf, size_t(n));
        }
    }
    if (hex.empty()) hex = env_token();
    if (int rc = dial(*c, path, why); rc < 0) return err(rc);
    if (!proto::parse_token_hex(hex, c->_token)) {
        if (why) *why = "emu: no admin token (admin.token beside " + path + ", or ZCNET_EMU_TOKEN)";
        return err(-EACCES);
    }
    return c;
}

result<std::unique_ptr<client>> client::connect(const connect_options& o, std::string* why) noexcept {
    std::string path = o.sock.empty() ? default_socket() : o.sock;
    domid_t dom = o.dom;
    if (dom == domid_invalid) {
        const char* e = std::getenv("ZCNET_DOMID");
        char* end = nullptr;
        long v = e ? std::strtol(e, &end, 10) : -1;
        if (!e || !*e || *end || v < 0 || v >= long(max_domains)) {
            if (why) *why = "emu: no domain id (set ZCNET_DOMID, or run under `zc-emu run --dom N`)";
            return err(-EINVAL);
        }
        dom = domid_t(v);
    }
    if (dom >= max_domains) {
        if (why) *why = "emu: domid out of range (0.." + std::to_string(max_domains - 1) + ")";
        return err(-EINVAL);
    }
    std::unique_ptr<client> c(new client());
    static_assert(sizeof c->_token == proto::token_bytes);
    if (int rc = dial(*c, path, why); rc < 0) return err(rc);
    const std::string hex = o.token.empty() ? env_token() : o.token;
    if (!proto::parse_token_hex(hex, c->_token)) {
        if (why)
            *why = "emu: domain " + std::to_string(dom) +
                   ": no token (set ZCNET_EMU_TOKEN, or run under `zc-emu run --dom N`)";
        return err(-EACCES);
    }
    uint32_t flags = (o.attach ? proto::hello_attach : 0u) | (o.privileged ? proto::hello_privileged : 0u);
    proto::request r = req(proto::op::hello, dom, o.mem_pages, flags, proto::version);
    std::memcpy(r.token, c->_token, sizeof r.token);
    reply rep;
    int rc = c->call(&r, sizeof r, rep);
    if (rc < 0) {
        if (why)
            *why = "emu: domain " + std::to_string(dom) + ": " +
                   (rc == -EEXIST   ? std::string("already running")
                    : rc == -EACCES ? std::string("the broker refused our token")
                                    : std::string(std::strerror(-rc)));
        return err(rc);
    }
    int fds[proto::n_domain_fds];
    if (rep.text.size() < proto::token_bytes || !unpack_fds(rep.h, rep.fds, rep.nfds, fds)) {
        if (rep.text.size() < proto::token_bytes) rep.close_fds();
        return err(-EPROTO);
    }
    c->_registry = static_cast<const registry_slot*>(map_ro(fds[proto::fd_registry], registry_bytes));
    ::close(fds[proto::fd_registry]);
    rc = map_domain(dom, rep.h, fds, c->_self, true);
    if (rc < 0 || !c->_registry) return err(rc < 0 ? rc : -ENOMEM);
    c->_domain_token = proto::token_hex(reinterpret_cast<const uint8_t*>(rep.text.data()));
    c->_xs_path = rep.text.substr(proto::token_bytes);
    return c;
}

void client::unmap_view(domain_view& v) noexcept { unmap_domain(v); }

client::~client() {
    for (auto& v : _live) unmap_domain(*v);
    for (auto& v : _retired) unmap_domain(*v);
    unmap_domain(_self);
    for (auto& [k, fd] : _handle_fds) ::close(fd);
    if (_registry) ::munmap(const_cast<registry_slot*>(_registry), registry_bytes);
    if (_fd >= 0) ::close(_fd);
}

bool client::alive(domid_t d) const noexcept {
    return d < max_domains && _registry[d].state.load(std::memory_order_acquire) == dom_alive;
}

result<const domain_view*> client::view(domid_t d) noexcept { return fetch_view(d, false); }

result<const domain_view*> client::evtchn_view(domid_t d) noexcept { return fetch_view(d, true); }

// The fast path is two atomic loads (the registry's generation, _cur); the
// slow path asks the broker and installs the view (client_views.cpp).
result<const domain_view*> client::fetch_view(domid_t d, bool evtchn_only) noexcept {
    if (d >= max_domains || !alive(d)) return err(-ESRCH);
    uint32_t gen = _registry[d].generation.load(std::memory_order_acquire);
    if (d == _self.dom) return &_self;
    // A full view serves both; an evtchn-only one only evtchn_view().
    if (const domain_view* v = cached_view(d, gen)) return v;
    const kept_view* v = nullptr;
    if (evtchn_only && (v = _ev_cur[d].load(std::memory_order_seq_cst)) && v->generation == gen)
        return static_cast<const domain_view*>(v);
    proto::request r = req(evtchn_only ? proto::op::get_evtchn : proto::op::get_domain, d, 0, 0, 0);
    reply rep;
    int rc = call(&r, sizeof r, rep);
    if (rc < 0) {
        if (rc == -EPERM) ZC_LOG(debug, tag, "d%u: the broker refused domain %u's memory (not privileged)",
                                 unsigned(_self.dom), unsigned(d));
        return err(rc);
    }
    int fds[proto::n_domain_fds];
    if (!unpack_fds(rep.h, rep.fds, rep.nfds, fds)) return err(-EPROTO);
    ::close(fds[proto::fd_registry]);
    auto nv = std::make_unique<kept_view>();
    nv->evtchn_only = evtchn_only;
    rc = map_domain(d, rep.h, fds, *nv, false);
    if (rc == 0 && !evtchn_only && (!nv->mem || !nv->gnttab || !nv->active)) rc = -EPROTO;
    if (rc < 0) {
        unmap_domain(*nv);
        return err(rc);
    }
    return install_view(std::move(nv));
}

result<uint16_t> client::evtchn_open(int efd) noexcept {
    proto::request r = req(proto::op::evtchn_open, 0, 0, 0, 0);
    reply rep;
    std::lock_guard<std::mutex> g(_call_lock);
    _pending_fd = efd;
    int rc = call_locked(&r, sizeof r, rep);
    if (rc < 0) return err(rc);
    return uint16_t(rc);
}

void client::evtchn_close(uint16_t handle) noexcept {
    proto::request r = req(proto::op::evtchn_close, handle, 0, 0, 0);
    reply rep;
    (void)call(&r, sizeof r, rep);
    sweep(); // a backend lets go of a dead frontend's channels
}

result<evtchn_port_t> client::evtchn_alloc_unbound(uint16_t handle, domid_t remote) noexcept {
    proto::request r = req(proto::op::evtchn_alloc_unbound, handle, remote, 0, 0);
    reply rep;
    int rc = call(&r, sizeof r, rep);
    if (rc < 0) return err(rc);
    return evtchn_port_t(rc);
}

result<evtchn_port_t> client::evtchn_bind_interdomain(uint16_t handle, domid_t remote, evtchn_port_t rport) noexcept {
    proto::request r = req(proto::op::evtchn_bind, handle, remote, rport, 0);
    reply rep;
    int rc = call(&r, sizeof r, rep);
    if (rc < 0) return err(rc);
    return evtchn_port_t(rc);
}

int client::evtchn_unbind(evtchn_port_t port) noexcept {
    proto::request r = req(proto::op::evtchn_unbind, port, 0, 0, 0);
    reply rep;
    const int rc = call(&r, sizeof r, rep);
    sweep(); // as evtchn_close
    return rc;
}

result<int> client::evtchn_handle_fd(const domain_view& v, uint16_t handle) noexcept {
    const uint64_t key = (uint64_t(v.generation) << 32) | (uint64_t(v.dom) << 16) | handle;
    {
        std::lock_guard<std::mutex> g(_views_lock);
        auto it = _handle_fds.find(key);
        if (it != _handle_fds.end()) return it->second;
    }
    proto::request r = req(proto::op::evtchn_handle_fd, v.dom, handle, 0, 0);
    reply rep;
    int rc = call(&r, sizeof r, rep);
    if (rc < 0) return err(rc);
    if (rep.nfds != 1) {
        rep.close_fds();
        return err(-EPROTO);
    }
    std::lock_guard<std::mutex> g(_views_lock);
    auto [it, inserted] = _handle_fds.emplace(key, rep.fds[0]);
    if (!inserted) ::close(rep.fds[0]);
    return it->second;
}

// The broker's side is foreign.cpp.
client::foreign_page client::grant_pin(domid_t granter, gref_t ref, bool readonly, bool mapflag) noexcept {
    const uint32_t flags = (readonly ? proto::pin_readonly : 0u) | (mapflag ? proto::pin_map : 0u);
    proto::request r = proto::req(proto::op::grant_pin, granter, ref, flags, 0);
    reply rep;
    foreign_page out;
    if (call(&r, sizeof r, rep) < 0) return out;
    out.status = int16_t(uint16_t(rep.h.a));
    if (out.status != GNTST_okay || rep.nfds != 1 || rep.h.b >= region_max_pages) {
        rep.close_fds();
        if (out.status == GNTST_okay) {
            // A reply we cannot use: give the pin back rather than keep it.
            (void)grant_unpin(granter, rep.h.c, ref, readonly);
            out.status = GNTST_general_error;
        }
        return out;
    }
    out.fd = rep.fds[0];
    out.offset = uint64_t(rep.h.b) * page_size;
    out.gen = rep.h.c;
    return out;
}

int client::grant_unpin(domid_t granter, uint32_t gen, gref_t ref, bool readonly) noexcept {
    proto::request r = proto::req(proto::op::grant_unpin, granter, ref, readonly ? proto::pin_readonly : 0u, gen);
    return call_rc(&r, sizeof r);
}

result<std::vector<domid_t>> client::list_domains() noexcept {
    proto::request r = req(proto::op::list_domains, 0, 0, 0, 0);
    std::memcpy(r.token, _token, sizeof r.token);
    reply rep;
    int rc = call(&r, sizeof r, rep);
    if (rc < 0) return err(rc);
    std::vector<domid_t> ids(rep.text.size() / sizeof(uint16_t));
    if (!ids.empty()) std::memcpy(ids.data(), rep.text.data(), ids.size() * sizeof(uint16_t));
    return ids;
}

int client::shutdown_broker() noexcept {
    proto::request r = req(proto::op::shutdown, 0, 0, 0, 0);
    std::memcpy(r.token, _token, sizeof r.token);
    reply rep;
    return call(&r, sizeof r, rep);
}

} // namespace zc::hv::emu
